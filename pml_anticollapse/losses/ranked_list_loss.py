"""``RankedListLoss``: the Ranked List Loss of Wang et al. (CVPR 2019), written from the paper."""

from __future__ import annotations

import math

import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.utils import common_functions as c_f

from ..functional._checks import check_embeddings, check_labels, check_nonnegative, check_positive

# squared distances at or below this fraction of ‖x‖² + ‖y‖² are read as 0 (distances below
# ~1e-6 of the rows' norm, on the unit sphere 1.4e-6): the float64 Gram product's rounding error
# (~1e-16 relative) lies well below it, and the distance and its gradient are then exactly 0
# instead of sqrt's infinite slope on rounding noise
_SQ_FLOOR = 1e-12


def _safe_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of x and y in float64, finite gradient everywhere.

    ‖x‖² + ‖y‖² − 2·x·y in float64 resolves distances down to ~1e-6 of the rows' norm
    (float32's Gram product cannot tell rows 1e-4 apart: ``torch.cdist`` returns zeros or
    ~1e-3 noise for them); the double ``where`` gives distance 0 *and* gradient 0 at coinciding
    rows instead of NaN.
    """
    norms = (x * x).sum(1, keepdim=True) + (y * y).sum(1).unsqueeze(0)
    sq = norms - 2.0 * x @ y.T
    positive = sq > _SQ_FLOOR * norms.detach()
    return torch.where(positive, torch.sqrt(torch.where(positive, sq, 1.0)), 0.0)


def _masked_weighted_mean(
    values: torch.Tensor, mask: torch.Tensor, temperature: float, detach_weights: bool
) -> torch.Tensor:
    """Per row, Σ_{mask} w·v / Σ_{mask} w with w = exp(T·v); 0 for an empty row, graph kept.

    The weights are a softmax over the masked entries, max-subtracted, so they never overflow
    (exp(T·v − max) ≤ 1); the denominator is ≥ 1 on a non-empty row, so clamping it at 1 only
    touches empty rows, where the numerator is exactly 0.
    """
    logits = (temperature * values).masked_fill(~mask, -math.inf)
    top = logits.amax(dim=1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top)).detach()
    w = torch.where(mask, torch.exp(torch.where(mask, logits - top, 0.0)), 0.0)
    w = w / w.sum(1, keepdim=True).clamp_min(1.0)
    if detach_weights:
        w = w.detach()
    return (w * values).sum(1)


def ranked_list_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    margin: float = 0.4,
    alpha: float | None = None,
    Tn: float = 10.0,
    Tp: float = 0.0,
    lam: float = 1.0,
    normalize: bool = True,
    detach_weights: bool = True,
    query_grad_only: bool = False,
) -> torch.Tensor:
    """Per-query Ranked List Loss L(i) = L_P(i) + λ·L_N(i) (minimised), shape (batch_size,).

    Formula (d_ij the Euclidean distance of the L2-normalised rows, α the negative boundary,
    m the margin, so α − m is the positive boundary)::

        P*_i = {j ≠ i : y_j = y_i, d_ij > α − m}      N*_i = {j : y_j ≠ y_i, d_ij < α}
        L_P(i) = Σ_{P*_i} w⁺_ij·(d_ij − (α − m)) / Σ_{P*_i} w⁺_ij
        L_N(i) = Σ_{N*_i} w⁻_ij·(α − d_ij) / Σ_{N*_i} w⁻_ij
        w⁺_ij = exp(T_p·(d_ij − (α − m))),   w⁻_ij = exp(T_n·(α − d_ij))

    T_p = 0 (CVPR) makes L_P the plain mean; T_p > 0 is the TPAMI positive weighting. An empty set
    contributes 0 (with the graph kept). Membership is decided by masks on labels and the
    boundaries, never by testing a distance against 0, so pairs at distance 0 count.

    Args:
        embeddings: (batch_size, dim) queries.
        labels: (batch_size,) integer labels.
        ref_emb, ref_labels: (n_ref, dim) and (n_ref,) gallery; default the batch itself, in
            which case j = i is excluded.
        margin: m > 0.
        alpha: α > m; default 1 + m/2 ("RLL-Simpler").
        Tn, Tp: temperatures T_n, T_p ≥ 0.
        lam: λ ≥ 0, the weight of L_N.
        normalize: L2-normalise the rows before taking distances (the paper does).
        detach_weights: treat w⁺, w⁻ as constants in the backward pass (the official code's
            gradient); the value does not change.
        query_grad_only: let the gradient flow only through the query side of each distance
            (the official code updates only the query); the value does not change.

    Returns:
        (batch_size,) tensor, dtype float64 for float64 input and float32 otherwise. Distances
        are computed in float64 with autocast off and the weights max-subtracted, so float16
        input with T_n = 10 and above stays finite.

    Raises:
        ValueError: bad shapes, labels or hyper-parameters (the message names the argument).

    Convention: λ weights L_N against an unweighted L_P (the paper's L_P + λ·L_N).
    PML's ``RankedListLoss(imbalance=λ')`` computes (1 − λ')·L_P + λ'·L_N, i.e.
    (1 − λ')·(L_P + λ·L_N) with λ = λ'/(1 − λ'): ``imbalance=0.5`` is λ = 1 at half the scale.
    Distances below 1e-6·√(‖x_i‖² + ‖x_j‖²) are read as exactly 0 (float64 rounding noise).

    Reference: Wang, Hua, Kodirov, Robertson, "Ranked List Loss for Deep Metric Learning",
    CVPR 2019, arXiv 1903.03238; T_p from the TPAMI 2021 extension. Departs from PML 2.9's
    ``RankedListLoss``, which drops selected pairs at distance exactly 0, overflows in float16,
    adds 1e-5 to each weight in the denominator and differentiates through the weights.

    >>> z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]])  # rows 0, 1 coincide
    >>> ranked_list_loss(z, torch.tensor([0, 0, 1]), margin=0.4)  # α = 1.2, d_02 = √0.8
    tensor([0.3056, 0.3056, 0.3056])
    """
    return _ranked_list_loss_parts(
        embeddings, labels, ref_emb, ref_labels, margin=margin, alpha=alpha, Tn=Tn, Tp=Tp,
        lam=lam, normalize=normalize, detach_weights=detach_weights,
        query_grad_only=query_grad_only,
    )[0]


def _ranked_list_loss_parts(
    embeddings, labels, ref_emb, ref_labels, *, margin, alpha, Tn, Tp, lam, normalize,
    detach_weights, query_grad_only,
):
    """:func:`ranked_list_loss` plus the masks of P* and N* (for the class's statistics)."""
    check_embeddings(embeddings)
    check_labels(labels, embeddings.shape[0])
    margin = check_positive(margin, "margin")
    alpha = 1.0 + margin / 2.0 if alpha is None else check_positive(alpha, "alpha")
    if alpha <= margin:
        raise ValueError(f"alpha must be greater than margin ({margin}), got {alpha}")
    Tn = check_nonnegative(Tn, "Tn")
    Tp = check_nonnegative(Tp, "Tp")
    lam = check_nonnegative(lam, "lam")
    self_ref = ref_emb is None
    if self_ref:
        if ref_labels is not None:
            raise ValueError("ref_labels were given without ref_emb")
        ref_emb, ref_labels = embeddings, labels
    else:
        check_embeddings(ref_emb, "ref_emb")
        check_labels(ref_labels, ref_emb.shape[0], name="ref_labels")
        if ref_emb.shape[1] != embeddings.shape[1]:
            raise ValueError(
                f"ref_emb must have dim {embeddings.shape[1]} like the embeddings, "
                f"got {ref_emb.shape[1]}"
            )
    out_dtype = torch.float64 if embeddings.dtype == torch.float64 else torch.float32
    with torch.autocast(embeddings.device.type, enabled=False):
        x = embeddings.to(torch.float64)
        y = x if self_ref else ref_emb.to(device=x.device, dtype=torch.float64)
        if normalize:
            x = torch.nn.functional.normalize(x, dim=1)
            y = x if self_ref else torch.nn.functional.normalize(y, dim=1)
        d = _safe_distances(x, y.detach() if query_grad_only else y)

        labels = labels.to(x.device)
        ref_labels = ref_labels.to(x.device)
        same = labels.unsqueeze(1) == ref_labels.unsqueeze(0)
        if self_ref:
            same = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        other = labels.unsqueeze(1) != ref_labels.unsqueeze(0)
        pos_boundary = alpha - margin
        positives = same & (d > pos_boundary)
        negatives = other & (d < alpha)
        loss_p = _masked_weighted_mean(d - pos_boundary, positives, Tp, detach_weights)
        loss_n = _masked_weighted_mean(alpha - d, negatives, Tn, detach_weights)
        return (loss_p + lam * loss_n).to(out_dtype), positives, negatives


class RankedListLoss(BaseMetricLossFunction):
    """Minimises the Ranked List Loss L_P + λ·L_N, averaged over the queries of the batch.

    The math is :func:`ranked_list_loss`; see it for the formula, the T_p option and the
    mapping from PML's ``imbalance`` (λ = imbalance / (1 − imbalance), at scale 1 − imbalance).
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
    ``ref_emb`` is supported (queries against a gallery, e.g. ``DistributedLossWrapper(...,
    efficient=True)``); ``indices_tuple`` is not, so the loss does not go inside
    ``CrossBatchMemory``, which always passes one (PML's own ``RankedListLoss`` is not on its
    list either).

    Args:
        margin, Tn, alpha, Tp, lam, detach_weights, query_grad_only: see :func:`ranked_list_loss`.
        **kwargs: passed to ``BaseMetricLossFunction`` (``distance``, ``reducer``,
            ``collect_stats``, ``embedding_regularizer`` …).

    Statistics (``collect_stats=True``): ``num_positive_pairs`` (|P*| summed over queries) and
    ``num_negative_pairs`` (|N*|).

    Reference: Wang et al., CVPR 2019, arXiv 1903.03238.
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
        self.detach_weights = bool(detach_weights)
        self.query_grad_only = bool(query_grad_only)
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
        self.add_to_recordable_attributes(
            list_of_names=["margin", "alpha", "Tn", "Tp", "lam"], is_stat=False
        )
        self.add_to_recordable_attributes(
            list_of_names=["num_positive_pairs", "num_negative_pairs"], is_stat=True
        )

    def get_default_distance(self):
        return LpDistance(p=2, power=1, normalize_embeddings=True)

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        check_embeddings(embeddings)
        check_labels(labels, embeddings.shape[0])
        return super().forward(embeddings, labels, indices_tuple, ref_emb, ref_labels)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.indices_tuple_not_supported(indices_tuple)
        if ref_emb is embeddings and ref_labels is labels:
            ref_emb = ref_labels = None
        losses, positives, negatives = _ranked_list_loss_parts(
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
        )
        if self.collect_stats:
            self.num_positive_pairs = positives.sum().detach()
            self.num_negative_pairs = negatives.sum().detach()
        return {
            "loss": {
                "losses": losses,
                "indices": c_f.torch_arange_from_size(losses),
                "reduction_type": "element",
            }
        }
