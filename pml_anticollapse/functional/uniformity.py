"""Uniformity of embeddings on the hypersphere (Wang & Isola, arXiv 2005.10242)."""

from __future__ import annotations

import math

import torch

from ._checks import check_embeddings, check_finite, check_flag, check_positive, rescale_rows
from .coding_rate import working_dtype

__all__ = ["pairwise_sq_distances", "spread_rows", "uniformity"]

#: F.normalize's clamp: rows with a smaller norm are divided by it instead (zero rows stay zero).
_NORM_EPS = 1e-12


def pairwise_sq_distances(x: torch.Tensor) -> torch.Tensor:
    """‖x_i − x_j‖² for all pairs of rows, (n, n), without a square root.

    Computed as ‖x_i‖² + ‖x_j‖² − 2⟨x_i, x_j⟩ (one Gram product, O(n²) memory instead of the
    O(n²·d) of explicit differences), with autocast off so that the product runs in the dtype of
    ``x``, and clamped at 0, where rounding can leave a tiny negative value for coinciding rows.
    Its gradient is polynomial in ``x``, so it is finite everywhere, also for coinciding rows
    (where the clamp makes it zero, as the exact gradient 2·(x_i − x_j) is).
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        sq_norms = x.square().sum(-1)
        gram = x @ x.mT
        return (sq_norms[:, None] + sq_norms[None, :] - 2.0 * gram).clamp_min(0.0)


def spread_rows(z: torch.Tensor, normalize: bool, check: bool) -> torch.Tensor:
    """The rows the spreading terms measure: ``z`` validated (shape, dtype, and finiteness when
    ``check``), in the working dtype (float64 stays float64, anything else becomes float32) and
    L2-normalised when ``normalize`` (as ``F.normalize``: zero rows stay zero)."""
    check_embeddings(z, "z")
    if check_flag(check, "check"):
        check_finite(z, "z")
    x = z.to(working_dtype(z.dtype))  # z itself when it is float32/64
    if check_flag(normalize, "normalize"):
        # a power of two per row first (exact): rows of 1e-30 or 1e30 keep their direction
        # instead of falling under the 1e-12 clamp or overflowing in the norm
        x = rescale_rows(x)
        x = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(_NORM_EPS)
    return x


def uniformity(
    z: torch.Tensor,
    t: float = 2.0,
    *,
    normalize: bool = True,
    check: bool = True,
) -> torch.Tensor:
    """Uniformity of the rows of ``z``: U(Z) = −log mean_{i<j} exp(−t·‖z_i − z_j‖²).

    Plain-text formula, with z_1..z_n the rows of ``z`` (L2-normalised when ``normalize``) and
    P = n(n−1)/2 the number of pairs i < j:

        U(Z, t) = −log( (1/P) · Σ_{i<j} exp(−t · ‖z_i − z_j‖²) )

    It is the negative of Wang & Isola's uniformity loss L_uniform: higher means more spread out
    (like :func:`coding_rate`). U ≥ 0 always; U = 0 exactly when all rows coincide; on the unit
    sphere U ≤ 4t, reached by two antipodal points. ``UniformityRegularizer`` minimises
    L_uniform = −U.

    Numerics: the log-mean-exp is computed as a logsumexp over the pairs i < j minus log P, so
    nothing underflows at large t or large distances; the squared distances are formed without
    a square root (:func:`pairwise_sq_distances`), so the gradient is finite when rows coincide.
    The (n, n) matrix of distances is the memory cost. Under fp16/bf16 autocast, autocast is
    switched off and the computation runs in float32.

    Args:
        z: (n, d) embeddings, any floating dtype.
        t: the temperature t > 0 of the Gaussian potential; 2 is the paper's default.
        normalize: L2-normalise the rows first, as the paper does (its features live on the
            unit hypersphere). Without it, U grows without bound as the rows are scaled up.
        check: raise ``ValueError`` on NaN/inf in ``z`` (one host sync on CUDA).

    Returns:
        Scalar tensor, float64 for float64 input and float32 otherwise. A batch of one row has
        no pair: the result is a zero that stays on the autograd graph.

    Raises:
        TypeError: ``z`` is not a floating-point tensor; ``t`` is not a number; ``normalize``
            or ``check`` is not a bool.
        ValueError: ``z`` is not 2-D or is empty; t ≤ 0 or not finite; NaN/inf in ``z``.

    Convention:
        Sign: U = −L_uniform (the paper's loss, log E exp(−t‖f(x) − f(y)‖²), is ≤ 0). Squared
        Euclidean distances, natural logarithm, mean over the unordered pairs i < j of the batch
        (the paper's estimator ``torch.pdist(x).pow(2).mul(-t).exp().mean().log()``).

    Reference:
        Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and
        Uniformity on the Hypersphere", ICML 2020, arXiv 2005.10242 (L_uniform and the paper's
        PyTorch listing of it). Departure: a logsumexp instead of ``exp().mean().log()``
        (same value, no underflow), and no square root (finite gradient at coinciding rows).

    Example:
        >>> z = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # two antipodal points: ‖z_1 − z_2‖² = 4
        >>> round(uniformity(z, t=2.0).item(), 6)  # −log exp(−2·4) = 8
        8.0
    """
    t = check_positive(t, "t")
    x = spread_rows(z, normalize, check)
    n = x.shape[0]
    if n < 2:
        return x.sum() * 0.0  # no pair: zero, on the graph
    logits = pairwise_sq_distances(x).mul_(-t)
    # pairs i < j only: everything on or below the diagonal is −inf, i.e. weight 0
    upper = torch.ones(n, n, dtype=torch.bool, device=x.device).triu_(1)
    logits = logits.masked_fill(~upper, -math.inf)
    return math.log(n * (n - 1) / 2) - torch.logsumexp(logits.flatten(), dim=0)
