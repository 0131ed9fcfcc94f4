"""coding_rate / coding_rate_reduction against float64 eigenvalue and loop references."""

from __future__ import annotations

import math

import pytest
import torch

from pml_anticollapse.functional import coding_rate, coding_rate_reduction
from tests.conftest import TOLERANCES
from tests.reference import ref_coding_rate, ref_rate_reduction

SHAPES = [(12, 40), (40, 12), (16, 16), (1, 5), (7, 1)]  # m<d, m>d, square, single row, 1-d


def _close(value, expected, dtype):
    torch.testing.assert_close(value.double(), expected, **TOLERANCES[dtype])


class TestCodingRateValues:
    @pytest.mark.parametrize("shape", SHAPES, ids=str)
    @pytest.mark.parametrize("eps_sq", [0.5, 0.05])
    def test_matches_eigen_reference(self, shape, eps_sq, dtype, device):
        z = torch.randn(shape, dtype=dtype, device=device)
        out = coding_rate(z, eps_sq=eps_sq)
        assert out.dtype == dtype
        _close(out.cpu(), ref_coding_rate(z.cpu(), eps_sq), dtype)

    def test_unnormalised(self, dtype):
        z = 0.3 * torch.randn(9, 30, dtype=dtype)
        _close(coding_rate(z, normalize=False), ref_coding_rate(z, normalize=False), dtype)

    def test_eps_is_the_square_root_of_eps_sq(self):
        z = torch.randn(10, 20, dtype=torch.float64)
        torch.testing.assert_close(coding_rate(z, eps=0.5), coding_rate(z, eps_sq=0.25))
        torch.testing.assert_close(coding_rate(z), coding_rate(z, eps_sq=0.5))  # default ε²=0.5

    def test_official_variant_scales_by_m_over_d(self, dtype):
        z = torch.randn(45, 64, dtype=dtype)
        out = coding_rate(z, eps_sq=0.5, variant="acl_official")
        _close(out, ref_coding_rate(z, 0.5, variant="acl_official"), dtype)
        # it is *not* the standard rate unless m == d
        assert not torch.allclose(out, coding_rate(z, eps_sq=0.5))

    def test_official_figures_of_the_reference_card(self):
        # 45 random unit proxies in 512-d → R ≈ 3.6; collapsed → R ≈ 1.1
        torch.manual_seed(1)
        p = torch.randn(45, 512, dtype=torch.float64)
        assert coding_rate(p, variant="acl_official").item() == pytest.approx(3.6, abs=0.1)
        # collapsed: PᵀP has one eigenvalue m, so R = ½·log(1 + m/(d·ε²)·m) exactly (≈ 1.09)
        collapsed = p[:1].expand(45, 512)
        exact = 0.5 * math.log1p(45 * 45 / (512 * 0.5))
        torch.testing.assert_close(
            coding_rate(collapsed, variant="acl_official"),
            torch.tensor(exact, dtype=torch.float64),
            **TOLERANCES[torch.float64],
        )

    def test_mask_equals_indexing(self, dtype):
        z = torch.randn(20, 8, dtype=dtype)
        mask = torch.rand(20) > 0.4
        _close(coding_rate(z, mask=mask), ref_coding_rate(z[mask]), dtype)

    def test_non_finite_values_in_masked_out_rows_do_not_count(self):
        z = torch.randn(6, 4, dtype=torch.float64)
        mask = torch.tensor([True, True, False, True, False, True])
        z[2, 0], z[4, 1] = float("inf"), float("nan")
        z.requires_grad_(True)
        value = coding_rate(z, mask=mask)
        torch.testing.assert_close(value, ref_coding_rate(z.detach()[mask]))
        (grad,) = torch.autograd.grad(value, z)
        assert torch.isfinite(grad).all() and not grad[~mask].any()


class TestClosedForms:
    def test_all_zero_input_has_zero_rate(self, dtype):
        z = torch.zeros(6, 10, dtype=dtype, requires_grad=True)
        out = coding_rate(z)
        assert out.item() == 0.0
        out.backward()
        assert torch.equal(z.grad, torch.zeros_like(z))

    @pytest.mark.parametrize("m,d", [(8, 32), (64, 4)])
    def test_fully_collapsed_batch(self, m, d, dtype):
        # ZZᵀ = 11ᵀ has one eigenvalue m: R = ½·log(1 + d/ε²)
        z = torch.randn(1, d, dtype=dtype).expand(m, d) * torch.rand(m, 1, dtype=dtype).add(0.5)
        expected = torch.tensor(0.5 * math.log1p(d / 0.5), dtype=dtype)
        torch.testing.assert_close(coding_rate(z), expected, **TOLERANCES[dtype])

    def test_orthonormal_batch(self, dtype):
        # m orthonormal rows: ZZᵀ = I → R = ½·m·log(1 + d/(m·ε²))
        q, _ = torch.linalg.qr(torch.randn(32, 8, dtype=dtype))
        z = q.T
        want = torch.tensor(0.5 * 8 * math.log1p(32 / (8 * 0.5)), dtype=dtype)
        torch.testing.assert_close(coding_rate(z), want, **TOLERANCES[dtype])


class TestInvariances:
    @pytest.mark.parametrize("shape", [(10, 24), (24, 10)], ids=str)
    def test_rotation_of_the_embedding_space(self, shape):
        z = torch.randn(shape, dtype=torch.float64)
        q, _ = torch.linalg.qr(torch.randn(shape[1], shape[1], dtype=torch.float64))
        torch.testing.assert_close(coding_rate(z @ q), coding_rate(z), rtol=1e-12, atol=1e-12)

    def test_permutation_of_the_batch(self):
        z = torch.randn(30, 12, dtype=torch.float64)
        y = torch.randint(0, 4, (30,))
        perm = torch.randperm(30)
        torch.testing.assert_close(coding_rate(z[perm]), coding_rate(z))
        a, b = coding_rate_reduction(z, y), coding_rate_reduction(z[perm], y[perm])
        torch.testing.assert_close(torch.stack(a), torch.stack(b))

    def test_scale_of_rows_does_not_matter_when_normalised(self):
        z = torch.randn(10, 6, dtype=torch.float64)
        torch.testing.assert_close(coding_rate(z * torch.rand(10, 1) * 5 + 0.0), coding_rate(z))


class TestRateReduction:
    @pytest.mark.parametrize("m,d", [(24, 40), (60, 8)])
    def test_matches_mcr2_loop_reference(self, m, d, dtype):
        z = torch.randn(m, d, dtype=dtype)
        y = torch.randint(0, 5, (m,))
        out = coding_rate_reduction(z, y, eps_sq=0.5)
        for got, want in zip(out, ref_rate_reduction(z, y, 0.5), strict=True):
            _close(got, want, dtype)

    def test_absent_classes_contribute_nothing(self, dtype):
        z = torch.randn(20, 10, dtype=dtype)
        y = torch.tensor([0, 3, 7] * 6 + [3, 0])
        with_num = coding_rate_reduction(z, y, num_classes=12)
        without = coding_rate_reduction(z, y)
        for got, want in zip(with_num, without, strict=True):
            _close(got, want.double(), dtype)

    def test_one_sample_per_class_and_one_class(self):
        z = torch.randn(6, 9, dtype=torch.float64)
        for y in (torch.arange(6), torch.zeros(6, dtype=torch.long)):
            pairs = zip(coding_rate_reduction(z, y), ref_rate_reduction(z, y), strict=True)
            for got, want in pairs:
                torch.testing.assert_close(got, want)

    def test_single_class_has_zero_reduction(self):
        z = torch.randn(15, 7, dtype=torch.float64)
        out = coding_rate_reduction(z, torch.full((15,), 2))
        assert abs(out.delta_r.item()) < 1e-12


class TestGradcheck:
    @pytest.mark.parametrize("shape", [(5, 9), (9, 5)], ids=str)
    @pytest.mark.parametrize("variant", ["standard", "acl_official"])
    def test_coding_rate(self, shape, variant):
        z = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t: coding_rate(t, variant=variant), (z,))

    def test_coding_rate_masked_and_unnormalised(self):
        z = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
        mask = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
        assert torch.autograd.gradcheck(lambda t: coding_rate(t, mask=mask, normalize=False), (z,))

    @pytest.mark.parametrize("shape", [(8, 12), (14, 3)], ids=str)
    def test_rate_reduction(self, shape):
        z = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        y = torch.arange(shape[0]) % 3
        assert torch.autograd.gradcheck(
            lambda t: torch.stack(tuple(coding_rate_reduction(t, y, num_classes=5))), (z,)
        )

    def test_gradient_equals_logdet_autograd(self):
        from tests.reference import ref_coding_rate_grad

        for shape in [(10, 50), (50, 10)]:
            z = torch.randn(shape, dtype=torch.float64, requires_grad=True)
            coding_rate(z).backward()
            torch.testing.assert_close(z.grad, ref_coding_rate_grad(z), rtol=1e-10, atol=1e-12)


class TestAutocast:
    def test_bf16_autocast_on_cpu_is_finite_and_close(self):
        # Embeddings produced under autocast are bf16; the rate is still computed in float32.
        layer = torch.nn.Linear(32, 64)
        x = torch.randn(96, 32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z = layer(x)
            assert z.dtype == torch.bfloat16
            out = coding_rate(z)
        assert out.dtype == torch.float32 and torch.isfinite(out)
        # the bf16 embeddings themselves, measured in float32: the float64 reference on the
        # same rounded rows (a bf16 Gram product would be ~6e-4 off)
        torch.testing.assert_close(
            out.double(), ref_coding_rate(z.detach()), **TOLERANCES[torch.float32]
        )
        # and within bf16 rounding of the float32 network's rate
        torch.testing.assert_close(
            out.double(), ref_coding_rate(layer(x)), **TOLERANCES[torch.bfloat16]
        )
        grad = torch.autograd.grad(out, layer.weight)[0]
        assert torch.isfinite(grad).all()

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    def test_fp16_autocast_on_cuda(self):
        layer = torch.nn.Linear(32, 64).cuda()
        x = torch.randn(96, 32, device="cuda")
        with torch.autocast("cuda", dtype=torch.float16):
            z = layer(x)
            out = coding_rate(z)
        assert out.dtype == torch.float32 and torch.isfinite(out)
        torch.testing.assert_close(
            out.double().cpu(), ref_coding_rate(z.detach().cpu()), **TOLERANCES[torch.float32]
        )


class TestBadInput:
    @pytest.mark.parametrize(
        "z,exc,match",
        [
            (
                torch.randn(3, 4, 5),
                ValueError,
                r"z must have shape \(batch_size, dim\), got \(3, 4, 5\)",
            ),
            (torch.randn(4), ValueError, r"z must have shape \(batch_size, dim\), got \(4,\)"),
            (torch.randn(0, 4), ValueError, r"z must not be empty, got shape \(0, 4\)"),
            (torch.ones(3, 4, dtype=torch.long), TypeError, "z must have a floating-point dtype"),
            ([[1.0, 2.0]], TypeError, "z must be a torch.Tensor, got list"),
        ],
    )
    def test_embeddings(self, z, exc, match):
        with pytest.raises(exc, match=match):
            coding_rate(z)

    @pytest.mark.parametrize("bad", [float("nan"), float("inf")])
    def test_non_finite(self, bad):
        z = torch.randn(5, 4)
        z[2, 1] = bad
        with pytest.raises(ValueError, match="z must be finite, got NaN or inf values"):
            coding_rate(z)
        with pytest.raises(ValueError, match="z must be finite"):
            coding_rate_reduction(z, torch.arange(5) % 2)

    @pytest.mark.parametrize("kwargs,match", [
        (dict(eps=0.0), "eps must be a finite number > 0, got 0.0"),
        (dict(eps_sq=-1.0), "eps_sq must be a finite number > 0, got -1.0"),
        (dict(eps=0.5, eps_sq=0.25), "give either eps"),
        (
            dict(variant="official"),
            "variant must be one of 'standard', 'acl_official', got 'official'",
        ),
    ])
    def test_arguments(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            coding_rate(torch.randn(4, 3), **kwargs)

    def test_labels(self):
        z = torch.randn(6, 3)
        with pytest.raises(ValueError, match=r"labels must have shape \(6,\) to match"):
            coding_rate_reduction(z, torch.arange(5))
        with pytest.raises(TypeError, match="labels must have an integer dtype"):
            coding_rate_reduction(z, torch.rand(6))
        with pytest.raises(ValueError, match="labels are required"):
            coding_rate_reduction(z, None)
        with pytest.raises(ValueError, match=r"labels must lie in \[0, num_classes=3\)"):
            coding_rate_reduction(z, torch.arange(6), num_classes=3)
