"""Easy Positive Sampling (Levi et al., ICCV 2021): triplets of an anchor, its nearest
same-class sample and a negative, mined from a distance matrix."""

from __future__ import annotations

from typing import NamedTuple

import torch

from ._checks import (
    check_choice,
    check_embeddings,
    check_finite,
    check_flag,
    check_labels,
    check_nonnegative,
    check_positive,
    check_ref,
    rescale_rows,
)
from .coding_rate import working_dtype

__all__ = [
    "NEG_STRATEGIES",
    "SEMIHARD_FALLBACKS",
    "EasyPositiveTriplets",
    "distance_weighted_log_weights",
    "easy_positive_triplets",
]

#: The values of ``neg_strategy``.
NEG_STRATEGIES = ("semihard", "hard", "distance_weighted", "all")
#: The values of ``semihard_fallback``.
SEMIHARD_FALLBACKS = ("hard", "skip")


def distance_weighted_log_weights(
    d: torch.Tensor, dim: int, cutoff: float, nonzero_loss_cutoff: float
) -> torch.Tensor:
    """log of Wu et al.'s negative weights 1/q(d), −inf where d ≥ nonzero_loss_cutoff.

    q(d) ∝ d^(n−2)·(1 − d²/4)^((n−3)/2) is the density of the distance between two uniform
    points of the unit sphere in R^n; d is first clipped below at ``cutoff`` (which caps the
    weights, the paper's λ), so log(1/q) = (2 − n)·log d − ((n − 3)/2)·log(1 − d²/4). Computed
    in float64.

    Reference: Wu, Manmatha, Smola, Krähenbühl, "Sampling Matters in Deep Embedding Learning",
    ICCV 2017, arXiv 1706.07567.

    Example:
        >>> d = torch.tensor([0.2, 1.0, 1.5])  # 0.2 is clipped to the cutoff, 1.5 is too far
        >>> distance_weighted_log_weights(d, dim=3, cutoff=0.5, nonzero_loss_cutoff=1.4)
        tensor([0.6931, 0.0000,   -inf], dtype=torch.float64)
    """
    d64 = d.to(torch.float64)
    dc = d64.clamp(min=cutoff)
    inner = (1.0 - 0.25 * dc * dc).clamp_min(1e-12)
    logw = (2.0 - dim) * torch.log(dc) - ((dim - 3.0) / 2.0) * torch.log(inner)
    return logw.masked_fill(d64 >= nonzero_loss_cutoff, float("-inf"))


class EasyPositiveTriplets(NamedTuple):
    """:func:`easy_positive_triplets`: the triplets (indices) and, per anchor, what happened.

    Example:
        >>> import torch
        >>> from pml_anticollapse.functional import easy_positive_triplets
        >>> z = torch.tensor([[0.0, 0.0], [0.0, 1.0], [3.0, 0.0], [3.0, 1.0]])
        >>> t = easy_positive_triplets(z, torch.tensor([0, 0, 1, 1]), normalize=False)
        >>> t.anchors.tolist(), t.positives.tolist()
        ([0, 1, 2, 3], [1, 0, 3, 2])
        >>> bool(t.kept.all())
        True
    """

    #: (t,) indices into the embeddings
    anchors: torch.Tensor
    #: (t,) indices into the reference set: each anchor's easiest eligible positive
    positives: torch.Tensor
    #: (t,) indices into the reference set
    negatives: torch.Tensor
    #: (n,) bool: the anchor has an eligible positive
    has_positive: torch.Tensor
    #: (n,) bool: the anchor has a negative
    has_negative: torch.Tensor
    #: (n,) bool: the anchor gave triplets
    kept: torch.Tensor
    #: (n,) bool: the nearest same-class sample was a duplicate (≤ ``min_pos_distance``)
    duplicate_positive: torch.Tensor
    #: (n,) bool: the negative came from the fallback (semihard → hard; distance-weighted → uniform)
    negative_fallback: torch.Tensor


def _euclidean(x: torch.Tensor, y: torch.Tensor | None, normalize: bool) -> torch.Tensor:
    """Distances between the rows (L2-normalised when ``normalize``), in float32 (float64 for
    float64 input): ``torch.cdist`` has no CPU kernel for bfloat16 or float16."""
    x = x.detach().to(working_dtype(x.dtype))
    if normalize:
        x = torch.nn.functional.normalize(rescale_rows(x), dim=1)
    if y is None:
        return torch.cdist(x, x)
    y = y.detach().to(x.dtype)
    if normalize:
        y = torch.nn.functional.normalize(rescale_rows(y), dim=1)
    return torch.cdist(x, y)


def easy_positive_triplets(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    neg_strategy: str = "semihard",
    min_pos_distance: float = 1e-2,
    semihard_fallback: str = "hard",
    cutoff: float = 0.5,
    nonzero_loss_cutoff: float = 1.4,
    generator: torch.Generator | None = None,
    normalize: bool = True,
    distances: torch.Tensor | None = None,
    similarity: bool = False,
    check: bool = True,
) -> EasyPositiveTriplets:
    """Triplets (anchor, easiest positive, negative): each anchor's positive is its nearest
    same-class sample, so a class may keep several modes instead of collapsing onto one point.

    Rule (d the distance matrix, y the labels)::

        eligible(i)  = {j ≠ i : y_j = y_i, gap(d_ij) > min_pos_distance}
        positive(i)  = argmin_{j ∈ eligible(i)} d_ij
        hard(i)      = argmin_{j : y_j ≠ y_i} d_ij
        semihard(i)  = argmin_{j : y_j ≠ y_i, d_ij > d_i,positive(i)} d_ij   (else the fallback)

    ``gap`` is the distance itself, or the chordal distance √(2 − 2s) for a similarity s (rows
    assumed L2-normalised). ``"distance_weighted"`` draws one negative with probability
    ∝ exp(:func:`distance_weighted_log_weights`) among those with d < ``nonzero_loss_cutoff``
    (uniform over all negatives when none is that close: a fallback); ``"all"`` gives one
    triplet per (anchor, negative). Anchors without an eligible positive or without a negative
    give no triplet.

    Args:
        embeddings: (n, dim) anchors, any floating dtype.
        labels: (n,) integer labels.
        ref_emb, ref_labels: (n_ref, dim) and (n_ref,) reference set; default the batch
            itself, in which case j = i is never a positive.
        neg_strategy: ``"semihard"``, ``"hard"``, ``"distance_weighted"`` or ``"all"``.
        min_pos_distance: ≥ 0; same-class samples this close are duplicates, not positives.
        semihard_fallback: ``"hard"`` (the hardest negative) or ``"skip"`` (drop the anchor)
            when no negative is farther than the positive.
        cutoff, nonzero_loss_cutoff: distance-weighted sampling's clip and range,
            0 < cutoff < nonzero_loss_cutoff.
        generator: ``torch.Generator`` for the distance-weighted draws, or None.
        normalize: L2-normalise the rows before the Euclidean distances (ignored when
            ``distances`` is given).
        distances: an (n, n_ref) matrix to mine from instead of the Euclidean distances (what
            ``EasyPositiveMiner`` passes: its PML distance's matrix).
        similarity: ``distances`` holds similarities (larger = closer), as PML's
            ``CosineSimilarity`` (``is_inverted``).
        check: raise on NaN/inf in ``embeddings``, ``ref_emb`` or ``distances``.

    Returns:
        :class:`EasyPositiveTriplets`: ``anchors`` index ``embeddings``; ``positives`` and
        ``negatives`` index the reference set (int64, on the embeddings' device), plus per-anchor
        bool masks. Nothing is differentiable: these are indices.

    Raises:
        TypeError / ValueError: bad arguments or input, naming the argument; ``distances`` of the
            wrong shape; ``"distance_weighted"`` with similarities or unnormalised rows.

    Convention: distances are computed in float32 (float64 for float64 input) whatever the
    input's dtype, so bfloat16 and float16 embeddings (as autocast hands them) are mined.

    Reference: Levi, Xiao, Wang, Darrell, "Rethinking preventing class-collapsing in metric
    learning with margin-based losses", ICCV 2021, arXiv 2006.05162; the semi-hard rule as
    FaceNet's (Schroff et al., arXiv 1503.03832) TF/PML miners implement it.

    Example:
        >>> z = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
        >>> out = easy_positive_triplets(z, torch.tensor([0, 0, 0, 1]), neg_strategy="hard")
        >>> out.anchors.tolist(), out.positives.tolist(), out.negatives.tolist()
        ([0, 1, 2], [1, 0, 1], [3, 3, 3])
    """
    check_embeddings(embeddings, allow_empty=True)
    check_labels(labels, embeddings.shape[0])
    check_ref(ref_emb, ref_labels, embeddings, allow_empty=True)
    neg_strategy = check_choice(neg_strategy, "neg_strategy", NEG_STRATEGIES)
    min_pos_distance = check_nonnegative(min_pos_distance, "min_pos_distance")
    semihard_fallback = check_choice(semihard_fallback, "semihard_fallback", SEMIHARD_FALLBACKS)
    cutoff = check_positive(cutoff, "cutoff")
    nonzero_loss_cutoff = check_positive(nonzero_loss_cutoff, "nonzero_loss_cutoff")
    if nonzero_loss_cutoff <= cutoff:
        raise ValueError(
            f"nonzero_loss_cutoff must be greater than cutoff ({cutoff}), got {nonzero_loss_cutoff}"
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    normalize = check_flag(normalize, "normalize")
    similarity = check_flag(similarity, "similarity")
    check = check_flag(check, "check")
    self_ref = ref_emb is None  # then ref_labels is None too (check_ref)
    ref_lab: torch.Tensor = labels if ref_labels is None else ref_labels
    n, r = embeddings.shape[0], ref_lab.shape[0]
    if distances is None:
        if similarity:
            raise ValueError("similarity=True needs a distances matrix, got distances=None")
        if check:
            check_finite(embeddings)
            if ref_emb is not None:
                check_finite(ref_emb, "ref_emb")
    elif not isinstance(distances, torch.Tensor) or not distances.dtype.is_floating_point:
        raise TypeError(
            f"distances must be a floating-point torch.Tensor or None, got "
            f"{getattr(distances, 'dtype', type(distances).__name__)}"
        )
    elif tuple(distances.shape) != (n, r):
        raise ValueError(
            f"distances must have shape ({n}, {r}) (embeddings × reference set), "
            f"got {tuple(distances.shape)}"
        )
    elif check:
        check_finite(distances, "distances")
    if neg_strategy == "distance_weighted" and (similarity or not normalize):
        raise ValueError(
            "neg_strategy='distance_weighted' needs Euclidean distances between L2-normalised "
            f"rows, got similarity={similarity}, normalize={normalize}"
        )
    dev = embeddings.device
    if n == 0 or r == 0:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        none = torch.zeros(n, dtype=torch.bool, device=dev)
        return EasyPositiveTriplets(empty, empty, empty, none, none, none, none, none)
    mat = _euclidean(embeddings, ref_emb, normalize) if distances is None else distances.detach()
    return _mine(
        mat, labels.to(dev), ref_lab.to(dev), self_ref, similarity, embeddings.shape[1],
        neg_strategy, min_pos_distance, semihard_fallback, cutoff, nonzero_loss_cutoff, generator,
    )


def _mine(mat, labels, ref_labels, self_ref, similarity, dim, neg_strategy, min_pos_distance,
          semihard_fallback, cutoff, nonzero_loss_cutoff, generator) -> EasyPositiveTriplets:
    n, dev = mat.shape[0], mat.device
    if similarity:
        far = -mat  # larger = farther, whatever the distance
        gap = (2.0 - 2.0 * mat).clamp_min(0.0).sqrt()
    else:
        far, gap = mat, mat
    same = labels.unsqueeze(1) == ref_labels.unsqueeze(0)
    if self_ref:
        same = same & ~torch.eye(n, dtype=torch.bool, device=dev)
    other = ~(labels.unsqueeze(1) == ref_labels.unsqueeze(0))
    eligible = same & (gap > min_pos_distance)
    big = torch.finfo(far.dtype).max

    has_pos = eligible.any(1)
    pos_far, pos_idx = far.masked_fill(~eligible, big).min(1)
    nearest_same = far.masked_fill(~same, big).argmin(1)
    duplicate = same.any(1) & ~eligible.gather(1, nearest_same.unsqueeze(1)).squeeze(1)
    has_neg = other.any(1)
    fallback = torch.zeros_like(has_pos)
    keep = has_pos & has_neg

    hard_idx = far.masked_fill(~other, big).argmin(1)
    if neg_strategy == "hard":
        neg_idx = hard_idx
    elif neg_strategy == "semihard":
        semi = other & (far > pos_far.unsqueeze(1))
        has_semi = semi.any(1)
        neg_idx = torch.where(has_semi, far.masked_fill(~semi, big).argmin(1), hard_idx)
        if semihard_fallback == "hard":
            fallback = keep & ~has_semi
        else:
            keep = keep & has_semi
    elif neg_strategy == "distance_weighted":
        logw = distance_weighted_log_weights(mat, dim, cutoff, nonzero_loss_cutoff)
        logw = logw.masked_fill(~other, float("-inf"))
        has_close = torch.isfinite(logw).any(1)
        fallback = keep & ~has_close
        # uniform over the negatives when none is close; over everything for rows that are
        # skipped anyway (multinomial needs a positive row sum)
        uniform = torch.where(other, 0.0, float("-inf")).to(logw)
        logw = torch.where(has_close.unsqueeze(1), logw, uniform)
        logw = torch.where(has_neg.unsqueeze(1), logw, torch.zeros_like(logw))
        neg_idx = _sample(torch.softmax(logw, dim=1), generator)
    else:  # "all"
        a, neg = torch.where(other & keep.unsqueeze(1))
        return EasyPositiveTriplets(a, pos_idx[a], neg, has_pos, has_neg, keep, duplicate,
                                    fallback)
    a = torch.where(keep)[0]
    return EasyPositiveTriplets(a, pos_idx[a], neg_idx[a], has_pos, has_neg, keep, duplicate,
                                fallback)


def _sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One index per row of ``probs``, drawn with ``generator`` (on its device)."""
    if generator is not None and generator.device != probs.device:
        draw = torch.multinomial(probs.to(generator.device), 1, generator=generator)
        return draw.squeeze(1).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)
