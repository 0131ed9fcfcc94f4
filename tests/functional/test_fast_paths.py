"""The two per-call shortcuts of the coding rate on CPU, each against the path it short-cuts.

- ``rescale_rows`` returns its input unchanged when every non-zero row norm lies in
  [2⁻³², 2³²]: the value and the gradient must then be *bit for bit* those of the rescaled path
  (dividing by a power of two is exact), which the test forces by emptying the safe range.
- ``factor_order`` runs a few Cholesky sizes inside a larger block-diagonal matrix
  [[M, 0], [0, I]] (on CPU with MKL): the factor must be that of M (float64 reference, another
  algorithm: the eigen-decomposition), a failed factorisation must report the same pivot, and
  the rate at those sizes must equal the float64 reference.
"""

from __future__ import annotations

import importlib

import pytest
import torch

import pml_anticollapse.functional._checks as checks
from pml_anticollapse.functional import coding_rate
from pml_anticollapse.functional.coding_rate import factor_order, padded_cholesky_ex
from tests.reference import ref_coding_rate

cr = importlib.import_module("pml_anticollapse.functional.coding_rate")


def _value_and_grad(z: torch.Tensor, **kwargs):
    z = z.clone().requires_grad_(True)
    out = coding_rate(z, **kwargs)
    (g,) = torch.autograd.grad(out, z)
    return out.detach(), g


def _force_rescaling(monkeypatch):
    monkeypatch.setattr(checks, "_SAFE_NORM_MIN", float("inf"))


class TestRescaleShortcut:
    @pytest.mark.parametrize("dtype, tiny", [(torch.float32, 1e-30), (torch.float64, 1e-170)])
    def test_a_row_whose_squares_underflow_is_not_a_zero_row(self, dtype, tiny):
        # its norm computes as 0, like a zero row's; it must still be rescaled, not clamped
        gen = torch.Generator().manual_seed(0)
        base = torch.randn(6, 10, generator=gen, dtype=torch.float64)
        zz = base.clone()
        zz[0] *= tiny
        zz = zz.to(dtype)
        assert float(torch.linalg.vector_norm(zz[0])) == 0.0
        assert checks.rescale_rows(zz) is not zz
        expected = ref_coding_rate(base).item()  # float64 oracle on the unscaled directions
        assert abs(coding_rate(zz).double().item() - expected) <= 1e-6 * expected

    def test_ordinary_rows_are_returned_as_they_are(self):
        x = torch.randn(6, 5)
        x[2] = 0.0  # a zero row does not stop the shortcut
        rows, norms = checks.rescale_rows(x, return_norms=True)
        assert rows is x
        torch.testing.assert_close(norms, x.norm(dim=1, keepdim=True), rtol=0, atol=0)

    @pytest.mark.parametrize("scale", [1e-30, 1e30, 2.0**-33, 2.0**33])
    def test_rows_out_of_range_are_rescaled(self, scale):
        x = torch.randn(6, 5, dtype=torch.float64)
        x[3] *= scale
        rows, norms = checks.rescale_rows(x, return_norms=True)
        assert norms is None
        amax = rows.abs().amax(dim=1)
        assert bool(((amax >= 1.0) & (amax < 2.0)).all()), amax  # 2^(e-1) <= amax < 2^e

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    @pytest.mark.parametrize("m, d", [(12, 40), (40, 12), (128, 512)])
    def test_shortcut_is_bit_identical_to_the_rescaled_path(self, monkeypatch, m, d, dtype):
        gen = torch.Generator().manual_seed(m * d)
        z = (torch.randn(m, d, generator=gen) * 3.7).to(dtype)
        z[1] = 0.0
        z[5] *= 1e-4  # small and large rows, all inside the range
        z[7] *= 1e4
        assert checks.rescale_rows(z) is z  # the shortcut is what is compared
        for eps_sq in (1e-3, 0.5, 10.0):
            fast = _value_and_grad(z, eps_sq=eps_sq)
            with monkeypatch.context() as mp:
                _force_rescaling(mp)
                slow = _value_and_grad(z, eps_sq=eps_sq)
            assert torch.equal(fast[0], slow[0]), eps_sq
            assert torch.equal(fast[1], slow[1]), eps_sq

    def test_masked_rows_keep_the_shortcut_and_the_value(self, monkeypatch):
        z = torch.randn(20, 30)
        mask = torch.arange(20) % 3 != 0
        masked = torch.where(mask[:, None], z, 0.0)
        assert checks.rescale_rows(masked) is masked
        fast = coding_rate(z, mask=mask)
        _force_rescaling(monkeypatch)
        assert torch.equal(fast, coding_rate(z, mask=mask))


def _spd(batch: tuple[int, ...], k: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(*batch, k, 3 * k, generator=gen), dim=-1)
    mat = x @ x.mT * 4.0
    mat.diagonal(dim1=-2, dim2=-1).add_(1.0)
    return mat


class TestPaddedFactorisation:
    @pytest.mark.parametrize(
        "k, order",
        [(64, 64), (104, 104), (105, 136), (128, 136), (129, 129), (255, 255), (256, 264),
         (384, 384), (512, 520), (1024, 1032)],
    )
    def test_orders_on_cpu(self, monkeypatch, k, order):
        monkeypatch.setattr(cr, "_MKL", True)  # the orders are MKL's (any build can run this)
        assert factor_order(k, torch.device("cpu")) == order

    @pytest.mark.parametrize("k", [128, 256, 512])
    def test_no_padding_without_mkl(self, monkeypatch, k):
        monkeypatch.setattr(cr, "_MKL", False)
        assert factor_order(k, torch.device("cpu")) == k

    def test_no_padding_off_cpu(self):
        assert factor_order(128, torch.device("cuda")) == 128
        assert factor_order(512, torch.device("meta")) == 512

    @pytest.mark.parametrize("k", [110, 128, 256])
    def test_factor_is_the_factor_of_the_matrix(self, k):
        mat = _spd((3,), k, seed=k)
        factor, info = padded_cholesky_ex(mat, factor_order(k, mat.device))
        assert factor.shape == (3, k, k) and bool((info == 0).all())
        # L·Lᵀ reproduces M, and log det from the factor equals the eigenvalue sum (float64)
        m64 = mat.double()
        torch.testing.assert_close((factor.double() @ factor.double().mT), m64, rtol=0, atol=2e-5)
        logdet = 2 * factor.double().diagonal(dim1=-2, dim2=-1).log().sum(-1)
        torch.testing.assert_close(
            logdet, torch.linalg.eigvalsh(m64).log().sum(-1), rtol=1e-6, atol=0
        )

    def test_failed_factorisation_reports_the_same_pivot(self):
        mat = _spd((2,), 128, seed=1)
        mat[1, 40, 40] = -5.0  # the 41st pivot of the second matrix fails
        _, info_plain = torch.linalg.cholesky_ex(mat)
        _, info_padded = padded_cholesky_ex(mat, 136)
        assert info_plain.tolist() == info_padded.tolist() and info_padded[1] > 0

    @pytest.mark.parametrize("m, d", [(120, 480), (128, 512), (256, 1024), (4096, 128)])
    def test_rate_at_padded_sizes_matches_the_reference(self, m, d):
        gen = torch.Generator().manual_seed(m + d)
        z = torch.randn(m, d, generator=gen)
        for eps_sq in (1e-2, 0.5):
            expected = ref_coding_rate(z, eps_sq).item()
            got = coding_rate(z, eps_sq=eps_sq).double().item()
            assert abs(got - expected) <= 1e-6 * abs(expected), eps_sq
