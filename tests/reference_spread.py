"""Slow float64 oracles for the spreading terms, written from the papers' formulas with explicit
Python loops over rows and pairs (the package uses one Gram product and tensor reductions):
uniformity (Wang & Isola, arXiv 2005.10242) and the KoLeo spread (Sablayrolles et al.,
arXiv 1806.03198)."""

from __future__ import annotations

import math

import torch


def _rows(z: torch.Tensor, normalize: bool) -> list[list[float]]:
    """The rows as Python floats (from float64), L2-normalised one by one when asked."""
    rows = z.detach().to(torch.float64).cpu().tolist()
    if normalize:
        out = []
        for r in rows:
            norm = math.sqrt(math.fsum(v * v for v in r))
            out.append([v / max(norm, 1e-12) for v in r])
        rows = out
    return rows


def _sq_dist(a: list[float], b: list[float]) -> float:
    return math.fsum((u - v) ** 2 for u, v in zip(a, b, strict=True))


def ref_uniformity(z: torch.Tensor, t: float = 2.0, normalize: bool = True) -> float:
    """−log( (1/P)·Σ_{i<j} exp(−t·‖z_i − z_j‖²) ) by a double loop over the pairs i < j, with a
    max-shift so that large t·distance² does not underflow."""
    x = _rows(z, normalize)
    n = len(x)
    logits = [-t * _sq_dist(x[i], x[j]) for i in range(n) for j in range(i + 1, n)]
    if not logits:
        return 0.0
    top = max(logits)
    log_mean = top + math.log(math.fsum(math.exp(v - top) for v in logits) / len(logits))
    return -log_mean


def ref_mean_log_nn_distance(z: torch.Tensor, eps: float = 1e-8, normalize: bool = True) -> float:
    """(1/n)·Σ_i log(ρ_i + ε), ρ_i = min over j ≠ i of ‖z_i − z_j‖, by a double loop."""
    x = _rows(z, normalize)
    n = len(x)
    if n < 2:
        return 0.0
    total = []
    for i in range(n):
        rho = min(math.sqrt(_sq_dist(x[i], x[j])) for j in range(n) if j != i)
        total.append(math.log(rho + eps))
    return math.fsum(total) / n


def regular_simplex(n: int, dtype=torch.float64) -> torch.Tensor:
    """n unit vectors in R^n with pairwise inner products −1/(n−1) (a regular simplex):
    e_i − 1/n, normalised. Pairwise squared distances are all 2n/(n−1)."""
    x = torch.eye(n, dtype=torch.float64) - 1.0 / n
    return (x / x.norm(dim=1, keepdim=True)).to(dtype)


def random_rotation(d: int, seed: int = 0) -> torch.Tensor:
    """A random orthogonal d×d matrix (QR of a Gaussian matrix), float64."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))
