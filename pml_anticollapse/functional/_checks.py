"""The one place input validation lives.

Every check raises ``ValueError`` or ``TypeError`` (never ``assert``, which ``python -O`` strips)
with a message that names the argument, what was expected and what arrived.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import torch

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

#: ε² must lie in this range: the scale d/(m·ε²) of the Gram matrix then stays finite and
#: non-zero in float32 (range 1.2e-38 … 3.4e38) for any batch with d/m between 1e-8 and 1e8,
#: instead of overflowing to inf (a rate of inf) or underflowing to 0 (a rate of 0).
EPS_SQ_MIN, EPS_SQ_MAX = 1e-30, 1e30


def check_embeddings(z: object, name: str = "embeddings", allow_empty: bool = False) -> None:
    """Check that ``z`` is a floating-point tensor of shape (batch_size, dim)."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
    if z.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} must have a floating-point dtype (float16, bfloat16, float32 or float64), "
            f"got {z.dtype}"
        )
    if z.dim() != 2:
        raise ValueError(f"{name} must have shape (batch_size, dim), got {tuple(z.shape)}")
    if not allow_empty and (z.shape[0] == 0 or z.shape[1] == 0):
        raise ValueError(f"{name} must not be empty, got shape {tuple(z.shape)}")


def check_batched_matrices(x: object, name: str = "x") -> None:
    """Check that ``x`` is a floating-point tensor of shape (..., n, k)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} must have a floating-point dtype (float16, bfloat16, float32 or float64), "
            f"got {x.dtype}"
        )
    if x.dim() < 2:
        raise ValueError(f"{name} must have shape (..., n, k), got {tuple(x.shape)}")


def check_scale_tensor(
    a: torch.Tensor, name: str, x: torch.Tensor, values: bool = True
) -> torch.Tensor:
    """A tensor-valued scale of the (…, n, k) matrices ``x``: real (not bool or complex),
    broadcastable to the batch shape (…), and — when ``values`` (one host read) — finite and
    ≥ 0, the checks a Python number gets. Returns it detached, in ``x``'s dtype and device,
    expanded to the batch shape."""
    if a.dtype == torch.bool or a.dtype.is_complex:
        raise TypeError(f"{name} must be a real number or a real tensor, got a tensor of {a.dtype}")
    batch = tuple(x.shape[:-2])
    try:
        out = a.detach().to(dtype=x.dtype, device=x.device).expand(batch)
    except RuntimeError:
        raise ValueError(
            f"{name} must be a number or a tensor broadcastable to the batch shape {batch}, got "
            f"a tensor of shape {tuple(a.shape)}"
        ) from None
    if values and a.numel():
        flat = a.detach().flatten()
        bad = ~(torch.isfinite(flat) & (flat >= 0))
        if bool(bad.any()):
            raise ValueError(
                f"{name} must be finite and >= 0 in every entry, got {float(flat[bad][0])}"
            )
    return out


def check_finite(z: torch.Tensor, name: str = "embeddings") -> None:
    """Raise if ``z`` holds NaN or inf (one host sync on CUDA)."""
    finite = torch.isfinite(z)
    if not bool(finite.all()):
        where = ""
        if finite.dim() == 2:
            where = f" (first in row {int((~finite.all(1)).nonzero()[0, 0])})"
        raise ValueError(f"{name} must be finite, got NaN or inf values{where}")


def check_finite_if(check: bool | None, *tensors: tuple[torch.Tensor | None, str]) -> None:
    """``check_finite`` on each ``(tensor, name)`` pair (None skipped) when
    ``resolve_check(check, first tensor)`` says so: by default on CPU, on CUDA only when asked."""
    present = [(t, n) for t, n in tensors if t is not None]
    if present and resolve_check(check, present[0][0]):
        for t, n in present:
            check_finite(t, n)


def check_labels(labels: object, batch_size: int, name: str = "labels") -> None:
    """Check that ``labels`` is an integer tensor of shape (batch_size,)."""
    if labels is None:
        raise ValueError(f"{name} are required, got None")
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"{name} must have an integer dtype, got {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != batch_size:
        raise ValueError(
            f"{name} must have shape ({batch_size},) to match the embeddings, "
            f"got {tuple(labels.shape)}"
        )


def _is_bool(value: object) -> bool:
    import numpy as np

    return isinstance(value, (bool, np.bool_))  # numpy's bool too (NumPy 2 names it "bool")


def _finite(value: numbers.Real) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int beyond float's range
        return False


def check_number(value: object, name: str, what: str = "a finite number") -> float:
    """Check that ``value`` is a finite real number (not a bool, str or tensor); return a float.

    numpy scalars are accepted; a bool is refused (``True`` is not a margin), as is NaN/inf.
    """
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r}")
    if not _finite(value):
        raise ValueError(f"{name} must be {what}, got {value}")
    return float(value)


def check_positive(value: object, name: str) -> float:
    """Check that ``value`` is a finite real number > 0 and return it as a float."""
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__}")
    if not _finite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


def check_nonnegative(value: object, name: str) -> float:
    """Check that ``value`` is a finite real number >= 0 and return it as a float."""
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a non-negative number, got {type(value).__name__}")
    if not _finite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def check_int(value: object, name: str, minimum: int | None = None) -> int:
    """Check that ``value`` is an int (not a bool or float) >= ``minimum``; return it."""
    if _is_bool(value) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def check_flag(value: object, name: str) -> bool:
    """Check that ``value`` is a bool (``"False"`` or ``0`` would silently mean something else)."""
    if not _is_bool(value):
        raise TypeError(f"{name} must be a bool (True or False), got {type(value).__name__} "
                        f"{value!r}")
    return bool(value)


def check_optional_flag(value: object, name: str) -> bool | None:
    """``check_flag`` that also lets ``None`` through (the classes' ``check=None`` default)."""
    return None if value is None else check_flag(value, name)


def check_compute_dtype(value: object, name: str = "compute_dtype") -> torch.dtype | None:
    """``None`` (compute in the input's working dtype), ``torch.float32`` or ``torch.float64``."""
    if value is not None and value not in (torch.float32, torch.float64):
        raise TypeError(
            f"{name} must be None, torch.float32 or torch.float64, got "
            f"{type(value).__name__ if not isinstance(value, torch.dtype) else 'dtype'} {value!r}"
        )
    return value


def check_choice(value: object, name: str, choices: Iterable[str]) -> str:
    """Check that ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def resolve_eps_sq(eps: float | None, eps_sq: float | None, default_eps_sq: float = 0.5) -> float:
    """Turn the two ways of naming the precision into one number, ε².

    ``eps`` is the paper's ε (distortion); ``eps_sq`` is ε², which is what the MCR² reference
    code and the official ACL code call ``eps``. At most one may be given.

    ε² must lie in [``EPS_SQ_MIN``, ``EPS_SQ_MAX``] = [1e-30, 1e30] (ε in [1e-15, 1e15]), the
    range in which the Gram scale d/(m·ε²) neither overflows nor underflows in float32; an ε
    whose square leaves it (``eps=1e-200`` squares to 0.0) is refused here, in the constructor of
    every class that takes ε, under the name the caller used.
    """
    if eps is not None and eps_sq is not None:
        raise ValueError(
            f"give either eps (ε) or eps_sq (ε²), not both; got eps={eps}, eps_sq={eps_sq}"
        )
    if eps is not None:
        eps = check_positive(eps, "eps")
        sq = eps * eps
        if not EPS_SQ_MIN <= sq <= EPS_SQ_MAX:
            raise ValueError(
                f"eps must lie in [{math.sqrt(EPS_SQ_MIN):g}, {math.sqrt(EPS_SQ_MAX):g}] so that "
                f"eps**2 and the scale d/(m·eps**2) stay finite and non-zero in float32; got "
                f"eps={eps:g} (eps**2 = {sq:g})"
            )
        return sq
    if eps_sq is not None:
        eps_sq = check_positive(eps_sq, "eps_sq")
        if not EPS_SQ_MIN <= eps_sq <= EPS_SQ_MAX:
            raise ValueError(
                f"eps_sq must lie in [{EPS_SQ_MIN:g}, {EPS_SQ_MAX:g}] so that the scale "
                f"d/(m·eps_sq) stays finite and non-zero in float32; got eps_sq={eps_sq:g}"
            )
        return eps_sq
    return default_eps_sq


def resolve_check(check: bool | None, tensor: torch.Tensor) -> bool:
    """The classes' ``check=None`` default: validate where it is free (CPU), not on CUDA.

    The finiteness / factorisation check reads a flag back to the host; on CPU that costs
    nothing, on CUDA it is a sync per step, so there the classes skip it unless asked
    (``check=True``) and a NaN propagates into the loss instead.
    """
    check = check_optional_flag(check, "check")
    return tensor.device.type == "cpu" if check is None else check


def check_ref(
    ref_emb: torch.Tensor | None,
    ref_labels: torch.Tensor | None,
    embeddings: torch.Tensor,
    *,
    same_dtype: bool = False,
    allow_empty: bool = False,
) -> None:
    """Check a reference set against the batch: given together, (n_ref, dim) with the batch's
    dim, integer labels of shape (n_ref,), on the embeddings' device (and of their dtype when
    ``same_dtype``, for code that hands both to one PML distance)."""
    if (ref_emb is None) != (ref_labels is None):
        raise ValueError(
            "ref_emb and ref_labels must be given together, got "
            f"ref_emb={'None' if ref_emb is None else 'a tensor'}, "
            f"ref_labels={'None' if ref_labels is None else 'a tensor'}"
        )
    if ref_emb is None:
        return
    check_embeddings(ref_emb, "ref_emb", allow_empty=allow_empty)
    check_labels(ref_labels, ref_emb.shape[0], name="ref_labels")
    if ref_emb.shape[1] != embeddings.shape[1]:
        raise ValueError(
            f"ref_emb must have dim {embeddings.shape[1]} like the embeddings, "
            f"got {ref_emb.shape[1]}"
        )
    if ref_emb.device != embeddings.device:
        raise ValueError(
            f"ref_emb must be on the embeddings' device ({embeddings.device}), "
            f"got {ref_emb.device}"
        )
    if same_dtype and ref_emb.dtype != embeddings.dtype:
        raise TypeError(
            f"ref_emb must have the embeddings' dtype ({embeddings.dtype}), got {ref_emb.dtype}"
        )


def check_no_indices_tuple(indices_tuple: object, owner: str) -> None:
    """Refuse an ``indices_tuple`` with a message naming the class and why (PML's own check
    says only "not supported"); ``CrossBatchMemory`` always passes one."""
    if indices_tuple is not None:
        raise ValueError(
            f"indices_tuple is not supported by {owner}, which uses every pair of the batch "
            f"itself (so it does not go after a miner or inside CrossBatchMemory): pass "
            f"indices_tuple=None, got {type(indices_tuple).__name__}"
        )


# Safe scaling: the numerics guard that goes with the checks. Squaring a row of 1e30 overflows
# float32 (norm inf, F.normalize then returns 0) and a row of 1e-30 falls below F.normalize's
# 1e-12 clamp (it stays ~1e-30 instead of unit length): both then look like a collapsed batch.
# Dividing by a per-row (or global) power of two first keeps every square in range and is exact.


def _pow2_scale(amax: torch.Tensor) -> torch.Tensor:
    """2^(e−1) ≤ amax < 2^e where amax > 0 and finite, else 1 (detached; exact, never inf: frexp
    reads the exponent, where 2^floor(log2(amax)) rounds up to inf near the float maximum)."""
    amax = amax.detach()
    ok = (amax > 0) & torch.isfinite(amax)
    _, exponent = torch.frexp(torch.where(ok, amax, torch.ones_like(amax)))
    scale = torch.ldexp(torch.ones_like(amax), exponent - 1)
    return torch.where(ok, scale, torch.ones_like(amax))


#: Row norms in this range need no rescaling: every square that matters stays a normal float32
#: (and the norm stays far above F.normalize's 1e-12 clamp), so dividing by a power of two
#: first would change no bit of the normalised rows.
_SAFE_NORM_MIN, _SAFE_NORM_MAX = 2.0**-32, 2.0**32


def rescale_rows(x: torch.Tensor, *, return_norms: bool = False):
    """``x`` with each row divided by a power of two near its largest |entry|.

    Leaves the direction of every row unchanged (so ``F.normalize`` of the result equals the
    exact normalisation of ``x``) and zero rows zero; gradients flow through.

    On CPU, outside ``torch.compile``, it first reads the smallest and largest row norm back
    (free there) and returns ``x`` itself when every non-zero norm lies in [2⁻³², 2³²], where
    the division would change no bit of the normalised rows (a power of two is exact): the
    per-row scale costs a dozen small PyTorch calls, 0.1–0.3 ms per training step on CPU (the
    speed benchmark, 128×512). On CUDA (no host read) and under compilation it always divides.

    With ``return_norms=True`` it returns ``(rows, norms)``: the (…, n, 1) row norms of ``x``
    when it was returned unchanged (computed for the test above, so the caller need not compute
    them again), else None.
    """
    if x.device.type == "cpu" and x.numel() and not torch.compiler.is_compiling():
        norms = torch.linalg.vector_norm(x.detach(), dim=-1, keepdim=True)
        lo, hi = torch.aminmax(norms)  # NaN/inf fail the test below and take the scaled path
        if float(lo) == 0.0:
            # zero rows (padding, masks) stay zero either way: test the others — unless a norm
            # is 0 only because the squares underflowed (|entries| ≲ 1e-23 in float32)
            amax = x.detach().abs().amax(dim=-1, keepdim=True)
            if bool(((norms == 0) & (amax > 0)).any()):
                lo = hi.new_zeros(())
            else:
                lo = torch.where(norms > 0, norms, hi).amin()
        if _SAFE_NORM_MIN <= float(lo) and float(hi) <= _SAFE_NORM_MAX:
            return (x, norms) if return_norms else x
    scaled = x / _pow2_scale(x.abs().amax(dim=-1, keepdim=True))
    return (scaled, None) if return_norms else scaled


def global_scale(*tensors: torch.Tensor) -> torch.Tensor:
    """One power of two near the largest |entry| of all ``tensors`` (detached scalar tensor)."""
    return _pow2_scale(torch.stack([t.detach().abs().amax() for t in tensors]).amax())


def check_gram_scale(x: torch.Tensor, a: float | torch.Tensor, name: str = "z",
                     normalize: bool = False) -> None:
    """Raise if I + a·XXᵀ would overflow x's dtype (then the rate is inf or the factorisation
    fails on inf), naming ``name`` and the way out. One host read-back (of ``a`` when it is a
    tensor, of max|x| when ``normalize`` is False): call it only where the caller checks anyway.

    Bound: every entry of a·XXᵀ, and every partial sum of the factorisation, is at most
    a·k·max|x|² (a·1 for unit rows) times the size n of the matrix.
    """
    a_max = float(a.detach().max()) if isinstance(a, torch.Tensor) else float(a)
    n, k = x.shape[-2], x.shape[-1]
    if normalize:
        bound = a_max * min(n, k)
    else:
        amax = float(x.detach().abs().amax()) if x.numel() else 0.0
        bound = a_max * (amax * amax) * k * min(n, k) if amax else 0.0
    big = torch.finfo(x.dtype).max
    if not bound <= big:  # also catches inf and NaN
        raise ValueError(
            f"{name} is too large for {x.dtype} with normalize={normalize}: the scaled Gram "
            f"matrix a·XXᵀ reaches {bound:.3g} (a = {a_max:.3g}), beyond {big:.3g}; pass float64, "
            f"normalize the rows or use a larger eps_sq"
        )
