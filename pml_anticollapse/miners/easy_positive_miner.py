"""``EasyPositiveMiner``: Easy Positive Sampling (Levi et al., ICCV 2021) as a PML miner."""

from __future__ import annotations

import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.miners import BaseMiner

from .._pml2.stats import declare_stats
from ..functional._checks import (
    check_choice,
    check_embeddings,
    check_finite_if,
    check_labels,
    check_nonnegative,
    check_optional_flag,
    check_positive,
    check_ref,
    rescale_rows,
    resolve_check,
)
from ..functional.easy_positive import (
    NEG_STRATEGIES,
    SEMIHARD_FALLBACKS,
    EasyPositiveTriplets,
    distance_weighted_log_weights,
    easy_positive_triplets,
)

__all__ = ["EasyPositiveMiner", "distance_weighted_log_weights"]

#: float16 and bfloat16 rows are mined in float32 (indices only: no gradient to keep), since
#: PML's distances run ``torch.cdist`` / matmuls that have no CPU kernel for them
_LOW_PRECISION = (torch.float16, torch.bfloat16)


class EasyPositiveMiner(BaseMiner):
    """Mines triplets (anchor, easiest positive, negative) for margin-based losses.

    Each anchor's positive is its nearest same-class sample (Easy Positive Sampling), so a class
    may keep several modes instead of collapsing onto one point. Same-class samples at
    distance ≤ ``min_pos_distance`` from the anchor — exact or near duplicates, and the anchor's
    own copy when ``ref_emb`` is a memory that holds the batch (``CrossBatchMemory``) — are not
    eligible; the anchor itself is excluded when the reference set is the batch.

    Negatives by ``neg_strategy``:

    - ``"hard"``: the nearest other-class sample.
    - ``"semihard"``: the nearest other-class sample farther than the chosen positive
      (d_an > d_ap; FaceNet's semi-hard rule as the TF/PML miners implement it). When no
      negative is farther, ``semihard_fallback="hard"`` takes the hardest negative (counted in
      ``num_negative_fallbacks``); ``"skip"`` drops the anchor (counted in ``num_skipped_anchors``).
    - ``"distance_weighted"``: one negative drawn with probability ∝ 1/q(max(d, cutoff)) among
      those with d < ``nonzero_loss_cutoff`` (Wu et al. 2017; see
      :func:`~pml_anticollapse.functional.distance_weighted_log_weights`); uniform over all
      negatives when none is that close (a fallback, counted in ``num_negative_fallbacks``). Needs
      ``LpDistance(p=2, power=1, normalize_embeddings=True)``; draws use ``generator`` (or the
      global RNG), so a fixed seed reproduces them.
    - ``"all"``: every negative, i.e. one triplet per (anchor, negative).

    Anchors with no eligible positive or no negative are skipped and counted. The output
    (anchors, positives, negatives) indexes ``embeddings`` and ``ref_emb`` (default the batch), as
    PML's ``TripletMarginLoss``, ``MarginLoss`` and ``CrossBatchMemory`` expect.

    Args:
        neg_strategy: ``"semihard"``, ``"hard"``, ``"distance_weighted"`` or ``"all"``.
        min_pos_distance: ≥ 0, in the distance's units; the default 0.01 (cosine similarity
            0.99995 on the unit sphere) sits above the ~1e-3 error of float32 ``torch.cdist``
            between identical rows. For a similarity (``distance.is_inverted``, rows assumed
            L2-normalised) the guard applies to the chordal distance √(2 − 2s).
        semihard_fallback: ``"hard"`` or ``"skip"``.
        cutoff, nonzero_loss_cutoff: distance-weighted sampling's clip and range,
            0 < cutoff < nonzero_loss_cutoff (defaults 0.5 and 1.4 as in Wu et al.).
        generator: a ``torch.Generator`` for the distance-weighted draws, or None.
        check: raise on NaN/inf in the embeddings or ``ref_emb``, and on distances that
            overflow. ``None`` (default): on CPU only, where it is free; on CUDA it costs a host
            sync per call, so there it runs only with ``check=True``.
        **kwargs: passed to ``BaseMiner`` (``distance``, ``collect_stats`` …).

    Statistics (always set, as tensors): ``num_skipped_anchors``,
    ``num_anchors_without_positive``, ``num_anchors_without_negative``,
    ``num_duplicate_positives`` (anchors whose nearest same-class sample was a duplicate; when
    ``ref_emb`` holds the batch, as in ``CrossBatchMemory``, the anchor's own copy is such a
    sample — numerically it cannot be told from an exact duplicate — so every anchor counts),
    ``num_negative_fallbacks``; PML's ``num_triplets``.

    With a distance that normalises the rows (the default), each row is first divided by a
    power of two near its largest entry (no effect on the directions), so rows of 1e30 or 1e-30
    are mined like rows of 1 instead of overflowing to zero vectors.

    Raises:
        ValueError / TypeError: bad arguments or input, naming the argument; ``ref_emb`` of
            another dtype or device than the embeddings.

    Reference: Levi, Xiao, Wang, Darrell, "Rethinking preventing class-collapsing in metric
    learning with margin-based losses", ICCV 2021, arXiv 2006.05162; Wu, Manmatha, Smola,
    Krähenbühl, "Sampling Matters in Deep Embedding Learning", ICCV 2017, arXiv 1706.07567.

    Example:
        >>> import torch
        >>> from pml_anticollapse import EasyPositiveMiner
        >>> z = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
        >>> anchors, positives, negatives = EasyPositiveMiner(neg_strategy="hard")(
        ...     z, torch.tensor([0, 0, 0, 1]))
        >>> positives.tolist()  # each anchor's nearest same-class row, not its farthest
        [1, 0, 1]
    """

    def __init__(
        self,
        neg_strategy: str = "semihard",
        min_pos_distance: float = 1e-2,
        semihard_fallback: str = "hard",
        cutoff: float = 0.5,
        nonzero_loss_cutoff: float = 1.4,
        generator: torch.Generator | None = None,
        check: bool | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.check = check_optional_flag(check, "check")
        self.neg_strategy = check_choice(neg_strategy, "neg_strategy", NEG_STRATEGIES)
        self.min_pos_distance = check_nonnegative(min_pos_distance, "min_pos_distance")
        self.semihard_fallback = check_choice(
            semihard_fallback, "semihard_fallback", SEMIHARD_FALLBACKS
        )
        self.cutoff = check_positive(cutoff, "cutoff")
        self.nonzero_loss_cutoff = check_positive(nonzero_loss_cutoff, "nonzero_loss_cutoff")
        if self.nonzero_loss_cutoff <= self.cutoff:
            raise ValueError(
                f"nonzero_loss_cutoff must be greater than cutoff ({self.cutoff}), "
                f"got {self.nonzero_loss_cutoff}"
            )
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator or None, got {type(generator).__name__}"
            )
        self.generator = generator
        if self.neg_strategy == "distance_weighted":
            dist = self.distance
            if not (
                isinstance(dist, LpDistance)
                and dist.p == 2
                and dist.power == 1
                and dist.normalize_embeddings
            ):
                raise ValueError(
                    "neg_strategy='distance_weighted' needs distance=LpDistance(p=2, power=1, "
                    f"normalize_embeddings=True), got {type(dist).__name__}"
                )
        declare_stats(
            self,
            "num_skipped_anchors",
            "num_anchors_without_positive",
            "num_anchors_without_negative",
            "num_duplicate_positives",
            "num_negative_fallbacks",
        )

    def forward(self, embeddings, labels, ref_emb=None, ref_labels=None):
        check_embeddings(embeddings, allow_empty=True)
        check_labels(labels, embeddings.shape[0])
        check_ref(ref_emb, ref_labels, embeddings, same_dtype=True, allow_empty=True)
        check_finite_if(self.check, (embeddings, "embeddings"), (ref_emb, "ref_emb"))
        self_ref = ref_emb is None or ref_emb is embeddings
        if embeddings.dtype in _LOW_PRECISION:  # mined in float32: see _LOW_PRECISION
            embeddings = embeddings.detach().float()
            ref_emb = None if ref_emb is None else (
                embeddings if self_ref else ref_emb.detach().float()
            )
        if getattr(self.distance, "normalize_embeddings", False):
            # the distance normalises the rows: scaling a row first changes nothing but keeps
            # its square in range (float32 rows of 1e30 would otherwise become zero vectors)
            with torch.no_grad():
                embeddings = rescale_rows(embeddings)
                ref_emb = None if ref_emb is None else (
                    embeddings if self_ref else rescale_rows(ref_emb)
                )
        return super().forward(embeddings, labels, ref_emb, ref_labels)

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        self_ref = ref_emb is embeddings
        if embeddings.shape[0] and ref_emb.shape[0]:
            mat = self.distance(embeddings, ref_emb)
            if resolve_check(self.check, mat) and not bool(torch.isfinite(mat).all()):
                raise ValueError(
                    f"the distances between embeddings and ref_emb must be finite, got NaN or inf "
                    f"from {type(self.distance).__name__}(normalize_embeddings="
                    f"{getattr(self.distance, 'normalize_embeddings', None)}): the embeddings are "
                    f"too large to square; rescale them or use a distance that normalises them"
                )
        else:
            mat = embeddings.new_zeros(embeddings.shape[0], ref_emb.shape[0])
        out = easy_positive_triplets(
            embeddings,
            labels,
            None if self_ref else ref_emb,
            None if self_ref else ref_labels,
            neg_strategy=self.neg_strategy,
            min_pos_distance=self.min_pos_distance,
            semihard_fallback=self.semihard_fallback,
            cutoff=self.cutoff,
            nonzero_loss_cutoff=self.nonzero_loss_cutoff,
            generator=self.generator,
            distances=mat,
            similarity=self.distance.is_inverted,
            check=False,  # checked above, with a message that names the distance
        )
        self._set_counts(out)
        return out.anchors, out.positives, out.negatives

    def _set_counts(self, out: EasyPositiveTriplets) -> None:
        self.num_anchors_without_positive = (~out.has_positive).sum()
        self.num_anchors_without_negative = (~out.has_negative).sum()
        self.num_skipped_anchors = (~out.kept).sum()
        self.num_duplicate_positives = out.duplicate_positive.sum()
        self.num_negative_fallbacks = out.negative_fallback.sum()
