"""Coding rate R(Z) and rate reduction ΔR (MCR²), with a hand-written backward pass.

Every quantity in this module reduces to one primitive, ``half_logdet_gram``:

    h(X, a) = ½ · logdet(I + a · X Xᵀ) = ½ · logdet(I + a · XᵀX)        (Sylvester)

computed on whichever Gram matrix is smaller, with a Cholesky factorisation (the matrix is
symmetric positive definite, every eigenvalue ≥ 1), so ½·logdet = Σ log diag(L). Its gradient
is a · (I + a·XXᵀ)⁻¹ · X (or a · X · (I + a·XᵀX)⁻¹), obtained from the same factor: no second
factorisation, memory O(min(n, k)²) beyond the input. The solve is the explicit inverse of the
small matrix (``cholesky_inverse``: every eigenvalue ≥ 1, so it is as accurate as a solve, which
the tests check) followed by one GEMM, except where m ≤ d < 8m, where two triangular solves
measured faster. It does not rest on triangular solves with thousands of right-hand sides, which
some CPUs' LAPACK (MKL on AMD EPYC) runs 4–10× slower than a GEMM of the same size. With
normalised rows and a small a·Gram (ε² > 1 for the standard rate) the inverse path forms
−a·M⁻¹·Gram·X instead of M⁻¹X, since the normalisation's projection removes X itself and would
otherwise cancel it against nearly all of M⁻¹X. Autograd
through ``torch.logdet`` (the formula as written in the MCR² and ACL code) instead factorises a
d×d matrix and inverts it.

On CPU, two measured shortcuts keep the fixed cost per call down (benchmarks/speed): the rows'
power-of-two rescaling is skipped when every row norm is in range (bit for bit the same result;
see ``rescale_rows``), and the orders at which MKL's Cholesky is slowest are factorised inside a
slightly larger block-diagonal matrix (``factor_order``).

Under ``torch.compile`` the host-reading checks (finiteness, factorisation failure, label range)
are skipped: a failed factorisation or a NaN/inf input shows as NaN in the value and the gradient,
as with ``check=False``, and nothing is read back to the host.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
import types
import warnings
from typing import NamedTuple

import numpy as np
import torch

from ._checks import (
    check_batched_matrices,
    check_choice,
    check_compute_dtype,
    check_embeddings,
    check_flag,
    check_gram_scale,
    check_int,
    check_labels,
    check_scale_tensor,
    rescale_rows,
    resolve_eps_sq,
)

__all__ = [
    "CholeskyFallbackWarning",
    "RateReduction",
    "coding_rate",
    "coding_rate_reduction",
    "half_logdet_gram",
]

#: The two scalings of the Gram matrix: the standard d/(m·ε²) of the paper and of MCR², and the
#: official ACL code's m/(d·ε²) (the rate of Zᵀ instead of Z).
VARIANTS = ("standard", "acl_official")


class CholeskyFallbackWarning(RuntimeWarning):
    """The Cholesky factorisation failed and the eigen-decomposition was used instead.

    A ``RuntimeWarning``: filter it like any other warning.

    Example:
        >>> import warnings
        >>> from pml_anticollapse.functional import CholeskyFallbackWarning
        >>> issubclass(CholeskyFallbackWarning, RuntimeWarning)
        True
        >>> with warnings.catch_warnings():  # make the fallback an error inside this block
        ...     warnings.simplefilter("error", CholeskyFallbackWarning)
    """


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


#: The backward pass solves with the explicit inverse of the (small) factorised matrix and one
#: GEMM when the Gram matrix is k×k (m > d), or when it is n×n and k ≥ INVERSE_MIN_ASPECT·n;
#: in between (m ≤ d < 8m) two triangular solves, which avoid the inverse's O(n³) and measured
#: faster there (benchmarks/speed, ``--ops``).
INVERSE_MIN_ASPECT = 8

#: F.normalize's clamp: rows with a smaller norm are divided by it instead.
_NORM_EPS = 1e-12

#: torch's CPU BLAS/LAPACK is MKL (the x86 wheels): the Cholesky orders of ``factor_order``.
_MKL = torch.backends.mkl.is_available()


def factor_order(size: int, device: torch.device) -> int:
    """The order at which a size×size Cholesky factorisation runs: on CPU, a few sizes are
    factorised inside a larger matrix, [[M, 0], [0, I]] (whose factor holds M's exactly).

    Measured with ``python -m benchmarks.speed --ops-only`` (torch 2.13 CPU wheel, MKL, Intel
    Xeon): LAPACK's ``potrf`` runs 105 < n ≤ 128 about 3× slower per matrix than n = 136
    (120: 144 µs, 128: 202 µs, 136: 74 µs on one thread), and multiples of 256 about 2× slower
    than 8 more (256: 464 µs, 264: 255 µs; 512: 2.6 ms, 520: 1.3 ms). Padding costs one k²
    copy and up to (136/105)³ ≈ 2.2× the flops of a small factorisation where there is no cliff.
    Only where torch runs on MKL (the measurement is MKL's); not on CUDA.
    """
    if device.type != "cpu" or not _MKL:
        return size
    if 104 < size <= 128:
        return 136
    if size >= 256 and size % 256 == 0:
        return size + 8
    return size


def padded_cholesky_ex(mat: torch.Tensor, order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.cholesky_ex(mat)``, run at ``order`` (≥ the size of ``mat``, see
    ``factor_order``); the factor returned is (…, k, k), a view when padded."""
    k = mat.shape[-1]
    if order == k:
        return torch.linalg.cholesky_ex(mat)
    big = mat.new_zeros(*mat.shape[:-2], order, order)
    big[..., :k, :k] = mat
    big.diagonal(dim1=-2, dim2=-1)[..., k:] = 1.0
    factor, info = torch.linalg.cholesky_ex(big)
    return factor[..., :k, :k], info


class _HalfLogdetGram(torch.autograd.Function):
    """h(X, a) = ½·logdet(I + a·XXᵀ) over the batch dims of X (…, n, k).

    ``a`` is a Python float (one scale: the common case, no tensor built for it) or a tensor
    of the batch shape (…). With ``normalize=True`` the rows are L2-normalised inside the
    function (X = D⁻¹Z, D the row norms clamped at 1e-12 as in ``F.normalize``) and the backward
    pass applies the projection (I − x xᵀ)/‖z‖ row by row itself, in three elementwise passes
    over the (n, k) input instead of autograd's chain through ``F.normalize`` (which, at
    m ≤ d/4, costs about as much as the triangular solves).

    Every operation here is paid once per training step, and at the sizes of a small network
    the fixed cost per PyTorch call (a few µs) is most of the price, so the function keeps their
    number down: in-place scaling, one ``.item()``-style check on CPU, no tensor for a scalar
    ``a``. With ``check=False`` (and under ``torch.compile``) a failed factorisation is marked by
    filling its factor with NaN: one elementwise pass, no host read.
    """

    @staticmethod
    def forward(ctx, z, a, normalize: bool, check: bool, name: str, norms=None):
        n, k = z.shape[-2:]
        if normalize:
            # clamped in place: denom ≤ 1e-12 exactly where the norm was (F.normalize's rule);
            # ``norms``: the row norms of z when the caller has them already (rescale_rows)
            if norms is None:
                norms = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
            denom = norms.clamp_min_(_NORM_EPS)
        else:
            denom = None
        use_rows = n <= k  # the n×n Gram XXᵀ is the smaller one
        # Unit rows X = D⁻¹Z: the n×n Gram is D⁻¹(ZZᵀ)D⁻¹, scaled after the GEMM on n×n entries
        # instead of forming X (an n×k pass, here and in the backward); the k×k one needs X.
        x = z / denom if normalize and not use_rows else z
        scalar = isinstance(a, float)
        a_vec = a if scalar else a[..., None]  # broadcasts over the eigenvalues (…, k)
        # the backward's solve: the explicit inverse + one GEMM, except where m ≤ d < 8m (see
        # _grad and INVERSE_MIN_ASPECT)
        inverse = not use_rows or k >= INVERSE_MIN_ASPECT * n
        if use_rows:
            gram = x @ x.mT
            if normalize:
                inv_d = denom.reciprocal()
                gram.mul_(inv_d).mul_(inv_d.mT)
        else:
            gram = x.mT @ x
        # with normalised rows and a·(mean eigenvalue of the Gram matrix) = a·n/min(n, k) < 1
        # (the standard rate: ε² > 1) the inverse path keeps the Gram matrix (min(n, k)², small)
        # for a gradient free of the projection's cancellation (see _grad)
        keep_gram = inverse and normalize and scalar and a * n < min(n, k)
        scale = a if scalar else a_vec[..., None]
        mat = gram * scale if keep_gram else gram.mul_(scale)
        mat.diagonal(dim1=-2, dim2=-1).add_(1.0)
        factor, info = padded_cholesky_ex(mat, factor_order(mat.shape[-1], mat.device))
        if check and torch.compiler.is_compiling():
            check = False  # no host read inside a compiled graph: a failure shows as NaN
        if not check:
            # a failed factorisation poisons its factor: NaN value and NaN gradient, no host read
            factor.masked_fill_((info != 0)[..., None, None], math.nan)
        out = factor.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        eig = None
        if check and _factorisation_failed(info, out):
            if not bool(torch.isfinite(z).all()):
                raise ValueError(f"{name} must be finite, got NaN or inf values")
            a_max = a if scalar else float(a.max())
            warnings.warn(
                f"Cholesky factorisation of I + a·Gram failed for {name} of shape "
                f"{tuple(z.shape)} (largest scale {a_max:.3g}); "
                "falling back to the symmetric eigen-decomposition",
                CholeskyFallbackWarning,
                stacklevel=_caller_stacklevel(),
            )
            x = z / denom if normalize else z
            w, v = torch.linalg.eigh(x @ x.mT if use_rows else x.mT @ x)
            w = torch.log1p(w.clamp_min(0) * a_vec)
            out = 0.5 * w.sum(-1)
            eig = (w, v)
        ctx.use_rows = use_rows
        ctx.inverse = inverse
        ctx.normalize = normalize
        ctx.eig = eig is not None
        ctx.a = a if scalar else None
        # Saved: the input, the clamped row norms (n×1) and an O(min(n, k)²) factor (a view of
        # the padded one where factor_order pads); the unit rows are not kept (the k×k path
        # recomputes them in the backward pass, the n×n path never forms them).
        extra = ((factor, gram) if keep_gram else (factor,)) if eig is None else eig
        a_saved = () if scalar else (a,)
        ctx.save_for_backward(z, denom, *a_saved, *extra)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        z, denom, *rest = ctx.saved_tensors
        a = ctx.a if ctx.a is not None else rest.pop(0)
        with torch.no_grad():
            grad_z = _HalfLogdetGram._grad(ctx, grad_out, z, a, denom, rest)
        if torch.is_grad_enabled():  # create_graph=True: make a second derivative fail loudly
            grad_z = _NoDoubleBackward.apply(grad_z, z)
        return grad_z, None, None, None, None, None

    @staticmethod
    def _grad(ctx, grad_out, z, a, denom, extra):
        # the solves' right-hand side: unit rows X = D⁻¹Z; on the n×n path Z itself, with D⁻¹
        # folded into the small matrix (one n×k pass fewer), and ``x`` stays Z below
        unit = ctx.normalize and not ctx.use_rows
        x = z / denom if unit else z
        fold = ctx.normalize and ctx.use_rows  # D⁻¹ folded into an n×n matrix
        gram_form = False  # set where the inverse path leaves X itself out (see below)
        if ctx.eig:
            log1p_w, v = extra
            inv_diag = torch.exp(-log1p_w)  # 1 / (1 + a·λ)

            def solve(rhs):
                return v @ (inv_diag[..., None] * (v.mT @ rhs))

            grad_x = solve(z / denom if fold else x) if ctx.use_rows else solve(x.mT).mT
            # a zero row's gradient is exactly 0 (its row and column of I + a·Gram are those of
            # I); V·diag·Vᵀ leaves ~1e-16 of rounding there, which the 1e-12 clamp would blow up
            grad_x.masked_fill_((z == 0).all(-1, keepdim=True), 0.0)
        elif ctx.use_rows and not ctx.inverse:
            # (I + a·XXᵀ)⁻¹X = (Xᵀ·L⁻ᵀ·L⁻¹)ᵀ: two right-side triangular solves on Xᵀ, a
            # column-major view of the row-major X that LAPACK reads in place, giving a row-major
            # result once transposed. (cholesky_solve(X, L) copies X and returns a column-major
            # gradient, which slows the elementwise passes below: 2.5× slower at 128×512.)
            # With D⁻¹ folded in: L⁻¹D⁻¹ = (D·L)⁻¹, D·L still lower triangular (rows scaled).
            (factor,) = extra
            first = factor * denom if fold else factor
            y = torch.linalg.solve_triangular(first.mT, x.mT, upper=True, left=False)
            grad_x = torch.linalg.solve_triangular(factor, y, upper=False, left=False).mT
        else:
            # The explicit SPD inverse from the factor (small: min(n, k)² entries, every
            # eigenvalue of the matrix ≥ 1) and one GEMM, row-major like X. Not cholesky_solve
            # against the many right-hand sides of X: on some CPUs (AMD EPYC with MKL) those
            # triangular solves are 4–10× slower than a GEMM of the same size.
            factor, *kept = extra
            gram_form = bool(kept)
            inv = torch.cholesky_inverse(factor)
            if not kept:
                grad_x = (inv * denom.mT.reciprocal() if fold else inv) @ x if ctx.use_rows else (
                    x @ inv)
            else:
                # Unit rows, small a·G: (I + a·G)⁻¹X = X − a·(I + a·G)⁻¹G·X (G the Gram
                # matrix), and the normalisation's projection below removes X itself from each
                # unit row, so only the second term is formed. Forming M⁻¹X and projecting would
                # cancel X against nearly all of M⁻¹X (large ε², m > d: 1.5e-5 relative gradient
                # error at 4096×128, ε² = 10, instead of 2e-6). With a large a·G the second term
                # is nearly −X itself and the plain form is the accurate one.
                (gram,) = kept
                if ctx.use_rows:
                    grad_x = (inv @ gram).mul_(-a / denom.mT if fold else -a) @ x
                else:
                    grad_x = x @ (gram @ inv).mul_(-a)
        scale = (grad_out * a)[..., None, None]  # a·grad_out, per matrix
        if not ctx.normalize:
            return grad_x.mul_(scale)
        # d(z/‖z‖): s·(g − x·⟨x, g⟩)/‖z‖ per row (s = a·grad_out), with x = z/‖z‖ where X was not
        # formed; F.normalize skips the projection where the norm is clamped.
        clamped = denom <= _NORM_EPS
        dot = torch.linalg.vecdot(grad_x, x).unsqueeze_(-1)
        if fold:
            dot.div_(denom * denom)  # ⟨g, z⟩/‖z‖², the coefficient of z
        dot.masked_fill_(clamped, 0.0)
        if gram_form:
            # a clamped row is not a unit row and is not projected: the X that the Gram form
            # left out stays in (g + x), folded into the (n, 1) coefficient (x = z/‖z‖ there)
            dot.sub_(clamped.to(x.dtype) / denom if fold else clamped.to(x.dtype))
        return grad_x.addcmul_(dot, x, value=-1.0).mul_(scale / denom)


def _caller_stacklevel() -> int:
    """``warnings.warn``'s stacklevel for the caller's first frame outside this package, torch
    and PML, so that a warning points at the user's line whichever API led here."""
    import pytorch_metric_learning

    import pml_anticollapse

    skip = tuple(
        os.path.dirname(m.__file__ or "") + os.sep
        for m in (pml_anticollapse, torch, pytorch_metric_learning)
    )
    level = 1  # 1: the frame that will call warnings.warn
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(skip):
        frame, level = frame.f_back, level + 1
    return level


def _factorisation_failed(info: torch.Tensor, out: torch.Tensor) -> bool:
    """True when a factorisation failed or the result is not finite (one host read-back)."""
    if info.dim() == 0 and info.device.type == "cpu":
        return int(info) != 0 or not math.isfinite(float(out))  # no tensor built on CPU
    return bool((info != 0).any() | ~torch.isfinite(out).all())


class _NoDoubleBackward(torch.autograd.Function):
    """Passes a first derivative through; differentiating it raises.

    ``torch.autograd.function.once_differentiable`` is not enough here: it only guards the
    gradient when the incoming gradient itself requires grad, so ``grad(R, z, create_graph=True)``
    followed by a second ``backward`` silently treated our term as a constant (wrong Hessian).
    """

    @staticmethod
    def forward(ctx, grad, anchor):
        return grad

    @staticmethod
    def backward(ctx, _):
        raise RuntimeError(
            "coding_rate / half_logdet_gram can be differentiated only once: its backward pass is "
            "hand-written (Cholesky solves) and has no derivative of its own; use autograd through "
            "torch.logdet for second derivatives"
        )


def half_logdet_gram(
    x: torch.Tensor,
    a: torch.Tensor | float,
    check: bool = True,
    name: str = "x",
    *,
    normalize: bool = False,
) -> torch.Tensor:
    """½·logdet(I + a·XXᵀ) for each matrix in a batch, by Cholesky of the smaller Gram matrix.

    Args:
        x: (..., n, k) floating-point tensor; float16 and bfloat16 are computed in float32.
        a: scale ≥ 0, a number or a real tensor broadcastable to the batch shape (...); it
            receives no gradient. A tensor gets the checks a number gets (finite, ≥ 0) on its
            values: always on CPU, on CUDA only with ``check`` (a host read).
        check: raise on non-finite input and fall back to an eigen-decomposition (with a
            ``CholeskyFallbackWarning``) when the factorisation fails. Costs one host sync on
            CUDA; with ``check=False``, and always inside ``torch.compile`` (where a host read
            would break the graph), a failed factorisation gives NaN (value and gradient)
            instead, with no host read.
        name: the argument name used in error messages.
        normalize: L2-normalise the rows of ``x`` first (as ``F.normalize(x, dim=-1)``, zero
            rows stay zero), with the normalisation's gradient fused into the backward pass.

    Returns:
        Tensor of shape (...), dtype of ``x`` (float32 for float16/bfloat16). Differentiable once
        with respect to ``x``; differentiating the gradient again (after ``create_graph=True``)
        raises a ``RuntimeError``.

    Example:
        >>> x = torch.eye(3).expand(2, 3, 3)  # two batches of three orthonormal rows
        >>> half_logdet_gram(x, torch.tensor([1.0, 3.0]))  # ½·3·log(1 + a)
        tensor([1.0397, 2.0794])
    """
    normalize = check_flag(normalize, "normalize")
    check = check_flag(check, "check")
    check_batched_matrices(x, name)
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()  # no half-precision Cholesky kernel: computed (and returned) in float32
    compiling = torch.compiler.is_compiling()
    norms = None
    if normalize:
        # a power of two per row (exact): rows of 1e-30 or 1e30 keep their direction instead of
        # falling under F.normalize's 1e-12 clamp or overflowing in the norm (on CPU only where
        # a norm is out of range; then ``norms`` is None and the function computes them)
        x, norms = rescale_rows(x, return_norms=True)
    if isinstance(a, torch.Tensor):
        # the checks a Python number gets, on the tensor's values: on CPU always (free), on
        # CUDA when ``check`` asks for the host read; never inside torch.compile
        a = check_scale_tensor(a, "a", x, values=not compiling and (check or a.is_cpu))
    elif isinstance(a, (int, float, numbers.Real)) and not isinstance(a, (bool, np.bool_)):
        a = float(a)  # one scale for every matrix: kept a Python number
        # (under torch.compile with dynamic shapes ``a`` is symbolic: checked at trace time by
        # the caller's own arguments, not here)
        if not compiling and not (math.isfinite(a) and a >= 0):
            raise ValueError(f"a must be a finite number >= 0, got {a}")
    elif isinstance(a, (torch.SymFloat, torch.SymInt)):
        # a symbolic scale under torch.compile (dynamic shapes): checked where it was made
        a = torch.as_tensor(a, dtype=x.dtype, device=x.device).expand(x.shape[:-2]).detach()
    else:
        raise TypeError(
            f"a must be a finite number >= 0 or a tensor of the batch shape, got "
            f"{type(a).__name__} {a!r}"
        )
    if check and not compiling and (x.device.type == "cpu" or normalize):
        check_gram_scale(x, a, name, normalize)  # a·XXᵀ beyond the dtype: a clear error
    return _HalfLogdetGram.apply(x, a, normalize, check, name, norms)


def coding_rate(
    z: torch.Tensor,
    eps: float | None = None,
    *,
    eps_sq: float | None = None,
    normalize: bool = True,
    variant: str = "standard",
    mask: torch.Tensor | None = None,
    check: bool = True,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Coding rate of the rows of ``z``: R(Z) = ½·logdet(I + d/(m·ε²)·ZZᵀ).

    Plain-text formula, with z_1..z_m the rows of ``z`` (m samples of dimension d), stacked as the
    columns of Z (d×m):

        R(Z, ε) = ½ · logdet(I_d + d/(m·ε²) · Z Zᵀ) = ½ · logdet(I_m + d/(m·ε²) · Zᵀ Z)

    the number of bits (in nats) needed to code the samples up to distortion ε. Higher means more
    spread out; a collapsed batch has a low rate.

    Args:
        z: (m, d) embeddings, any floating dtype.
        eps: the paper's ε. Give ``eps`` or ``eps_sq``, not both.
        eps_sq: ε². Default 0.5 when neither is given (see *Convention*).
        normalize: L2-normalise the rows first, as both the MCR² and the ACL papers do.
        variant: ``"standard"`` (the formula above) or ``"acl_official"``, the scale the official
            ACL code uses, m/(d·ε²) instead of d/(m·ε²) — the rate of Zᵀ, not of Z. It is a
            departure from the paper's formula, kept only to reproduce that code.
        mask: optional (m,) bool tensor; only the rows where it is True count (m becomes their
            number). Unlike indexing, it keeps shapes static, so it needs no host sync.
        check: raise ``ValueError`` on NaN/inf embeddings (one host sync on CUDA). Skipped
            inside ``torch.compile``: there NaN/inf embeddings give a NaN rate, as with
            ``check=False``, so ``torch.compile(coding_rate, fullgraph=True)`` traces one graph.
        compute_dtype: ``None`` (default: float32 for float32/bf16/fp16 input, float64 for
            float64) or ``torch.float64`` / ``torch.float32`` to compute in that dtype and
            return the default's. float32 meets 1e-5 relative to a float64 computation on well
            spread, non-square batches, not on nearly collapsed rows nor on square batches at a
            small ε² (the rounding of the normalised rows and their Gram matrix, amplified by the
            conditioning; docs/speed.md, "Accuracy"): ``torch.float64`` does, at 1.3–2.7× the cost.

    Returns:
        Scalar tensor, float64 for float64 input and float32 otherwise (whatever
        ``compute_dtype``) — also under fp16/bf16 autocast, which is switched off for the linear
        algebra.

    Raises:
        TypeError: ``z`` is not a floating-point tensor.
        ValueError: ``z`` is not 2-D or is empty; ε ≤ 0; unknown ``variant``; NaN/inf in ``z``.

    Convention:
        The MCR² reference code and the official ACL code call ε² ``eps`` (MCR²'s help text says
        "eps squared") and both train with ``eps=0.5``: that is ``eps_sq=0.5`` here, the default.
        ``eps=0.5`` here means ε = 0.5, i.e. ε² = 0.25. Logarithms are natural.

    Reference:
        Jiang et al., "Anti-Collapse Loss for Deep Metric Learning Based on Coding Rate Metric",
        arXiv 2407.03106 (2024), Eq. for R; Yu et al., "Learning Diverse and Discriminative
        Representations via the Principle of Maximal Coding Rate Reduction", arXiv 2006.08558
        (2020). Official ACL code: NUST-Machine-Intelligence-Laboratory/Anti-Collapse-Loss,
        commit ec1e0bc, ``criteria/antico.py`` (for ``variant="acl_official"``).

    Example:
        >>> z = torch.eye(4)  # four orthonormal samples in 4-d: ZZᵀ = I
        >>> round(coding_rate(z, eps_sq=0.5).item(), 6)  # ½·4·log(1 + 4/(4·0.5)) = 2·log 3
        2.197225
    """
    check_embeddings(z, "z")
    eps_sq = resolve_eps_sq(eps, eps_sq)
    check_choice(variant, "variant", VARIANTS)
    check_flag(normalize, "normalize")
    check_flag(check, "check")
    check_compute_dtype(compute_dtype)
    m, d = z.shape
    if torch.is_autocast_enabled(z.device.type):
        with torch.autocast(device_type=z.device.type, enabled=False):
            return coding_rate(
                z, eps_sq=eps_sq, normalize=normalize, variant=variant, mask=mask, check=check,
                compute_dtype=compute_dtype,
            )
    out_dtype = working_dtype(z.dtype)
    x = _to_compute_dtype(z, compute_dtype or out_dtype, normalize)
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != (m,):
            raise ValueError(f"mask must be a bool tensor of shape ({m},), got {mask!r}")
        mask = mask.to(x.device)
        # masked-out rows are zero (and stay zero once normalised): no effect on logdet.
        # torch.where, not a product: a NaN/inf in a masked-out row must not leak in (inf·0).
        x = torch.where(mask[:, None], x, 0.0)
        count: int | torch.Tensor = mask.sum().to(x.dtype).clamp_min(1)  # a tensor: no host sync
    else:
        count = m
    a = d / (count * eps_sq) if variant == "standard" else count / (d * eps_sq)
    return half_logdet_gram(x, a, check=check, name="z", normalize=normalize).to(out_dtype)


def _to_compute_dtype(z: torch.Tensor, dtype: torch.dtype, normalize: bool) -> torch.Tensor:
    """``z`` in ``dtype`` (``z`` itself when it already is). float64 rows bound for float32 with
    ``normalize=True`` are first divided by a power of two each (exact; their directions are all
    that counts), so that rows of 1e-50 or 1e50 survive the cast."""
    if z.dtype == torch.float64 and dtype == torch.float32 and normalize:
        z = rescale_rows(z)
    return z.to(dtype)


class RateReduction(NamedTuple):
    """ΔR = R − R_c, with its two terms (scalars): what :func:`coding_rate_reduction` returns.

    Example:
        >>> import torch
        >>> from pml_anticollapse.functional import coding_rate_reduction
        >>> out = coding_rate_reduction(torch.eye(4), torch.tensor([0, 0, 1, 1]))
        >>> round(out.r.item(), 4), round(out.r_c.item(), 4), round(out.delta_r.item(), 4)
        (2.1972, 1.6094, 0.5878)
    """

    delta_r: torch.Tensor
    r: torch.Tensor
    r_c: torch.Tensor


def coding_rate_reduction(
    z: torch.Tensor,
    labels: torch.Tensor,
    eps: float | None = None,
    *,
    eps_sq: float | None = None,
    normalize: bool = True,
    num_classes: int | None = None,
    check: bool = True,
    compute_dtype: torch.dtype | None = None,
) -> RateReduction:
    """Rate reduction ΔR = R(Z) − R_c(Z | Π) of labelled embeddings (MCR²).

    Formula (m samples, d dims, class j with n_j members Z_j):

        R_c = Σ_j n_j/(2m) · logdet(I + d/(n_j·ε²) · Z_j Z_jᵀ)
        ΔR  = R(Z, ε) − R_c

    ΔR is large when the whole batch is spread out (R high) while each class is compact (R_c
    low). The class terms are computed in one batched factorisation: each class's rows are
    gathered into a zero-padded (C, n_max, d) block (zero rows leave the log-determinant
    unchanged), so there is no Python loop over classes. Classes with no member in the batch
    contribute 0 (tr(Π_j) = 0) and are not built.

    Args:
        z: (m, d) embeddings.
        labels: (m,) integer class labels.
        eps, eps_sq: the precision, as in :func:`coding_rate` (default ε² = 0.5).
        normalize: L2-normalise the rows first.
        num_classes: if given, labels must lie in [0, num_classes) and absent classes are
            allowed; if None, the classes are the distinct labels present. Either way only the
            classes present are factorised (an absent class has weight 0), so a large
            ``num_classes`` costs nothing. Inside ``torch.compile`` with ``fullgraph=True`` give
            it: the distinct labels have a data-dependent number, so the compiled path builds
            one (m, d) masked block per class instead (memory num_classes·m·d).
        check: validate finiteness / label range (host syncs on CUDA); skipped inside
            ``torch.compile`` (see :func:`coding_rate`), where a label outside
            [0, num_classes) then belongs to no class.
        compute_dtype: as in :func:`coding_rate`.

    Returns:
        ``RateReduction(delta_r, r, r_c)``, scalars in the working dtype (float32 or float64).

    Raises:
        TypeError / ValueError: as :func:`coding_rate`, plus labels that are not integers, do
            not match the batch, or fall outside [0, num_classes).

    Convention:
        ``eps_sq`` is what the MCR² reference code calls ``eps``; R_c uses natural logs and the
        weight tr(Π_j)/(2m) of the paper.

    Reference:
        Yu et al., arXiv 2006.08558 (2020), Eq. (8)–(11); Chan et al., "ReduNet", arXiv
        2105.10446 (2021).

    Example:
        >>> z = torch.eye(4)
        >>> out = coding_rate_reduction(z, torch.tensor([0, 0, 1, 1]))
        >>> round(out.r.item(), 4), round(out.r_c.item(), 4)
        (2.1972, 1.6094)
    """
    check_embeddings(z, "z")
    m, d = z.shape
    check_labels(labels, m)
    eps_sq = resolve_eps_sq(eps, eps_sq)
    check_flag(normalize, "normalize")
    check_flag(check, "check")
    check_compute_dtype(compute_dtype)
    labels = labels.to(z.device)
    if num_classes is not None:
        num_classes = check_int(num_classes, "num_classes", minimum=1)
    compiling = torch.compiler.is_compiling()
    if num_classes is not None and check and not compiling:
        if bool(((labels < 0) | (labels >= num_classes)).any()):
            raise ValueError(f"labels must lie in [0, num_classes={num_classes})")
    with torch.autocast(device_type=z.device.type, enabled=False):
        out_dtype = working_dtype(z.dtype)
        x = _to_compute_dtype(z, compute_dtype or out_dtype, normalize)  # normalised later
        r = half_logdet_gram(x, d / (m * eps_sq), check=check, name="z", normalize=normalize)
        if compiling and num_classes is not None:
            blocks, n = _class_blocks_static(x, labels, num_classes)
        else:
            blocks, n = _class_blocks(x, labels)
        # an absent class (n = 0) would have a = 0 and a zero block: ½·logdet(I) = 0, weight 0
        a_c = torch.where(n > 0, d / (n.clamp_min(1) * eps_sq), torch.zeros_like(n))
        r_cls = half_logdet_gram(blocks, a_c, check=check, name="z", normalize=normalize)
        r_c = (n / m * r_cls).sum()
    # ΔR in the compute dtype before rounding: it may be much smaller than R
    return RateReduction((r - r_c).to(out_dtype), r.to(out_dtype), r_c.to(out_dtype))


def _class_blocks(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of each class *present* in ``labels``, gathered into a zero-padded
    (C_present, n_max, d) block, and the class sizes (C_present,) in ``x``'s dtype.

    Only present classes are built: an absent class (tr(Π_j) = 0) has weight tr(Π_j)/(2m) = 0 in
    R_c, so ``num_classes`` never costs more than the batch (``num_classes=10**7`` included).
    Two host reads (the number of classes and the largest class)."""
    m = x.shape[0]
    _, inv, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    order = torch.argsort(inv, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    sorted_cls = inv[order]
    slot = torch.arange(m, device=x.device) - starts[sorted_cls]
    blocks = x.new_zeros(counts.shape[0], int(counts.max()), x.shape[1])
    blocks = blocks.index_put((sorted_cls, slot), x[order])
    return blocks, counts.to(x.dtype)


def _class_blocks_static(
    x: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Under ``torch.compile``: every class's block as the whole batch with the other classes'
    rows zeroed, (num_classes, m, d), shapes known without reading labels on the host (zero rows
    leave the log-determinant unchanged). Memory num_classes·m·d; labels outside
    [0, num_classes) belong to no class."""
    member = labels[None, :] == torch.arange(num_classes, device=labels.device)[:, None]
    blocks = torch.where(member[:, :, None], x[None], 0.0)
    return blocks, member.sum(1).to(x.dtype)
