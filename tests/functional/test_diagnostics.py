"""Collapse diagnostics against direct float64 formulas."""

from __future__ import annotations

import math

import pytest
import torch

from pml_anticollapse.functional import (
    effective_rank,
    intra_inter_distance_ratio,
    rho_spectrum,
    singular_value_spectrum,
)
from tests.reference import ref_effective_rank


def _ref_rho(z):
    s = torch.linalg.svdvals(z.double() / z.double().norm(dim=1, keepdim=True)).tolist()
    total, n = sum(s), len(s)
    return sum((1 / n) * math.log((1 / n) / (v / total)) for v in s)


def _ref_ratio(z, labels):
    z = (z.double() / z.double().norm(dim=1, keepdim=True)).tolist()
    classes = sorted(set(labels.tolist()))
    members = {c: [z[i] for i in range(len(z)) if labels[i] == c] for c in classes}
    dist = lambda a, b: math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))  # noqa: E731
    intra = []
    for rows in members.values():
        pairs = [dist(a, b) for i, a in enumerate(rows) for j, b in enumerate(rows) if i != j]
        if pairs:
            intra.append(sum(pairs) / len(pairs))
    centers = [
        [sum(col) / len(rows) for col in zip(*rows, strict=True)] for rows in members.values()
    ]
    inter = [dist(a, b) for i, a in enumerate(centers) for j, b in enumerate(centers) if i != j]
    return (sum(intra) / len(intra)) / (sum(inter) / len(inter))


class TestDiagnostics:
    @pytest.mark.parametrize("shape", [(20, 8), (8, 20)], ids=str)
    def test_effective_rank(self, shape, dtype):
        z = torch.randn(shape, dtype=dtype)
        assert effective_rank(z).item() == pytest.approx(ref_effective_rank(z), rel=1e-5)

    def test_effective_rank_gradient_is_finite_when_rank_deficient(self):
        # 0·log 0 terms contribute nothing to the value and nothing to the gradient; reference:
        # the entropy over the non-zero singular values only, by autograd in float64
        z = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
        z = (z + 0.0).requires_grad_(True)
        (grad,) = torch.autograd.grad(effective_rank(z), z)

        def reference(t):
            s = torch.linalg.svdvals(t / t.norm(dim=1, keepdim=True))
            p = s / s.sum()
            p = p[p > 1e-12]
            return torch.exp(-(p * p.log()).sum())

        (expected,) = torch.autograd.grad(reference(z), z)
        assert torch.isfinite(grad).all()
        torch.testing.assert_close(grad, expected, rtol=1e-8, atol=1e-10)

    def test_intra_inter_ratio_of_nearly_collapsed_classes(self):
        # 40 rows per class within 1e-4 of their class direction: float32 must still see the
        # small intra-class distances (the matrix-product form of cdist loses them)
        g = torch.Generator().manual_seed(0)
        centers = torch.randn(3, 64, generator=g)
        z = (centers.repeat_interleave(40, 0) + 1e-4 * torch.randn(120, 64, generator=g))
        labels = torch.arange(3).repeat_interleave(40)
        got = intra_inter_distance_ratio(z, labels).item()
        assert got == pytest.approx(_ref_ratio(z, labels), rel=1e-2)

    def test_effective_rank_bounds(self):
        rank_one = torch.randn(1, 6).expand(10, 6)
        assert effective_rank(rank_one).item() == pytest.approx(1.0, abs=1e-5)
        assert effective_rank(torch.eye(7)).item() == pytest.approx(7.0, rel=1e-6)
        assert effective_rank(torch.zeros(4, 3)).item() == pytest.approx(1.0)

    @pytest.mark.parametrize("shape", [(30, 6), (6, 30)], ids=str)
    def test_rho_spectrum(self, shape, dtype):
        z = torch.randn(shape, dtype=dtype)
        assert rho_spectrum(z).item() == pytest.approx(_ref_rho(z), rel=1e-4)

    def test_rho_is_large_for_collapse_and_finite(self):
        collapsed = torch.randn(1, 6).expand(10, 6).contiguous()
        value = rho_spectrum(collapsed)
        assert torch.isfinite(value) and value.item() > 5 * rho_spectrum(torch.randn(10, 6)).item()

    def test_intra_inter_ratio(self, dtype):
        z = torch.randn(24, 5, dtype=dtype)
        y = torch.tensor([0, 1, 2, 3] * 6)
        y[0] = 9  # a singleton class: skipped in the intra term, used in the inter term
        assert intra_inter_distance_ratio(z, y).item() == pytest.approx(_ref_ratio(z, y), rel=1e-5)

    def test_spectrum_is_sorted_and_of_normalised_rows(self):
        s = singular_value_spectrum(torch.randn(12, 4) * 10)
        assert torch.all(s[:-1] >= s[1:])
        assert (s**2).sum().item() == pytest.approx(12.0, rel=1e-5)  # Frobenius² = m unit rows

    def test_gradcheck(self):
        z = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
        y = torch.tensor([0, 0, 1, 1, 2, 2])
        assert torch.autograd.gradcheck(effective_rank, (z,))
        assert torch.autograd.gradcheck(rho_spectrum, (z,))
        assert torch.autograd.gradcheck(lambda t: intra_inter_distance_ratio(t, y), (z,))

    def test_bad_input(self):
        with pytest.raises(ValueError, match=r"z must have shape \(batch_size, dim\)"):
            effective_rank(torch.randn(2, 3, 4))
        with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
            intra_inter_distance_ratio(torch.randn(4, 3), torch.arange(3))


class TestHardening:
    """Issue 14: non-finite input is a ValueError; extreme magnitudes do not look collapsed."""

    @pytest.mark.parametrize("fn", [effective_rank, rho_spectrum, singular_value_spectrum])
    @pytest.mark.parametrize("bad", [float("nan"), float("inf")])
    def test_non_finite_input_raises(self, fn, bad):
        z = torch.randn(5, 3)
        z[4, 2] = bad
        with pytest.raises(ValueError, match=r"z must be finite.*\(first in row 4\)"):
            fn(z)

    def test_ratio_non_finite_input_raises(self):
        z = torch.randn(4, 3)
        z[1, 0] = float("nan")
        with pytest.raises(ValueError, match="z must be finite"):
            intra_inter_distance_ratio(z, torch.tensor([0, 0, 1, 1]))

    @pytest.mark.parametrize("scale", [1e30, 1e-30, 1e-40])
    def test_extreme_magnitudes_match_the_reference(self, scale):
        z = torch.randn(8, 5, dtype=torch.float64)
        z[::2] *= 1e6  # mixed row norms too
        x = (z * scale).float()
        base = x.double() / scale  # the same directions, at a magnitude the reference can take
        assert effective_rank(x).item() == pytest.approx(ref_effective_rank(base), rel=1e-4)
        assert rho_spectrum(x).item() == pytest.approx(_ref_rho(base), rel=1e-4, abs=1e-5)
        labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        got = intra_inter_distance_ratio(x, labels).item()
        assert got == pytest.approx(_ref_ratio(base, labels), rel=1e-4)

    @pytest.mark.parametrize("scale", [1e30, 1e-30])
    def test_unnormalised_spectrum_at_extreme_magnitudes(self, scale):
        z = torch.randn(6, 4, dtype=torch.float64)
        want = torch.linalg.eigvalsh(z.T @ z).flip(0).clamp_min(0).sqrt() * scale
        got = singular_value_spectrum((z * scale).float(), normalize=False)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=0.0)

    def test_overflowing_spectrum_is_refused(self):
        with pytest.raises(ValueError, match=r"z's singular values must be finite in torch"):
            singular_value_spectrum(torch.full((2, 2), 3e38), normalize=False)

    def test_normalize_must_be_a_bool(self):
        with pytest.raises(TypeError, match=r"normalize must be a bool \(True or False\), got str"):
            effective_rank(torch.eye(3), normalize="False")
