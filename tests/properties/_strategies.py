"""Shared hypothesis strategies: small matrices (the properties run 500 examples each inside the CI
budget), from "anything a float can hold" down to well-spread random batches."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

#: values a user's batch may hold that are hard on the numerics
SPECIAL = [0.0, -0.0, 1e-45, 1e-38, 1e-30, 1e-12, 1.0, -1.0, 1e12, 1e30, 3e38, -3e38,
           float("nan"), float("inf"), float("-inf")]


@st.composite
def any_matrix(draw, max_rows: int = 6, max_cols: int = 5):
    """(m, d) float32 or float64 tensor of arbitrary values: NaN, ±inf, subnormal, huge, tiny."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = (draw(st.integers(1, max_rows)), draw(st.integers(1, max_cols)))
    width = 32 if dtype == np.float32 else 64
    elements = st.one_of(
        st.floats(width=width, allow_nan=True, allow_infinity=True),
        st.sampled_from(SPECIAL).map(lambda v: float(dtype(v))),
    )
    return torch.from_numpy(draw(hnp.arrays(dtype, shape, elements=elements)))


def labels_for(m: int, max_classes: int = 3):
    return hnp.arrays(np.int64, (m,), elements=st.integers(0, max_classes - 1)).map(
        torch.from_numpy
    )


@st.composite
def spread_batch(draw, min_rows: int = 2, max_rows: int = 8, max_cols: int = 6,
                 dtype=torch.float64):
    """A random Gaussian batch (seeded by hypothesis), at a drawn magnitude, with labels."""
    seed = draw(st.integers(0, 2**31 - 1))
    m = draw(st.integers(min_rows, max_rows))
    d = draw(st.integers(1, max_cols))
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(m, d, generator=g, dtype=torch.float64)
    n_classes = draw(st.integers(1, 3))
    labels = torch.randint(0, n_classes, (m,), generator=g)
    return z.to(dtype), labels, g


def rotation(d: int, g: torch.Generator) -> torch.Tensor:
    """A random orthogonal d×d matrix (QR of a Gaussian, signs fixed), float64."""
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, 1.0)
