"""``RankedListLoss``: the Ranked List Loss of Wang et al. (CVPR 2019), written from the paper."""

from __future__ import annotations

from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.utils import common_functions as c_f

from .. import distributed as D
from .._pml2.stats import declare_attributes, declare_stats, record_stats
from ..functional._checks import (
    check_embeddings,
    check_finite_if,
    check_flag,
    check_labels,
    check_no_indices_tuple,
    check_nonnegative,
    check_optional_flag,
    check_positive,
    check_ref,
    resolve_check,
)
from ..functional.ranked_list import ranked_list_loss_parts


class RankedListLoss(BaseMetricLossFunction):
    """Minimises the Ranked List Loss L_P + λ·L_N, averaged over the queries of the batch.

    The math is :func:`~pml_anticollapse.functional.ranked_list_loss` (with the pair sets from
    :func:`~pml_anticollapse.functional.ranked_list_loss_parts`); see it for the formula, the T_p
    option and the mapping from PML's ``imbalance`` (λ = imbalance / (1 − imbalance), at scale
    1 − imbalance).
    Defaults reproduce "RLL-Simpler": α = 1 + m/2, here with the paper's SOP setting m = 0.4,
    T_n = 10 (so α = 1.2), λ = 1, T_p = 0.

    Distances are Euclidean between L2-normalised embeddings as in the paper; the ``distance``
    must be an ``LpDistance(p=2, power=1)`` (its ``normalize_embeddings`` decides the
    normalisation) and is evaluated by the loss itself, stably (see the function). A similarity
    (``distance.is_inverted``, e.g. ``CosineSimilarity``) is rejected: the boundaries α and α − m
    are distances.

    ``detach_weights=True`` (default) follows the official code, whose weights are constants in
    the backward pass; ``False`` differentiates through them as PML does. The per-query losses
    are returned with ``reduction_type="element"``, so PML reducers apply (default: mean).
    ``ref_emb`` is supported (queries against a gallery). Under
    ``DistributedLossWrapper(..., efficient=True)`` each rank ranks its own queries against the
    gathered batch (PML's efficient semantics: gradients through this rank's rows only); the
    all-pairs ``indices_tuple`` that wrapper always builds is not needed and not used, and so
    neither is one handed to the wrapper. Otherwise ``indices_tuple`` is refused, so the loss
    does not go inside ``CrossBatchMemory``, which always passes one (PML's own
    ``RankedListLoss`` is not on its list either: ``CrossBatchMemory`` itself refuses it).

    Args:
        margin, Tn, alpha, Tp, lam, detach_weights, query_grad_only: see :func:`ranked_list_loss`.
        check: raise on NaN/inf in the embeddings or ``ref_emb``. ``None`` (default): on CPU
            tensors only, where it is free; on CUDA it costs a host sync per call, so there it
            runs only with ``check=True`` (otherwise a NaN row silently drops out of the masks).
        **kwargs: passed to ``BaseMetricLossFunction`` (``distance``, ``reducer``,
            ``collect_stats``, ``embedding_regularizer`` …).

    Statistics (``collect_stats=True``): ``num_positive_pairs`` (|P*| summed over queries) and
    ``num_negative_pairs`` (|N*|).

    Reference: Wang et al., CVPR 2019, arXiv 1903.03238.

    Example:
        >>> import torch
        >>> from pml_anticollapse import RankedListLoss
        >>> z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]])  # rows 0, 1 coincide
        >>> round(RankedListLoss()(z, torch.tensor([0, 0, 1])).item(), 4)  # α = 1.2
        0.3056
    """

    def __init__(
        self,
        margin: float = 0.4,
        Tn: float = 10.0,
        alpha: float | None = None,
        Tp: float = 0.0,
        lam: float = 1.0,
        *,
        detach_weights: bool = True,
        query_grad_only: bool = False,
        check: bool | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.margin = check_positive(margin, "margin")
        self.alpha = 1.0 + self.margin / 2.0 if alpha is None else check_positive(alpha, "alpha")
        if self.alpha <= self.margin:
            raise ValueError(f"alpha must be greater than margin ({self.margin}), got {self.alpha}")
        self.Tn = check_nonnegative(Tn, "Tn")
        self.Tp = check_nonnegative(Tp, "Tp")
        self.lam = check_nonnegative(lam, "lam")
        self.detach_weights = check_flag(detach_weights, "detach_weights")
        self.query_grad_only = check_flag(query_grad_only, "query_grad_only")
        self.check = check_optional_flag(check, "check")
        if self.distance.is_inverted:
            raise ValueError(
                f"distance must be a distance, not a similarity (is_inverted=True), got "
                f"{type(self.distance).__name__}: the boundaries alpha and alpha - margin are "
                f"Euclidean distances; use LpDistance(p=2, power=1)"
            )
        if not (
            isinstance(self.distance, LpDistance)
            and self.distance.p == 2
            and self.distance.power == 1
        ):
            raise ValueError(
                f"distance must be LpDistance(p=2, power=1), got {type(self.distance).__name__}"
                f"(p={getattr(self.distance, 'p', None)}, "
                f"power={getattr(self.distance, 'power', None)})"
            )
        declare_attributes(self, "margin", "alpha", "Tn", "Tp", "lam")
        declare_stats(self, "num_positive_pairs", "num_negative_pairs")

    def get_default_distance(self):
        return LpDistance(p=2, power=1, normalize_embeddings=True)

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        check_embeddings(embeddings)
        check_labels(labels, embeddings.shape[0])
        check_ref(ref_emb, ref_labels, embeddings)
        check_finite_if(self.check, (embeddings, "embeddings"), (ref_emb, "ref_emb"))
        return super().forward(embeddings, labels, indices_tuple, ref_emb, ref_labels)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        if indices_tuple is not None and D.context().kind == "wrapper-efficient":
            # PML's efficient wrapper always hands an all-pairs tuple without the self pairs,
            # with the gathered batch (this rank's rows first) as ref_emb. RLL ranks every pair
            # itself, and a query's own copy (distance 0, same class) is neither a violating
            # positive nor a negative, so the tuple carries nothing: it is not used.
            indices_tuple = None
        check_no_indices_tuple(indices_tuple, type(self).__name__)
        if ref_emb is embeddings and ref_labels is labels:
            ref_emb = ref_labels = None
        losses, positives, negatives = ranked_list_loss_parts(
            embeddings,
            labels,
            ref_emb,
            ref_labels,
            margin=self.margin,
            alpha=self.alpha,
            Tn=self.Tn,
            Tp=self.Tp,
            lam=self.lam,
            normalize=self.distance.normalize_embeddings,
            detach_weights=self.detach_weights,
            query_grad_only=self.query_grad_only,
            check=resolve_check(self.check, embeddings),
        )
        record_stats(self, num_positive_pairs=positives.sum(), num_negative_pairs=negatives.sum())
        return {
            "loss": {
                "losses": losses,
                "indices": c_f.torch_arange_from_size(losses),
                "reduction_type": "element",
            }
        }
