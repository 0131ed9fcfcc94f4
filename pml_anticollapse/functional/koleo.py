"""The KoLeo spread: mean log distance to the nearest neighbour (Sablayrolles et al.,
arXiv 1806.03198)."""

from __future__ import annotations

import math

import torch

from ._checks import check_positive
from .uniformity import pairwise_sq_distances, spread_rows

__all__ = ["mean_log_nn_distance"]

#: The smallest ε: far above float32's smallest subnormal (1.4e-45), so ρ + ε never rounds to 0.
EPS_MIN = 1e-30


def check_eps(eps: object) -> float:
    """ε of the KoLeo spread: a finite number >= ``EPS_MIN``, returned as a float."""
    eps = check_positive(eps, "eps")
    if eps < EPS_MIN:
        raise ValueError(
            f"eps must be >= {EPS_MIN:g} so that it stays non-zero in float32, got {eps:g}"
        )
    return eps


def _safe_sqrt(s: torch.Tensor) -> torch.Tensor:
    """√s with a zero gradient at s = 0 (plain ``sqrt`` has an infinite one, and 0·∞ = NaN).

    The double ``where`` keeps the value exact everywhere; at s = 0 it picks the minimum-norm
    subgradient of the distance ‖v‖ at v = 0, which is 0 (as ``torch.linalg.vector_norm``'s
    backward does).
    """
    zero = s == 0  # not ``s > 0``: a NaN must stay NaN, not become a distance of 0
    return torch.where(zero, 0.0, torch.where(zero, 1.0, s).sqrt())


def mean_log_nn_distance(
    z: torch.Tensor,
    eps: float = 1e-8,
    *,
    normalize: bool = True,
    check: bool = True,
) -> torch.Tensor:
    """KoLeo spread of the rows of ``z``: S(Z) = (1/n)·Σ_i log(ρ_i + ε), ρ_i the nearest distance.

    Plain-text formula, with z_1..z_n the rows of ``z`` (L2-normalised when ``normalize``):

        ρ_i  = min_{j ≠ i} ‖z_i − z_j‖          (distance to the nearest other row)
        S(Z) = (1/n) · Σ_i log(ρ_i + ε)

    Up to the factor d and an additive constant, S is the Kozachenko–Leonenko estimate of the
    differential entropy of the rows: higher means more spread out. ``KoLeoRegularizer``
    minimises its negative, the KoLeo loss L_koleo = −S of the paper (and of DINOv2).

    Numerics: the nearest neighbour is found on the Gram-form squared distances (no gradient),
    then ρ_i is computed from the explicit difference z_i − z_nn(i), which is exact also for
    close neighbours, through a square root whose gradient at 0 is 0 (see *Convention*). The
    (n, n) distance matrix is the memory cost. Under fp16/bf16 autocast, autocast is switched
    off and the computation runs in float32.

    Args:
        z: (n, d) embeddings, any floating dtype.
        eps: ε ≥ 1e-30 added to each distance inside the log, so a duplicated row gives the finite
            value log ε (and a gradient bounded by 1/ε) instead of −∞. DINOv2 uses 1e-8.
        normalize: L2-normalise the rows first, as the paper and DINOv2 do. Without it, S grows
            without bound as the rows are scaled up.
        check: raise ``ValueError`` on NaN/inf in ``z`` (one host sync on CUDA).

    Returns:
        Scalar tensor, float64 for float64 input and float32 otherwise. A batch of one row has
        no neighbour: the result is a zero that stays on the autograd graph.

    Raises:
        TypeError: ``z`` is not a floating-point tensor; ``eps`` is not a number; ``normalize``
            or ``check`` is not a bool.
        ValueError: ``z`` is not 2-D or is empty; ε < 1e-30 or not finite; NaN/inf in ``z``.

    Convention:
        Sign: S = −L_koleo. ε sits inside the log, log(ρ + ε), as in DINOv2's ``KoLeoLoss``
        (which also adds 1e-8 to the difference inside the norm; we do not). Where rows coincide
        (ρ_i = 0) the distance has no gradient, and we use its minimum-norm subgradient, 0: such
        a pair is not pushed apart by its own terms (it is by the terms of rows that have one of
        them as nearest neighbour). Ties between nearest neighbours are broken by index.
        Natural logarithm; Euclidean (not squared) distances.

    Reference:
        Sablayrolles, Douze, Schmid & Jégou, "Spreading vectors for similarity search", ICLR
        2019, arXiv 1806.03198 (the KoLeo regulariser L_koleo); Oquab et al., "DINOv2: Learning
        Robust Visual Features without Supervision", arXiv 2304.07193 (2023) (its use in
        self-supervised training, with ε = 1e-8).

    Example:
        >>> z = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # antipodal: each neighbour at distance 2
        >>> round(mean_log_nn_distance(z).item(), 6)  # log(2 + 1e-8)
        0.693147
    """
    eps = check_eps(eps)
    x = spread_rows(z, normalize, check)
    if x.shape[0] < 2:
        return x.sum() * 0.0  # no neighbour: zero, on the graph
    with torch.no_grad():
        sq = pairwise_sq_distances(x).fill_diagonal_(math.inf)
        nearest = sq.argmin(dim=1)  # the first minimum: ties broken by index
    rho = _safe_sqrt((x - x[nearest]).square().sum(-1))
    return torch.log(rho + eps).mean()
