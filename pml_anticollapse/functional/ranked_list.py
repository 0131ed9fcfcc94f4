"""Ranked List Loss (Wang et al., CVPR 2019), per query, written from the paper."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ._checks import (
    check_embeddings,
    check_finite,
    check_flag,
    check_labels,
    check_nonnegative,
    check_positive,
    check_ref,
    global_scale,
    rescale_rows,
)

__all__ = ["RankedListParts", "ranked_list_loss", "ranked_list_loss_parts"]

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
    # T·(v − max v) rather than T·v − max(T·v): the same number, but it stays ≤ 0 and never
    # inf − inf for a huge temperature (T·v may overflow, T·(v − max) at worst underflows)
    top = values.masked_fill(~mask, -math.inf).amax(dim=1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top)).detach()
    shifted = torch.where(mask, (values - top) * temperature, 0.0)
    w = torch.where(mask, torch.exp(shifted), 0.0)
    w = w / w.sum(1, keepdim=True).clamp_min(1.0)
    if detach_weights:
        w = w.detach()
    return (w * torch.where(mask, values, 0.0)).sum(1)  # 0·(−inf) outside the mask is no NaN


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
    check: bool = True,
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
        check: raise ``ValueError`` on NaN/inf in ``embeddings`` or ``ref_emb`` (one host sync
            on CUDA). Without it a NaN row drops out of the masks and the loss looks finite.

    Returns:
        (batch_size,) tensor, dtype float64 for float64 input and float32 otherwise. Distances
        are computed in float64 with autocast off and the weights max-subtracted, so float16
        input with T_n = 10 and above stays finite.

    Raises:
        TypeError: a non-tensor, non-float embeddings, non-integer labels, a flag that is not a
            bool, a hyper-parameter that is not a number.
        ValueError: bad shapes, labels or hyper-parameters, NaN/inf input, ``ref_emb`` on
            another device (the message names the argument).

    Convention: λ weights L_N against an unweighted L_P (the paper's L_P + λ·L_N).
    PML's ``RankedListLoss(imbalance=λ')`` computes (1 − λ')·L_P + λ'·L_N, i.e.
    (1 − λ')·(L_P + λ·L_N) with λ = λ'/(1 − λ'): ``imbalance=0.5`` is λ = 1 at half the scale.
    Distances below 1e-6·√(‖x_i‖² + ‖x_j‖²) are read as exactly 0 (float64 rounding noise).
    Rows are divided by a power of two near their largest entry before they are normalised (and
    all rows by one such number when ``normalize=False``, the distances multiplied back), so
    rows of 1e-30 or 1e30 give the same loss as rows of 1.

    Reference: Wang, Hua, Kodirov, Robertson, "Ranked List Loss for Deep Metric Learning",
    CVPR 2019, arXiv 1903.03238; T_p from the TPAMI 2021 extension. Departs from PML 2.9's
    ``RankedListLoss``, which drops selected pairs at distance exactly 0, overflows in float16,
    adds 1e-5 to each weight in the denominator and differentiates through the weights.

    Example:
        >>> import torch
        >>> from pml_anticollapse.functional import ranked_list_loss
        >>> z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]])  # rows 0, 1 coincide
        >>> ranked_list_loss(z, torch.tensor([0, 0, 1]), margin=0.4)  # α = 1.2, d_02 = √0.8
        tensor([0.3056, 0.3056, 0.3056])
    """
    return ranked_list_loss_parts(
        embeddings, labels, ref_emb, ref_labels, margin=margin, alpha=alpha, Tn=Tn, Tp=Tp,
        lam=lam, normalize=normalize, detach_weights=detach_weights,
        query_grad_only=query_grad_only, check=check,
    ).losses


class RankedListParts(NamedTuple):
    """:func:`ranked_list_loss_parts`: the per-query losses and the pair sets they were taken on.

    Example:
        >>> import torch
        >>> from pml_anticollapse.functional import ranked_list_loss_parts
        >>> parts = ranked_list_loss_parts(torch.eye(4), torch.tensor([0, 0, 1, 1]))
        >>> parts.losses.shape, parts.positives.shape  # one loss per query; (query, reference)
        (torch.Size([4]), torch.Size([4, 4]))
        >>> parts.positives[0].tolist()  # query 0's positive: row 1 (itself excluded)
        [False, True, False, False]
    """

    losses: torch.Tensor
    positives: torch.Tensor
    negatives: torch.Tensor


def ranked_list_loss_parts(
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
    check: bool = True,
) -> RankedListParts:
    """:func:`ranked_list_loss` together with the pair sets P* and N* it averaged over.

    Arguments, checks and numerics are those of :func:`ranked_list_loss` (which returns
    ``ranked_list_loss_parts(...).losses``).

    Returns:
        ``RankedListParts(losses, positives, negatives)``: the (batch_size,) per-query losses,
        and two (batch_size, n_ref) bool masks, ``positives[i, j]`` when j ∈ P*_i (a violating
        positive: same class, j ≠ i, d_ij > α − m) and ``negatives[i, j]`` when j ∈ N*_i (a
        violating negative: other class, d_ij < α). ``RankedListLoss`` records their sums as
        ``num_positive_pairs`` and ``num_negative_pairs``.

    Example:
        >>> z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]])
        >>> parts = ranked_list_loss_parts(z, torch.tensor([0, 0, 1]), margin=0.4)
        >>> parts.positives.sum().item(), parts.negatives.sum().item()  # d_01 = 0 ≤ α − m
        (0, 4)
    """
    check_embeddings(embeddings)
    check_labels(labels, embeddings.shape[0])
    normalize = check_flag(normalize, "normalize")
    detach_weights = check_flag(detach_weights, "detach_weights")
    query_grad_only = check_flag(query_grad_only, "query_grad_only")
    check = check_flag(check, "check")
    margin = check_positive(margin, "margin")
    alpha = 1.0 + margin / 2.0 if alpha is None else check_positive(alpha, "alpha")
    if alpha <= margin:
        raise ValueError(f"alpha must be greater than margin ({margin}), got {alpha}")
    Tn = check_nonnegative(Tn, "Tn")
    Tp = check_nonnegative(Tp, "Tp")
    lam = check_nonnegative(lam, "lam")
    check_ref(ref_emb, ref_labels, embeddings)
    self_ref = ref_emb is None  # then ref_labels is None too (check_ref)
    ref_x: torch.Tensor = embeddings if ref_emb is None else ref_emb
    ref_y: torch.Tensor = labels if ref_labels is None else ref_labels
    if check:
        check_finite(embeddings)
        if not self_ref:
            check_finite(ref_x, "ref_emb")
    out_dtype = torch.float64 if embeddings.dtype == torch.float64 else torch.float32
    with torch.autocast(embeddings.device.type, enabled=False):
        x = embeddings.to(torch.float64)
        y = x if self_ref else ref_x.to(dtype=torch.float64)
        if normalize:
            x = torch.nn.functional.normalize(rescale_rows(x), dim=1)
            y = x if self_ref else torch.nn.functional.normalize(rescale_rows(y), dim=1)
            d = _safe_distances(x, y.detach() if query_grad_only else y)
        else:  # distances are homogeneous: d(x/s, y/s)·s, with no square out of range
            s = global_scale(x) if self_ref else global_scale(x, y)
            x = x / s
            y = x if self_ref else y / s
            d = s * _safe_distances(x, y.detach() if query_grad_only else y)
            if check and not bool(torch.isfinite(d).all()):
                raise ValueError(
                    "the distances between embeddings and ref_emb must be finite in float64, got "
                    f"an overflow (largest |entry| {float(s):g} or more): rescale the embeddings "
                    "or use normalize=True"
                )

        labels = labels.to(x.device)
        ref_labels = ref_y.to(x.device)
        same = labels.unsqueeze(1) == ref_labels.unsqueeze(0)
        if self_ref:
            same = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        other = labels.unsqueeze(1) != ref_labels.unsqueeze(0)
        pos_boundary = alpha - margin
        positives = same & (d > pos_boundary)
        negatives = other & (d < alpha)
        loss_p = _masked_weighted_mean(d - pos_boundary, positives, Tp, detach_weights)
        loss_n = _masked_weighted_mean(alpha - d, negatives, Tn, detach_weights)
        loss = (loss_p + lam * loss_n).to(out_dtype)
        if check and not normalize and not bool(torch.isfinite(loss).all()):
            raise ValueError(
                f"embeddings too large for {out_dtype}: the loss overflows it (unnormalised "
                f"distances up to {float(d.detach().max()):g}); rescale the embeddings, pass "
                "float64 or use normalize=True"
            )
        return RankedListParts(loss, positives, negatives)
