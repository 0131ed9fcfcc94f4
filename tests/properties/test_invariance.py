"""Invariances and the float64 eigenvalue reference, over hypothesis-drawn batches: the coding rate
and the diagnostics do not change under a rotation of the embedding space or a reordering of the
batch; the coding rate does not decrease as ε shrinks; the float32 fast path (Cholesky of the
smaller Gram matrix) equals ½·Σ log(1 + a·λ) from float64 eigenvalues."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pml_anticollapse import functional as F
from tests.conftest import TOLERANCES
from tests.properties._strategies import rotation, spread_batch
from tests.reference import ref_coding_rate

pytestmark = pytest.mark.slow  # 500 hypothesis examples per property

MAGNITUDE = st.sampled_from([1e-3, 1.0, 1e3])
EPS_SQ = st.floats(1e-3, 1e3)

SPECTRAL = [F.coding_rate, F.effective_rank, F.rho_spectrum]


def _close(a, b, rtol=1e-9, atol=1e-9):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol, equal_nan=True)


class TestRotationAndOrder:
    @given(batch=spread_batch(), scale=MAGNITUDE, normalize=st.booleans())
    def test_rotation(self, batch, scale, normalize):
        z, _, g = batch
        z = z * scale
        q = rotation(z.shape[1], g)
        for fn in SPECTRAL:
            _close(fn(z @ q, normalize=normalize), fn(z, normalize=normalize))

    @given(batch=spread_batch(), scale=MAGNITUDE, normalize=st.booleans())
    def test_batch_order(self, batch, scale, normalize):
        z, _, g = batch
        z = z * scale
        perm = torch.randperm(z.shape[0], generator=g)
        for fn in SPECTRAL:
            _close(fn(z[perm], normalize=normalize), fn(z, normalize=normalize))

    @given(batch=spread_batch(min_rows=3))
    def test_singular_values_and_ratio(self, batch):
        z, labels, g = batch
        q, perm = rotation(z.shape[1], g), torch.randperm(z.shape[0], generator=g)
        s = F.singular_value_spectrum(z)
        _close(F.singular_value_spectrum(z @ q), s)
        _close(F.singular_value_spectrum(z[perm]), s)
        r = F.intra_inter_distance_ratio(z, labels)
        _close(F.intra_inter_distance_ratio(z @ q, labels), r, rtol=1e-7, atol=1e-9)
        _close(F.intra_inter_distance_ratio(z[perm], labels[perm]), r, rtol=1e-7, atol=1e-9)

    @given(batch=spread_batch(), eps_sq=EPS_SQ)
    def test_rate_reduction(self, batch, eps_sq):
        z, labels, g = batch
        q, perm = rotation(z.shape[1], g), torch.randperm(z.shape[0], generator=g)
        want = F.coding_rate_reduction(z, labels, eps_sq=eps_sq)
        for got in (F.coding_rate_reduction(z @ q, labels, eps_sq=eps_sq),
                    F.coding_rate_reduction(z[perm], labels[perm], eps_sq=eps_sq)):
            _close(torch.stack(list(got)), torch.stack(list(want)), rtol=1e-8, atol=1e-8)


class TestEpsilon:
    @given(batch=spread_batch(), e1=EPS_SQ, e2=EPS_SQ, normalize=st.booleans())
    def test_rate_does_not_decrease_as_eps_shrinks(self, batch, e1, e2, normalize):
        z, _, _ = batch
        small, large = min(e1, e2), max(e1, e2)
        r_small = F.coding_rate(z, eps_sq=small, normalize=normalize)
        r_large = F.coding_rate(z, eps_sq=large, normalize=normalize)
        assert r_small >= r_large - 1e-10 * max(1.0, abs(r_large.item()))

    @given(eps=st.floats(1e-15, 1e15))
    def test_eps_and_eps_sq_name_the_same_rate(self, eps):
        z = torch.eye(3, dtype=torch.float64)
        _close(F.coding_rate(z, eps=eps), F.coding_rate(z, eps_sq=eps * eps))


class TestFastPathAgainstReference:
    @given(batch=spread_batch(max_rows=8, max_cols=8, dtype=torch.float32), eps_sq=EPS_SQ,
           normalize=st.booleans(), variant=st.sampled_from(["standard", "acl_official"]),
           scale=MAGNITUDE)
    def test_float32_equals_float64_eigenvalues(self, batch, eps_sq, normalize, variant, scale):
        z, _, _ = batch
        z = z * scale
        got = F.coding_rate(z, eps_sq=eps_sq, normalize=normalize, variant=variant)
        assert got.dtype == torch.float32
        # the reference is fed the same (already float32-rounded) input
        want = ref_coding_rate(z, eps_sq=eps_sq, normalize=normalize, variant=variant)
        tol = TOLERANCES[torch.float32]
        torch.testing.assert_close(got.double(), want, rtol=10 * tol["rtol"], atol=tol["atol"])


class TestRowScaling:
    """With normalize=True only the directions count: rows scaled by anything from 1e-150 to
    1e150 (float64) give the same diagnostics, coding rate, spreading terms and Ranked List
    Loss."""

    @given(batch=spread_batch(min_rows=3), exponents=st.lists(st.integers(-150, 150),
                                                              min_size=8, max_size=8))
    def test_diagnostics_and_ranked_list_loss(self, batch, exponents):
        z, labels, _ = batch
        factors = torch.tensor([10.0**e for e in exponents[: z.shape[0]]], dtype=torch.float64)
        x = z * factors[:, None]
        for fn in (F.effective_rank, F.rho_spectrum, F.singular_value_spectrum, F.coding_rate,
                   F.uniformity, F.mean_log_nn_distance):
            _close(fn(x), fn(z), rtol=1e-8, atol=1e-10)
        _close(F.intra_inter_distance_ratio(x, labels),
               F.intra_inter_distance_ratio(z, labels), rtol=1e-8, atol=1e-10)
        u = torch.nn.functional.normalize(z, dim=1)
        dist = torch.cdist(u, u, compute_mode="donot_use_mm_for_euclid_dist")  # a filter only
        if all(bool(((dist - b).abs() > 1e-9).all()) for b in (1.2, 0.8)):
            _close(F.ranked_list_loss(x, labels), F.ranked_list_loss(z, labels))
