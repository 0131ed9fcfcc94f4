"""The one place input validation lives.

Every check raises ``ValueError`` or ``TypeError`` (never ``assert``, which ``python -O`` strips)
with a message that names the argument, what was expected and what arrived.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


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


def check_finite(z: torch.Tensor, name: str = "embeddings") -> None:
    """Raise if ``z`` holds NaN or inf (one host sync on CUDA)."""
    if not bool(torch.isfinite(z).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf values")


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


def check_positive(value: object, name: str) -> float:
    """Check that ``value`` is a finite real number > 0 and return it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


def check_nonnegative(value: object, name: str) -> float:
    """Check that ``value`` is a finite real number >= 0 and return it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a non-negative number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def check_choice(value: object, name: str, choices: Iterable[str]) -> str:
    """Check that ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value  # type: ignore[return-value]


def resolve_eps_sq(eps: float | None, eps_sq: float | None, default_eps_sq: float = 0.5) -> float:
    """Turn the two ways of naming the precision into one number, ε².

    ``eps`` is the paper's ε (distortion); ``eps_sq`` is ε², which is what the MCR² reference
    code and the official ACL code call ``eps``. At most one may be given.
    """
    if eps is not None and eps_sq is not None:
        raise ValueError(
            f"give either eps (ε) or eps_sq (ε²), not both; got eps={eps}, eps_sq={eps_sq}"
        )
    if eps is not None:
        return check_positive(eps, "eps") ** 2
    if eps_sq is not None:
        return check_positive(eps_sq, "eps_sq")
    return default_eps_sq


def resolve_check(check: bool | None, tensor: torch.Tensor) -> bool:
    """The classes' ``check=None`` default: validate where it is free (CPU), not on CUDA.

    The finiteness / factorisation check reads a flag back to the host; on CPU that costs
    nothing, on CUDA it is a sync per step, so there the classes skip it unless asked
    (``check=True``) and a NaN propagates into the loss instead.
    """
    return tensor.device.type == "cpu" if check is None else bool(check)
