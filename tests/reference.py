"""Slow float64 oracles written from the papers' formulas with a *different* algorithm from the
package (eigenvalues instead of Cholesky, Python loops over classes, d×d instead of the smaller
Gram matrix)."""

from __future__ import annotations

import math

import torch


def _rows(z: torch.Tensor, normalize: bool) -> torch.Tensor:
    z = z.detach().to(torch.float64)
    return z / z.norm(dim=1, keepdim=True).clamp_min(1e-12) if normalize else z


def ref_coding_rate(z, eps_sq=0.5, normalize=True, variant="standard"):
    """½·Σ log(1 + a·λ_i), λ the eigenvalues of the d×d matrix ZᵀZ (z given as m×d rows)."""
    x = _rows(z, normalize)
    m, d = x.shape
    a = d / (m * eps_sq) if variant == "standard" else m / (d * eps_sq)
    lam = torch.linalg.eigvalsh(x.T @ x).clamp_min(0)
    return 0.5 * torch.log1p(a * lam).sum()


def ref_coding_rate_grad(z, eps_sq=0.5):
    """Gradient of R with respect to unnormalised rows, by float64 autograd through
    torch.logdet of the d×d matrix (the MCR² code's formula)."""
    x = z.detach().to(torch.float64).requires_grad_(True)
    xn = x / x.norm(dim=1, keepdim=True)
    m, d = x.shape
    r = 0.5 * torch.logdet(torch.eye(d, dtype=torch.float64) + d / (m * eps_sq) * xn.T @ xn)
    (g,) = torch.autograd.grad(r, x)
    return g


def ref_rate_reduction(z, labels, eps_sq=0.5, normalize=True):
    """MCR² as written in the paper: a Python loop over classes, d×d log-determinants."""
    x = _rows(z, normalize)
    m, d = x.shape
    r = 0.5 * torch.logdet(torch.eye(d, dtype=torch.float64) + d / (m * eps_sq) * x.T @ x)
    r_c = torch.zeros((), dtype=torch.float64)
    for c in torch.unique(labels):
        zc = x[labels == c]
        n = zc.shape[0]
        r_c = r_c + n / (2 * m) * torch.logdet(
            torch.eye(d, dtype=torch.float64) + d / (n * eps_sq) * zc.T @ zc
        )
    return r - r_c, r, r_c


def ref_acl_official_term(proxies, labels_present, eps_sq=0.5, gamma=1.0):
    """The official ACL code's proxy term, written as that code computes it: the proxies of the
    classes present, L2-normalised, stacked as columns P (d×m), and
    exp(−γ·½·logdet(I_m + m/(d·eps)·PᵀP))."""
    p = _rows(proxies[labels_present], True).T  # d × m
    d, m = p.shape
    rate = 0.5 * torch.logdet(torch.eye(m, dtype=torch.float64) + m / (d * eps_sq) * p.T @ p)
    return torch.exp(-gamma * rate)


def ref_effective_rank(z, normalize=True):
    # singular values as √eigenvalues of the smaller Gram matrix (the package uses svdvals)
    x = _rows(z, normalize)
    gram = x @ x.T if x.shape[0] <= x.shape[1] else x.T @ x
    s = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().tolist()
    total = sum(s)
    p = [v / total for v in s if v > 0]
    return math.exp(-sum(v * math.log(v) for v in p))
