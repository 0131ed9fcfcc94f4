"""uniformity / mean_log_nn_distance against float64 loop references, closed forms, invariances,
gradients (gradcheck, coinciding rows) and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from pml_anticollapse.functional import mean_log_nn_distance, uniformity
from tests.conftest import TOLERANCES
from tests.reference_spread import (
    random_rotation,
    ref_mean_log_nn_distance,
    ref_uniformity,
    regular_simplex,
)

SHAPES = [(12, 40), (40, 12), (16, 16), (2, 3), (7, 1)]  # n<d, n>d, square, one pair, 1-d
FUNCTIONS = {"uniformity": uniformity, "koleo": mean_log_nn_distance}
REFERENCES = {"uniformity": ref_uniformity, "koleo": ref_mean_log_nn_distance}


def _close(value, expected, dtype):
    expected = torch.tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(value.detach().double().cpu(), expected, **TOLERANCES[dtype])


class TestUniformityValues:
    @pytest.mark.parametrize("shape", SHAPES, ids=str)
    @pytest.mark.parametrize("t", [2.0, 0.5])
    def test_matches_loop_reference(self, shape, t, dtype, device):
        z = torch.randn(shape, dtype=dtype, device=device)
        out = uniformity(z, t)
        assert out.dtype == dtype and out.dim() == 0
        _close(out, ref_uniformity(z, t), dtype)

    def test_unnormalised(self, dtype):
        z = 0.4 * torch.randn(20, 6, dtype=dtype)
        _close(uniformity(z, 1.5, normalize=False), ref_uniformity(z, 1.5, normalize=False), dtype)

    def test_no_underflow_at_large_temperature_and_distance(self):
        # exp(−t·‖·‖²) underflows to 0 for every pair here (t·‖·‖² > 745): the naive
        # exp().mean().log() gives −log 0 = inf, the logsumexp the right value
        z = 10.0 * torch.randn(10, 4, dtype=torch.float64)
        naive = -torch.pdist(z).pow(2).mul(-50.0).exp().mean().log()
        assert torch.isinf(naive)
        out = uniformity(z, 50.0, normalize=False)
        assert torch.isfinite(out) and out > 745
        _close(out, ref_uniformity(z, 50.0, normalize=False), torch.float64)

    def test_mean_over_pairs_i_lt_j(self):
        # three points on a line at 0, 1, 3: pairs (0,1), (0,2), (1,2) with ‖·‖² = 1, 9, 4
        z = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
        expected = -math.log((math.exp(-1) + math.exp(-9) + math.exp(-4)) / 3)
        torch.testing.assert_close(uniformity(z, 1.0, normalize=False).item(), expected)


class TestKoLeoValues:
    @pytest.mark.parametrize("shape", SHAPES, ids=str)
    @pytest.mark.parametrize("eps", [1e-8, 0.1])
    def test_matches_loop_reference(self, shape, eps, dtype, device):
        z = torch.randn(shape, dtype=dtype, device=device)
        out = mean_log_nn_distance(z, eps)
        assert out.dtype == dtype and out.dim() == 0
        _close(out, ref_mean_log_nn_distance(z, eps), dtype)

    def test_unnormalised(self, dtype):
        z = 3.0 * torch.randn(25, 5, dtype=dtype)
        out = mean_log_nn_distance(z, normalize=False)
        _close(out, ref_mean_log_nn_distance(z, normalize=False), dtype)

    def test_close_neighbours_are_measured_exactly(self):
        # a pair 1e-4 apart among rows of norm ~3: in float32 the Gram form ‖x‖² + ‖y‖² − 2⟨x, y⟩
        # has a rounding error (~1e-6) above the squared distance itself (~1e-8); the explicit
        # difference keeps the distance to float32 precision
        base = torch.randn(6, 8)
        z = torch.cat([base, base[:1] + 1e-4 * torch.randn(1, 8)])
        out = mean_log_nn_distance(z, normalize=False)
        _close(out, ref_mean_log_nn_distance(z, normalize=False), torch.float32)

    def test_nearest_neighbour_on_a_line(self):
        # points at 0, 1, 3, 7: nearest distances 1, 1, 2, 4
        z = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
        expected = (math.log(1) + math.log(1) + math.log(2) + math.log(4)) / 4
        out = mean_log_nn_distance(z, eps=1e-30, normalize=False)
        torch.testing.assert_close(out.item(), expected)


class TestClosedForms:
    def test_uniformity_of_two_antipodal_points(self, dtype):
        z = torch.tensor([[0.0, 3.0, 0.0], [0.0, -0.5, 0.0]], dtype=dtype)  # normalised: ±e_2
        for t in (2.0, 0.7):
            _close(uniformity(z, t), 4 * t, dtype)  # −log exp(−4t)

    @pytest.mark.parametrize("n", [2, 3, 5, 10])
    def test_regular_simplex(self, n, dtype):
        z = regular_simplex(n, dtype) @ random_rotation(n).to(dtype)
        sq = 2 * n / (n - 1)  # every pairwise squared distance
        _close(uniformity(z, 2.0), 2.0 * sq, dtype)
        _close(mean_log_nn_distance(z, 1e-8), math.log(math.sqrt(sq) + 1e-8), dtype)

    @pytest.mark.parametrize("name", FUNCTIONS)
    def test_collapsed_batch(self, name, dtype):
        z = torch.randn(1, 6, dtype=dtype).repeat(9, 1).requires_grad_(True)  # one row, 9 times
        out = FUNCTIONS[name](z)
        expected = 0.0 if name == "uniformity" else math.log(1e-8)
        _close(out, expected, dtype)
        (grad,) = torch.autograd.grad(out, z)
        assert torch.isfinite(grad).all()

    @pytest.mark.parametrize("name", FUNCTIONS)
    def test_single_row_is_a_zero_on_the_graph(self, name, dtype):
        z = torch.randn(1, 5, dtype=dtype, requires_grad=True)
        out = FUNCTIONS[name](z)
        assert out.item() == 0.0 and out.requires_grad
        out.backward()
        assert torch.equal(z.grad, torch.zeros_like(z))

    def test_uniformity_is_nonnegative_and_at_most_4t_on_the_sphere(self):
        for seed in range(5):
            torch.manual_seed(seed)
            value = uniformity(torch.randn(30, 3, dtype=torch.float64), 2.0).item()
            assert 0.0 < value < 8.0


class TestInvariances:
    @pytest.mark.parametrize("name", FUNCTIONS)
    @pytest.mark.parametrize("normalize", [True, False])
    def test_rotation_and_permutation(self, name, normalize):
        fn = FUNCTIONS[name]
        z = torch.randn(15, 7, dtype=torch.float64)
        base = fn(z, normalize=normalize)
        torch.testing.assert_close(fn(z @ random_rotation(7, seed=4), normalize=normalize), base)
        torch.testing.assert_close(fn(z[torch.randperm(15)], normalize=normalize), base)

    @pytest.mark.parametrize("name", FUNCTIONS)
    def test_scale_of_each_row_does_not_matter_when_normalised(self, name):
        fn = FUNCTIONS[name]
        z = torch.randn(15, 7, dtype=torch.float64)
        scales = torch.rand(15, 1, dtype=torch.float64) * 10 + 0.1
        torch.testing.assert_close(fn(z * scales), fn(z))
        assert not torch.allclose(fn(z * scales, normalize=False), fn(z, normalize=False))


class TestGradients:
    @pytest.mark.parametrize("name", FUNCTIONS)
    @pytest.mark.parametrize("normalize", [True, False])
    def test_gradcheck(self, name, normalize):
        fn = FUNCTIONS[name]
        z = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x: fn(x, normalize=normalize), (z,))

    def test_uniformity_gradgradcheck(self):
        z = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradgradcheck(uniformity, (z,))

    @pytest.mark.parametrize("name", FUNCTIONS)
    def test_duplicate_rows_give_finite_gradients(self, name, dtype):
        z = torch.randn(8, 5, dtype=dtype)
        z[3] = z[1]
        z[6] = z[1]
        z[7] = 2.0 * z[0]  # the same direction: a duplicate once normalised
        z.requires_grad_(True)
        out = FUNCTIONS[name](z)
        _close(out, REFERENCES[name](z.detach()), dtype)
        (grad,) = torch.autograd.grad(out, z)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0

    def test_koleo_gradient_of_a_duplicated_pair_is_zero_from_its_own_terms(self):
        # two coinciding rows far from a third: their own nearest distance is 0 (no gradient,
        # see the convention); the third row's nearest neighbour is one of them
        z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
        z.requires_grad_(True)
        (grad,) = torch.autograd.grad(mean_log_nn_distance(z, normalize=False), z)
        assert torch.isfinite(grad).all()
        # row 2's term log(‖z_2 − z_0‖ + ε): pushes z_2 away from z_0 along −e_1, pulls z_0
        expected = torch.zeros(3, 2, dtype=torch.float64)
        expected[2, 0] = -1 / (3 * (2 + 1e-8))
        expected[0, 0] = 1 / (3 * (2 + 1e-8))
        torch.testing.assert_close(grad, expected)

    def test_koleo_gradient_matches_a_central_difference_near_a_tie_free_point(self):
        # the analytic gradient against a float64 central difference of the loop reference
        z = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(mean_log_nn_distance(z), z)
        h, numeric = 1e-6, torch.zeros_like(z)
        for i in range(7):
            for k in range(3):
                zp, zm = z.detach().clone(), z.detach().clone()
                zp[i, k] += h
                zm[i, k] -= h
                numeric[i, k] = (ref_mean_log_nn_distance(zp) - ref_mean_log_nn_distance(zm)) / (
                    2 * h
                )
        torch.testing.assert_close(grad, numeric, rtol=1e-5, atol=1e-7)


class TestDtypes:
    @pytest.mark.parametrize("name", FUNCTIONS)
    @pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
    def test_half_input_is_computed_in_float32(self, name, half):
        z = torch.randn(20, 8).to(half)
        out = FUNCTIONS[name](z)
        assert out.dtype == torch.float32
        _close(out, REFERENCES[name](z), torch.float32)  # reference fed the rounded input

    @pytest.mark.parametrize("name", FUNCTIONS)
    def test_autocast_is_switched_off(self, name):
        z = torch.randn(20, 8, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = FUNCTIONS[name](z)
        assert out.dtype == torch.float32
        _close(out, REFERENCES[name](z), torch.float32)  # float32 accuracy, not bfloat16's
        out.backward()
        assert torch.isfinite(z.grad).all()


class TestBadInput:
    @pytest.mark.parametrize("name", FUNCTIONS)
    @pytest.mark.parametrize("z,exc,match", [
        (torch.randn(3, 4, 5), ValueError, r"z must have shape \(batch_size, dim\), got \(3, 4"),
        (torch.ones(3, 4, dtype=torch.int64), TypeError, "z must have a floating-point dtype"),
        ([[1.0, 2.0]], TypeError, "z must be a torch.Tensor, got list"),
        (torch.randn(0, 4), ValueError, r"z must not be empty, got shape \(0, 4\)"),
    ])
    def test_bad_embeddings(self, name, z, exc, match):
        with pytest.raises(exc, match=match):
            FUNCTIONS[name](z)

    @pytest.mark.parametrize("name", FUNCTIONS)
    @pytest.mark.parametrize("bad", [float("nan"), float("inf")])
    def test_non_finite_input_raises_when_checked(self, name, bad):
        z = torch.randn(6, 4)
        z[2, 1] = bad
        with pytest.raises(ValueError, match="z must be finite, got NaN or inf values"):
            FUNCTIONS[name](z)
        assert torch.isnan(FUNCTIONS[name](z, check=False))  # unchecked: NaN propagates

    @pytest.mark.parametrize("name", FUNCTIONS)
    @pytest.mark.parametrize("kwargs,match", [
        (dict(normalize="False"), "normalize must be a bool \\(True or False\\), got str 'False'"),
        (dict(check=1), "check must be a bool \\(True or False\\), got int 1"),
    ])
    def test_flags_must_be_bools(self, name, kwargs, match):
        with pytest.raises(TypeError, match=match):
            FUNCTIONS[name](torch.randn(4, 3), **kwargs)

    @pytest.mark.parametrize("t,exc,match", [
        (0.0, ValueError, "t must be a finite number > 0, got 0.0"),
        (-2.0, ValueError, "t must be a finite number > 0, got -2.0"),
        (float("inf"), ValueError, "t must be a finite number > 0, got inf"),
        ("2", TypeError, "t must be a positive number, got str"),
        (True, TypeError, "t must be a positive number, got bool"),
    ])
    def test_bad_temperature(self, t, exc, match):
        with pytest.raises(exc, match=match):
            uniformity(torch.randn(4, 3), t)

    @pytest.mark.parametrize("eps,exc,match", [
        (0.0, ValueError, "eps must be a finite number > 0, got 0.0"),
        (-1e-8, ValueError, "eps must be a finite number > 0, got -1e-08"),
        (1e-40, ValueError, "eps must be >= 1e-30 so that it stays non-zero in float32, got 1e-40"),
        ("1e-8", TypeError, "eps must be a positive number, got str"),
    ])
    def test_bad_eps(self, eps, exc, match):
        with pytest.raises(exc, match=match):
            mean_log_nn_distance(torch.randn(4, 3), eps)
