"""What the speed benchmark times: three implementations of the coding rate, the float64
reference they are checked against, and the op-level cases of the backward pass.

R(Z) = ½·logdet(I + d/(m·ε²)·ZZᵀ) of the L2-normalised rows of an (m, d) batch, ε² = 0.5:

- ``ours``: :func:`pml_anticollapse.functional.coding_rate` (Cholesky of the smaller Gram matrix,
  hand-written backward pass);
- ``naive``: ½·``torch.logdet`` of the d×d matrix I_d + a·ZᵀZ through autograd, the formula as
  the MCR² reference code, the official ACL code and lightly's ``tcr_loss`` write it;
- ``cholesky_autograd``: ½·logdet from ``torch.linalg.cholesky`` of the smaller Gram matrix, with
  autograd differentiating through the factorisation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from pml_anticollapse.functional import coding_rate
from pml_anticollapse.functional.coding_rate import factor_order, padded_cholesky_ex

EPS_SQ = 0.5
#: The grid of the issue (m samples × d dimensions).
GRID = ((90, 512), (128, 512), (512, 512), (180, 2048), (1024, 64), (4096, 128), (8192, 512))
#: Extra CUDA point: the issue's latency target (fwd+bwd ≤ 0.2 ms in float32) is stated at 180×512.
CUDA_EXTRA = ((180, 512),)
SMOKE_GRID = ((24, 128), (160, 16))
IMPLS = ("ours", "naive", "cholesky_autograd")
PASSES = ("fwd", "fwd+bwd")
#: Relative agreement with the float64 reference asked of float32 (value, and gradient norm-wise).
ACCURACY_RTOL = 1e-5


def gram_scale(m: int, d: int, eps_sq: float = EPS_SQ) -> float:
    return d / (m * eps_sq)


def rate_ours(z: torch.Tensor) -> torch.Tensor:
    """The package: Cholesky of the smaller Gram matrix, hand-written backward."""
    return coding_rate(z, eps_sq=EPS_SQ)


def rate_naive(z: torch.Tensor, eps_sq: float = EPS_SQ) -> torch.Tensor:
    """½·logdet(I_d + a·ZᵀZ) of the d×d matrix through autograd (the anchor codes' formula)."""
    x = F.normalize(z, dim=-1)
    m, d = x.shape
    eye = torch.eye(d, dtype=z.dtype, device=z.device)
    return 0.5 * torch.logdet(eye + gram_scale(m, d, eps_sq) * (x.T @ x))


def rate_cholesky_autograd(z: torch.Tensor) -> torch.Tensor:
    """Σ log diag(L), L = cholesky(I + a·Gram) of the smaller Gram, differentiated by autograd."""
    x = F.normalize(z, dim=-1)
    m, d = x.shape
    gram = x @ x.T if m <= d else x.T @ x
    eye = torch.eye(gram.shape[0], dtype=z.dtype, device=z.device)
    factor = torch.linalg.cholesky(eye + gram_scale(m, d) * gram)
    return factor.diagonal().log().sum()


RATE_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "ours": rate_ours,
    "naive": rate_naive,
    "cholesky_autograd": rate_cholesky_autograd,
}


def rate_ours_float64(z: torch.Tensor) -> torch.Tensor:
    """The package with ``compute_dtype=torch.float64``: float32 in and out, float64 inside."""
    return coding_rate(z, eps_sq=EPS_SQ, compute_dtype=torch.float64)


#: ``--with-float64``: also time the package's float64 arithmetic (its cost over ``ours``).
FLOAT64_FNS = {**RATE_FNS, "ours_float64": rate_ours_float64}


def reference_rate_and_grad(
    z: torch.Tensor, eps_sq: float = EPS_SQ
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 reference: ½·Σ log(1 + a·λ), λ the eigenvalues of the smaller Gram matrix of the
    normalised rows (``eigvalsh``, a different algorithm from all three timed ones), and its
    gradient by float64 autograd through ``eigvalsh``. ``z`` is used as given (already rounded)."""
    x = z.detach().cpu().to(torch.float64).requires_grad_(True)
    xn = x / x.norm(dim=1, keepdim=True)
    m, d = x.shape
    gram = xn @ xn.T if m <= d else xn.T @ xn
    lam = torch.linalg.eigvalsh(gram).clamp_min(0)
    value = 0.5 * torch.log1p(gram_scale(m, d, eps_sq) * lam).sum()
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ in float64 (norm-wise; ``b`` a float64 reference on the CPU)."""
    a = a.detach().cpu().to(torch.float64)
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


#: Shapes of the op-level table: m > d, the Gram matrix k×k.
OPS_SHAPES = ((4096, 128), (1024, 64), (8192, 512))


def op_cases(x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The linear algebra of the m > d backward pass, op by op, on (n, k) rows ``x``: the two
    ways to apply (I + a·XᵀX)⁻¹ to the n rows — ``cholesky_solve`` against n right-hand sides
    (the earlier path) or the explicit k×k inverse and one GEMM (the path used now) — next to
    the Gram GEMM and the factorisation, and the naive formula's LU inverse + GEMM."""
    n, k = x.shape
    mat = x.mT @ x
    mat.mul_(k / (n * EPS_SQ)).diagonal().add_(1.0)
    factor = torch.linalg.cholesky(mat)
    order = factor_order(k, x.device)
    xt = x.mT
    return {
        "gram x.mT @ x": lambda: x.mT @ x,
        "cholesky_ex(M)": lambda: torch.linalg.cholesky_ex(mat),
        # what ours runs: k = 105..128 at order 136, multiples of 256 at k + 8 (factor_order)
        "cholesky_ex(M) padded as ours": lambda: padded_cholesky_ex(mat, order),
        "cholesky_solve(x.mT, L)": lambda: torch.cholesky_solve(xt, factor),
        "solve_triangular(L, x.mT)": lambda: torch.linalg.solve_triangular(
            factor, xt, upper=False
        ),
        "cholesky_inverse(L)": lambda: torch.cholesky_inverse(factor),
        "x @ cholesky_inverse(L)": lambda: x @ torch.cholesky_inverse(factor),
        "x @ inv(M)": lambda: x @ torch.linalg.inv(mat),
    }
