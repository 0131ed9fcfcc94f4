"""Collapse diagnostics: how much of the embedding space a set of embeddings actually uses.

These are measurements, not training objectives; they run without gradient bookkeeping in mind
but stay differentiable where ``torch.linalg.svdvals`` is. Each checks its input is finite
(``ValueError``, instead of the SVD's ``_LinAlgError`` or a NaN) and rescales rows by powers of
two before any square is taken, so rows of 1e30 or 1e-30 are measured like rows of 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._checks import (
    check_embeddings,
    check_finite,
    check_flag,
    check_labels,
    global_scale,
    rescale_rows,
)
from .coding_rate import working_dtype

__all__ = [
    "effective_rank",
    "intra_inter_distance_ratio",
    "rho_spectrum",
    "singular_value_spectrum",
]


def singular_value_spectrum(z: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Singular values of the (m, d) embedding matrix, descending, in the working dtype.

    Args:
        z: (m, d) embeddings.
        normalize: L2-normalise the rows first.

    Returns:
        (min(m, d),) tensor, float64 for float64 input, float32 otherwise.

    Raises:
        TypeError: ``z`` not a floating-point tensor; ``normalize`` not a bool.
        ValueError: ``z`` not 2-D, empty or not finite; with ``normalize=False``, singular
            values beyond the working dtype's range.

    Example:
        >>> singular_value_spectrum(2 * torch.eye(3)).tolist()
        [1.0, 1.0, 1.0]
    """
    check_embeddings(z, "z")
    normalize = check_flag(normalize, "normalize")
    check_finite(z, "z")
    with torch.autocast(device_type=z.device.type, enabled=False):
        x = z.to(working_dtype(z.dtype))
        if normalize:
            return torch.linalg.svdvals(F.normalize(rescale_rows(x), dim=1))
        scale = global_scale(x)  # σ(x) = s·σ(x/s): no square out of range inside the SVD
        s = torch.linalg.svdvals(x / scale) * scale
        if not bool(torch.isfinite(s).all()):
            raise ValueError(
                f"z's singular values must be finite in {x.dtype}, got an overflow (largest "
                f"|entry| {float(x.abs().max()):g}); pass float64 or normalize=True"
            )
        return s


def _spectrum_distribution(z: torch.Tensor, normalize: bool) -> torch.Tensor:
    s = singular_value_spectrum(z, normalize)
    total = s.sum()
    # All-zero input has no spectrum to speak of: treat it as a single direction.
    point_mass = torch.zeros_like(s)
    point_mass[0] = 1.0
    return torch.where(total > 0, s / total.clamp_min(torch.finfo(s.dtype).tiny), point_mass)


def effective_rank(z: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Effective rank exp(H(p)), p the singular values normalised to sum to 1.

    Formula: p_i = σ_i / Σ_j σ_j, H(p) = −Σ_i p_i·log p_i (0·log 0 = 0), erank = exp(H).
    It lies in [1, min(m, d)]: 1 for a fully collapsed batch, min(m, d) for a flat spectrum.

    Reference: Roy & Vetterli, "The effective rank: a measure of effective dimensionality",
    EUSIPCO 2007.

    Example:
        >>> round(effective_rank(torch.eye(4)).item(), 6)
        4.0
    """
    p = _spectrum_distribution(z, normalize)
    # 0·log 0 = 0 with a finite gradient (xlogy's is NaN at p = 0, i.e. for any rank-deficient z)
    entropy = -torch.where(p > 0, p * p.clamp_min(torch.finfo(p.dtype).tiny).log(), 0.0).sum()
    return entropy.exp()


def rho_spectrum(z: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """ρ-spectrum: KL(U ‖ p) between the uniform distribution and the normalised spectrum.

    Formula: with n = min(m, d) singular values and p_i = σ_i / Σ σ_j,
    ρ = Σ_i (1/n)·log((1/n) / p_i). 0 for a flat spectrum, large for a collapsed one. Zero
    singular values are clamped to the smallest normal float so the value stays finite.

    Reference: Roth et al., "Revisiting Training Strategies and Generalization Performance in
    Deep Metric Learning", arXiv 2002.08473 (2020); the official ACL code reports it too.

    Example:
        >>> round(rho_spectrum(torch.eye(4)).item(), 6)
        0.0
    """
    p = _spectrum_distribution(z, normalize)
    n = p.numel()
    log_p = p.clamp_min(torch.finfo(p.dtype).tiny).log()
    return (-math.log(n) - log_p).mean()


def intra_inter_distance_ratio(
    z: torch.Tensor, labels: torch.Tensor, normalize: bool = True
) -> torch.Tensor:
    """π_ratio = π_intra / π_inter: how tight classes are relative to how far apart they are.

    Formula (Euclidean distances d):
        π_intra = mean over classes c of the mean d(z_i, z_j) over pairs i ≠ j in c
                  (classes with a single member are skipped),
        π_inter = mean over pairs of classes c ≠ c' of d(μ_c, μ_c'), μ the class means.
    A ratio near 0 means every class has shrunk to a point (class collapse).

    Returns NaN when no class has two members or fewer than two classes are present, and the
    plain quotient when every class mean coincides (π_inter = 0): NaN if the classes are points
    too (0/0, e.g. an all-zero batch), inf otherwise.
    Raises ``ValueError`` for NaN/inf in ``z`` (which would otherwise give NaN too).

    Reference: Roth et al., arXiv 2002.08473 (2020), Sec. 5 ("embedding space density").

    Example:
        >>> z = torch.tensor([[1., 0.], [1., 0.], [0., 1.], [0., 1.]])
        >>> intra_inter_distance_ratio(z, torch.tensor([0, 0, 1, 1])).item()
        0.0
    """
    check_embeddings(z, "z")
    check_labels(labels, z.shape[0])
    normalize = check_flag(normalize, "normalize")
    check_finite(z, "z")
    with torch.autocast(device_type=z.device.type, enabled=False):
        x = z.to(working_dtype(z.dtype))
        # the ratio is scale-free: rescaling (rows, or the whole batch) keeps squares in range
        x = F.normalize(rescale_rows(x), dim=1) if normalize else x / global_scale(x)
        _, inv = torch.unique(labels.to(z.device), return_inverse=True)
        onehot = F.one_hot(inv).to(x.dtype)  # (m, C)
        counts = onehot.sum(0)
        # difference-based distances: the matrix-product form that cdist picks above 25 rows
        # loses the small intra-class distances of a nearly collapsed class, the case of interest
        exact = "donot_use_mm_for_euclid_dist"
        dist = torch.cdist(x, x, compute_mode=exact)
        same = onehot @ onehot.T
        same.fill_diagonal_(0)
        # Σ_{i≠j in c} d_ij per class, divided by n_c·(n_c − 1)
        per_class_sum = onehot.T @ (dist * same).sum(1)
        pairs = counts * (counts - 1)
        valid = pairs > 0
        intra = (per_class_sum[valid] / pairs[valid]).mean()
        centers = (onehot.T @ x) / counts[:, None]
        c = centers.shape[0]
        cd = torch.cdist(centers, centers, compute_mode=exact)
        inter = cd.sum() / (c * (c - 1)) if c > 1 else cd.new_tensor(float("nan"))
        return intra / inter
