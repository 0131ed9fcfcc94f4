"""The hand-written backward pass of the coding rate, on the benchmark grid of the speed issue.

Values and gradients in float32 against float64 references that use other algorithms
(eigenvalues, autograd through ``torch.logdet`` or ``eigvalsh``), fed the same float32 input;
the eigen-decomposition fallback; double backward; the class-batched MCR² terms.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from pml_anticollapse.functional import (
    CholeskyFallbackWarning,
    coding_rate,
    coding_rate_reduction,
    half_logdet_gram,
)
from tests.reference import ref_coding_rate, ref_coding_rate_grad, ref_rate_reduction

#: the grid of benchmarks/speed/bench.py (m samples × d dimensions)
GRID = [(90, 512), (128, 512), (512, 512), (180, 2048), (1024, 64), (4096, 128), (8192, 512)]
RTOL = 1e-5  # float32 against float64, value and gradient (norm-wise)


def _ref_grad_eig(z: torch.Tensor, eps_sq: float = 0.5) -> torch.Tensor:
    """Float64 gradient of R by autograd through ``eigvalsh`` of the smaller Gram matrix (cheaper
    than the d×d ``logdet`` of ``ref_coding_rate_grad`` at d = 2048, and a third algorithm)."""
    x = z.detach().to(torch.float64).requires_grad_(True)
    xn = x / x.norm(dim=1, keepdim=True)
    m, d = x.shape
    gram = xn @ xn.T if m <= d else xn.T @ xn
    r = 0.5 * torch.log1p(d / (m * eps_sq) * torch.linalg.eigvalsh(gram).clamp_min(0)).sum()
    (g,) = torch.autograd.grad(r, x)
    return g


def _ref_rate_reduction_grads(z, labels, eps_sq=0.5):
    """Float64 (R, R_c) and their gradients: a Python loop over the classes, each term by
    autograd through ``eigvalsh`` of the class's d×d Gram matrix (MCR², Yu et al. 2020)."""
    x = z.detach().to(torch.float64).requires_grad_(True)
    xn = x / x.norm(dim=1, keepdim=True)
    m, d = x.shape

    def half_logdet(rows, scale):
        return 0.5 * torch.log1p(scale * torch.linalg.eigvalsh(rows.T @ rows).clamp_min(0)).sum()

    r = half_logdet(xn, d / (m * eps_sq))
    r_c = sum(
        n / m * half_logdet(xn[labels == c], d / (n * eps_sq))
        for c in torch.unique(labels)
        for n in [int((labels == c).sum())]
    )
    (g_r,) = torch.autograd.grad(r, x, retain_graph=True)
    (g_rc,) = torch.autograd.grad(r_c, x)
    return r.detach(), r_c.detach(), g_r, g_rc


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().to(torch.float64), b.detach().to(torch.float64)
    return float((a - b).norm() / b.norm())


def _value_and_grad(fn, z):
    z = z.clone().requires_grad_(True)
    out = fn(z)
    (g,) = torch.autograd.grad(out, z)
    return out, g


class TestGridAgainstFloat64:
    @pytest.mark.parametrize("m, d", GRID, ids=[f"{m}x{d}" for m, d in GRID])
    def test_value_and_gradient(self, m, d):
        z = torch.randn(m, d, dtype=torch.float32)
        value, grad = _value_and_grad(coding_rate, z)
        assert value.dtype == torch.float32 and grad.dtype == torch.float32
        expected = ref_coding_rate(z)  # eigenvalues of the d×d matrix, float64
        assert abs(value.double().item() - expected.item()) <= RTOL * abs(expected.item())
        assert _rel(grad, _ref_grad_eig(z)) <= RTOL

    def test_eig_gradient_reference_equals_the_logdet_one(self):
        # the cheap reference used on the grid agrees with tests/reference.py's d×d logdet one
        for m, d in [(30, 70), (70, 30)]:
            z = torch.randn(m, d, dtype=torch.float64)
            torch.testing.assert_close(
                _ref_grad_eig(z), ref_coding_rate_grad(z), rtol=1e-10, atol=0
            )

    @pytest.mark.parametrize("m, d", [(60, 200), (200, 60)], ids=["rows", "cols"])
    def test_unnormalised_gradient_is_the_closed_form(self, m, d):
        # ∂/∂X ½·logdet(I + a·XXᵀ) = a·(I + a·XXᵀ)⁻¹X, evaluated in float64 with a dense solve
        x = torch.randn(m, d) / d**0.5
        a = 3.0
        _, grad = _value_and_grad(lambda t, a=a: half_logdet_gram(t, a), x)
        x64 = x.double()
        closed = a * torch.linalg.solve(torch.eye(m, dtype=torch.float64) + a * x64 @ x64.T, x64)
        assert _rel(grad, closed) <= RTOL


class TestBatchedMatrices:
    @pytest.mark.parametrize("shape", [(3, 4, 3), (3, 4, 5), (2, 3, 6, 2)], ids=str)
    @pytest.mark.parametrize("scalar", [True, False], ids=["float-a", "tensor-a"])
    def test_each_matrix_gets_its_own_gradient(self, shape, scalar):
        # a weighted sum over the batch tells the matrices' gradients apart; the reference is
        # autograd through torch.logdet of each matrix, one at a time, in float64
        x = torch.randn(*shape, dtype=torch.float64)
        w = torch.randn(shape[:-2], dtype=torch.float64)
        a = 2.0 if scalar else torch.tensor(2.0, dtype=torch.float64)
        _, grad = _value_and_grad(lambda t: (half_logdet_gram(t, a) * w).sum(), x)

        def reference(t):
            flat = t.reshape(-1, *shape[-2:])
            eye = torch.eye(shape[-2], dtype=torch.float64)
            vals = torch.stack([0.5 * torch.logdet(eye + 2.0 * xi @ xi.T) for xi in flat])
            return (vals.reshape(shape[:-2]) * w).sum()

        _, expected = _value_and_grad(reference, x)
        torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("a", [-1.0, float("nan"), float("inf")])
def test_half_logdet_gram_refuses_a_bad_scale(a):
    with pytest.raises(ValueError, match="a must be a finite number >= 0"):
        half_logdet_gram(torch.randn(4, 3), a)


def _failing_cholesky_ex(real):
    def fake(mat, *args, **kwargs):
        factor, info = real(mat, *args, **kwargs)
        return factor, torch.ones_like(info)  # every factorisation reports failure

    return fake


class TestCholeskyFallback:
    @pytest.mark.parametrize("api", ["function", "regularizer", "loss"])
    def test_the_warning_points_at_the_callers_line(self, monkeypatch, api):
        from pytorch_metric_learning.losses import ContrastiveLoss

        from pml_anticollapse import CodingRateRegularizer

        z = torch.randn(12, 6)
        labels = torch.arange(12) % 3
        call = {
            "function": lambda: coding_rate(z),
            "regularizer": lambda: CodingRateRegularizer()(z),
            "loss": lambda: ContrastiveLoss(embedding_regularizer=CodingRateRegularizer())(
                z, labels
            ),
        }[api]
        monkeypatch.setattr(
            torch.linalg, "cholesky_ex", _failing_cholesky_ex(torch.linalg.cholesky_ex)
        )
        with pytest.warns(CholeskyFallbackWarning) as record:
            call()
        assert record[0].filename == __file__

    @pytest.mark.parametrize("m, d", [(40, 100), (100, 40)], ids=["rows", "cols"])
    def test_warns_and_stays_correct(self, monkeypatch, m, d):
        z = torch.randn(m, d, dtype=torch.float32)
        good_value, good_grad = _value_and_grad(coding_rate, z)
        fake = _failing_cholesky_ex(torch.linalg.cholesky_ex)
        monkeypatch.setattr(torch.linalg, "cholesky_ex", fake)
        with pytest.warns(CholeskyFallbackWarning, match="falling back to the symmetric eigen"):
            value, grad = _value_and_grad(coding_rate, z)
        assert abs(value.double().item() - ref_coding_rate(z).item()) <= RTOL * value.item()
        assert _rel(grad, _ref_grad_eig(z)) <= RTOL
        # and it is the same answer as the Cholesky path
        torch.testing.assert_close(value, good_value, rtol=RTOL, atol=0)
        assert _rel(grad, good_grad) <= RTOL

    def test_no_warning_when_the_factorisation_succeeds(self, recwarn):
        _value_and_grad(coding_rate, torch.randn(30, 50))
        assert not [w for w in recwarn if issubclass(w.category, CholeskyFallbackWarning)]

    def test_batched_class_terms_fall_back_too(self, monkeypatch):
        z = torch.randn(36, 20, dtype=torch.float32)
        labels = torch.arange(36) % 4
        fake = _failing_cholesky_ex(torch.linalg.cholesky_ex)
        monkeypatch.setattr(torch.linalg, "cholesky_ex", fake)
        zz = z.clone().requires_grad_(True)
        with pytest.warns(CholeskyFallbackWarning):
            out = coding_rate_reduction(zz, labels)
        (g_rc,) = torch.autograd.grad(out.r_c, zz)
        _, r_c, _, ref_g_rc = _ref_rate_reduction_grads(z, labels)
        assert abs(out.r_c.double().item() - r_c.item()) <= RTOL * r_c.item()
        assert _rel(g_rc, ref_g_rc) <= RTOL

    @pytest.mark.parametrize("m, d", [(20, 50), (50, 20)], ids=["rows", "cols"])
    def test_zero_rows_keep_a_zero_gradient(self, monkeypatch, m, d):
        # a zero row's gradient is exactly 0; the eigen solve leaves ~1e-16 of rounding in it,
        # which the normalisation's 1e-12 clamp would have turned into a gradient of ~1e-4
        z = torch.randn(m, d, dtype=torch.float64)
        mask = torch.arange(m) % 4 != 0
        z[~mask] = 0.0
        fn = coding_rate
        good_value, good_grad = _value_and_grad(fn, z)
        monkeypatch.setattr(
            torch.linalg, "cholesky_ex", _failing_cholesky_ex(torch.linalg.cholesky_ex)
        )
        with pytest.warns(CholeskyFallbackWarning):
            value, grad = _value_and_grad(fn, z)
        assert bool((grad[~mask] == 0).all())
        assert _rel(grad, good_grad) <= 1e-9
        assert abs(value.item() - good_value.item()) <= 1e-12 * good_value.item()

    def test_non_finite_input_raises_instead_of_falling_back(self):
        z = torch.randn(10, 20)
        z[3, 4] = float("nan")
        with warnings.catch_warnings():
            warnings.simplefilter("error", CholeskyFallbackWarning)  # a fallback would raise it
            with pytest.raises(ValueError, match="z must be finite"):
                coding_rate(z)


class TestDoubleBackward:
    # "-R" (the regularizer's neg form: a constant incoming gradient) and "exp(-R)" (the exp
    # form: an incoming gradient that itself depends on z) take different autograd paths
    @pytest.mark.parametrize(
        "outer", [lambda r: -r, lambda r: torch.exp(-r)], ids=["neg", "exp"]
    )
    @pytest.mark.parametrize("m, d", [(12, 30), (30, 12)], ids=["rows", "cols"])
    def test_second_derivative_raises_a_clear_error(self, outer, m, d):
        z = torch.randn(m, d, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(outer(coding_rate(z)), z, create_graph=True)
        # never a silently wrong Hessian-vector product
        with pytest.raises(RuntimeError, match="differentiate twice|differentiated only once"):
            g.pow(2).sum().backward()

    def test_first_derivative_with_create_graph_is_still_right(self):
        z = torch.randn(12, 30, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(coding_rate(z), z, create_graph=True)
        torch.testing.assert_close(g.detach(), ref_coding_rate_grad(z), rtol=1e-10, atol=1e-12)


class TestRateReductionGradients:
    @pytest.mark.parametrize(
        "m, d, n_classes",
        [(60, 64, 5), (120, 8, 3), (33, 200, 7)],
        ids=["n<d", "n>d", "uneven"],
    )
    def test_terms_and_gradients_match_float64(self, m, d, n_classes):
        z = torch.randn(m, d, dtype=torch.float32)
        labels = torch.randint(0, n_classes, (m,))
        labels[:n_classes] = torch.arange(n_classes)  # every class present
        zz = z.clone().requires_grad_(True)
        out = coding_rate_reduction(zz, labels)
        g_r = torch.autograd.grad(out.r, zz, retain_graph=True)[0]
        g_rc = torch.autograd.grad(out.r_c, zz, retain_graph=True)[0]
        g_dr = torch.autograd.grad(out.delta_r, zz)[0]
        r, r_c, ref_g_r, ref_g_rc = _ref_rate_reduction_grads(z, labels)
        assert abs(out.r.double().item() - r.item()) <= RTOL * r.item()
        assert abs(out.r_c.double().item() - r_c.item()) <= RTOL * r_c.item()
        assert _rel(g_r, ref_g_r) <= RTOL
        assert _rel(g_rc, ref_g_rc) <= RTOL
        assert _rel(g_dr, ref_g_r - ref_g_rc) <= 10 * RTOL  # a difference of two terms

    def test_absent_class_with_num_classes(self):
        z = torch.randn(40, 16, dtype=torch.float32)
        labels = torch.randint(0, 3, (40,))
        labels[:3] = torch.arange(3)
        zz = z.clone().requires_grad_(True)
        out = coding_rate_reduction(zz, labels, num_classes=6)  # classes 3, 4, 5 are absent
        (g,) = torch.autograd.grad(out.r_c, zz)
        _, r_c, _, ref_g_rc = _ref_rate_reduction_grads(z, labels)
        assert abs(out.r_c.double().item() - r_c.item()) <= RTOL * r_c.item()
        assert _rel(g, ref_g_rc) <= RTOL


def _near_collapsed(m: int, d: int, sigma: float, dtype, seed: int = 0) -> torch.Tensor:
    """Rows = one shared direction + σ·noise: σ = 10 is well spread, σ = 0.01 nearly collapsed
    (cosine similarity ≈ 0.9999 between rows)."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(1, d, generator=gen, dtype=torch.float64)
    return (base + sigma * torch.randn(m, d, generator=gen, dtype=torch.float64)).to(dtype)


def _closed_form_grad(x: torch.Tensor, a: float) -> torch.Tensor:
    """∂/∂X ½·logdet(I + a·XXᵀ) = a·(I + a·XXᵀ)⁻¹X, by a dense LU solve of the d×d or m×m
    system in float64 (whichever the package does *not* factorise is irrelevant: exact)."""
    x64 = x.detach().to(torch.float64)
    m, d = x64.shape
    if m <= d:
        return a * torch.linalg.solve(torch.eye(m, dtype=torch.float64) + a * x64 @ x64.T, x64)
    return a * torch.linalg.solve(torch.eye(d, dtype=torch.float64) + a * x64.T @ x64, x64.T).T


#: The grid without the square 512×512: a square random Gram matrix has eigenvalues near 0, and
#: at ε² ≤ 0.01 the float32 rounding of the Gram matrix itself (not the solve: triangular solves
#: and the explicit inverse err alike there, 3e-4 at ε² = 1e-4) exceeds 1e-5 in the gradient.
SWEEP_GRID = [(m, d) for m, d in GRID if m != d]

#: ε² from 1e-4 to 10 (the scale a = d/(m·ε²) spans five decades)
EPS_SQ_SWEEP = [1e-4, 1e-3, 1e-2, 0.1, 0.5, 1.0, 10.0]


class TestConditioningSweep:
    """The backward's three solves (two triangular solves where m ≤ d < 8m; the explicit inverse
    + GEMM where d ≥ 8m or m > d) on badly conditioned matrices: I + a·Gram has condition number
    1 + a·λmax, up to ~10⁸ here."""

    # (30, 100): triangular solves; (10, 200): n×n inverse; (100, 30): k×k inverse
    @pytest.mark.parametrize("m, d", [(30, 100), (10, 200), (100, 30)], ids=str)
    @pytest.mark.parametrize("sigma", [10.0, 0.1, 0.01])
    def test_float64_every_path_matches_the_eigen_reference(self, m, d, sigma):
        # float64 arithmetic isolates the algorithm: an explicit inverse that lost accuracy with
        # the conditioning would show here (measured worst: 3e-11)
        z = _near_collapsed(m, d, sigma, torch.float64)
        for eps_sq in EPS_SQ_SWEEP:
            value, grad = _value_and_grad(lambda t, e=eps_sq: coding_rate(t, eps_sq=e), z)
            expected = ref_coding_rate(z, eps_sq).item()
            assert abs(value.item() - expected) <= 1e-9 * abs(expected), eps_sq
            assert _rel(grad, _ref_grad_eig(z, eps_sq)) <= 1e-9, eps_sq

    @pytest.mark.slow  # every grid point, over the whole conditioning sweep
    @pytest.mark.parametrize("m, d", GRID, ids=[f"{m}x{d}" for m, d in GRID])
    def test_float32_values_over_the_sweep(self, m, d):
        # spread (σ = 10) and fairly collapsed (σ = 0.3, cosine ≈ 0.9 between rows)
        for sigma in (10.0, 0.3):
            z = _near_collapsed(m, d, sigma, torch.float32)
            for eps_sq in (1e-4, 1e-2, 0.5, 10.0):
                expected = ref_coding_rate(z, eps_sq).item()
                got = coding_rate(z, eps_sq=eps_sq).double().item()
                assert abs(got - expected) <= RTOL * expected, (sigma, eps_sq)

    @pytest.mark.slow  # every grid point, over the whole conditioning sweep
    @pytest.mark.parametrize("m, d", SWEEP_GRID, ids=[f"{m}x{d}" for m, d in SWEEP_GRID])
    def test_float32_solve_over_the_sweep(self, m, d):
        # the linear algebra of the backward alone (unit rows, no normalisation in the graph),
        # against the closed form: measured worst 4e-7 over ε² from 1e-4 to 10
        x = torch.nn.functional.normalize(_near_collapsed(m, d, 10.0, torch.float32), dim=-1)
        for eps_sq in (1e-4, 1e-2, 0.5, 10.0):
            a = d / (m * eps_sq)
            _, grad = _value_and_grad(lambda t, a=a: half_logdet_gram(t, a), x)
            assert _rel(grad, _closed_form_grad(x, a)) <= RTOL, eps_sq

    @pytest.mark.parametrize("m, d", [(90, 512), (180, 2048), (1024, 64), (4096, 128)], ids=str)
    def test_float32_normalised_gradient_over_the_sweep(self, m, d):
        # ε² = 10 at m > d: a·G is small and the normalisation's projection would cancel X
        # against M⁻¹X (1.5e-5 with the plain form); the backward forms −a·M⁻¹G·X instead
        z = _near_collapsed(m, d, 10.0, torch.float32)
        for eps_sq in (1e-4, 1e-2, 0.5, 10.0):
            _, grad = _value_and_grad(lambda t, e=eps_sq: coding_rate(t, eps_sq=e), z)
            assert _rel(grad, _ref_grad_eig(z, eps_sq)) <= RTOL, eps_sq


class TestSolvePath:
    """Which solve the backward uses: where m > d (or d ≥ 8m), no triangular solve against the
    many right-hand sides of X, the kind that some CPUs' LAPACK runs 4–10× slower than a GEMM."""

    @pytest.mark.parametrize("m, d", [(200, 30), (10, 200)], ids=["m>d", "d>=8m"])
    def test_no_triangular_solve_with_many_right_hand_sides(self, monkeypatch, m, d):
        def forbidden(*args, **kwargs):
            raise AssertionError("a triangular solve was called")

        z = torch.randn(m, d, dtype=torch.float64)
        monkeypatch.setattr(torch, "cholesky_solve", forbidden)
        monkeypatch.setattr(torch.linalg, "solve_triangular", forbidden)
        _, grad = _value_and_grad(coding_rate, z)
        torch.testing.assert_close(grad, ref_coding_rate_grad(z), rtol=1e-10, atol=1e-13)

    def test_in_between_shapes_use_the_triangular_solves(self, monkeypatch):
        calls = []
        real = torch.linalg.solve_triangular
        monkeypatch.setattr(
            torch.linalg, "solve_triangular", lambda *a, **k: calls.append(1) or real(*a, **k)
        )
        z = torch.randn(30, 100, dtype=torch.float64)  # m ≤ d < 8m
        _, grad = _value_and_grad(coding_rate, z)
        assert len(calls) == 2
        torch.testing.assert_close(grad, ref_coding_rate_grad(z), rtol=1e-10, atol=1e-13)


class TestAbsentClasses:
    def _factorised_batches(self, monkeypatch):
        shapes = []
        real = torch.linalg.cholesky_ex
        monkeypatch.setattr(
            torch.linalg, "cholesky_ex", lambda mat, **k: shapes.append(mat.shape) or real(mat, **k)
        )
        return shapes

    def test_only_present_classes_are_factorised(self, monkeypatch):
        z = torch.randn(24, 16, dtype=torch.float64)
        labels = torch.tensor([3, 999_999, 3, 42] * 6)
        shapes = self._factorised_batches(monkeypatch)
        out = coding_rate_reduction(z, labels, num_classes=10**7)
        # one call for R (16×16 of the whole batch), one for the three present classes
        assert [s[:-2] for s in shapes] == [(), (3,)]
        for got, want in zip(out, ref_rate_reduction(z, labels), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)

    def test_gradient_with_a_huge_label_space_matches_the_loop(self):
        z = torch.randn(30, 12, dtype=torch.float64)
        labels = torch.randint(0, 5, (30,)) * 2_000_003  # five classes spread over 10⁷
        _, g_none = _value_and_grad(lambda t: coding_rate_reduction(t, labels).delta_r, z)
        _, g_big = _value_and_grad(
            lambda t: coding_rate_reduction(t, labels, num_classes=10**7).delta_r, z
        )
        _, _, g_r, g_rc = _ref_rate_reduction_grads(z, labels)
        torch.testing.assert_close(g_big, g_r - g_rc, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(g_none, g_big, rtol=1e-12, atol=1e-14)


class TestFailureWithoutCheck:
    @pytest.mark.parametrize("m, d", [(8, 20), (20, 8)], ids=["rows", "cols"])
    def test_failed_factorisation_gives_nan_value_and_gradient(self, monkeypatch, m, d):
        monkeypatch.setattr(
            torch.linalg, "cholesky_ex", _failing_cholesky_ex(torch.linalg.cholesky_ex)
        )
        value, grad = _value_and_grad(lambda t: coding_rate(t, check=False), torch.randn(m, d))
        assert torch.isnan(value) and torch.isnan(grad).all()


class TestTinyRows:
    @pytest.mark.parametrize("m, d", [(40, 6), (3, 40)], ids=["cols", "wide-rows"])
    @pytest.mark.parametrize("eps_sq", [0.5, 20.0], ids=["plain", "gram-form"])
    def test_a_row_of_tiny_norm_is_normalised_like_any_other(self, m, d, eps_sq):
        # rows are rescaled by a power of two before the normalisation, so a row of norm 1e-14
        # (below F.normalize's 1e-12 clamp) keeps its direction; the reference divides by the
        # exact norm and differentiates logdet in float64
        z = torch.randn(m, d, dtype=torch.float64)
        z[1] *= 1e-14

        def reference(t):
            x = t / t.norm(dim=-1, keepdim=True)
            eye = torch.eye(d, dtype=torch.float64)
            return 0.5 * torch.logdet(eye + d / (m * eps_sq) * x.T @ x)

        _, grad = _value_and_grad(lambda t, e=eps_sq: coding_rate(t, eps_sq=e), z)
        _, expected = _value_and_grad(reference, z)
        torch.testing.assert_close(grad, expected, rtol=1e-9, atol=0)


class TestComputeDtype:
    """``compute_dtype=torch.float64`` on float32 input: float32 out, and 1e-5 relative to the
    float64 reference where float32 arithmetic cannot give it (nearly collapsed rows, small ε²,
    the square grid point)."""

    @pytest.mark.parametrize("m, d", [(90, 512), (512, 512), (1024, 64), (4096, 128)], ids=str)
    def test_nearly_collapsed_rows_meet_the_tolerance(self, m, d):
        for sigma in (0.3, 0.01):
            z = _near_collapsed(m, d, sigma, torch.float32)
            for eps_sq in (1e-4, 0.5, 10.0):
                fn = lambda t, e=eps_sq: coding_rate(t, eps_sq=e, compute_dtype=torch.float64)  # noqa: E731
                value, grad = _value_and_grad(fn, z)
                assert value.dtype == torch.float32 and grad.dtype == torch.float32
                expected = ref_coding_rate(z, eps_sq).item()
                assert abs(value.double().item() - expected) <= RTOL * abs(expected), eps_sq
                assert _rel(grad, _ref_grad_eig(z, eps_sq)) <= RTOL, (sigma, eps_sq)

    def test_float32_alone_does_not_there(self):
        # why the option exists: the same input in float32 misses 1e-5 by far (measured 1.5e-2)
        z = _near_collapsed(90, 512, 0.01, torch.float32)
        _, grad = _value_and_grad(lambda t: coding_rate(t, eps_sq=1e-4), z)
        assert _rel(grad, _ref_grad_eig(z, 1e-4)) > 100 * RTOL

    def test_rate_reduction(self):
        z = _near_collapsed(60, 40, 0.05, torch.float32)
        labels = torch.arange(60) % 4
        out = coding_rate_reduction(z, labels, eps_sq=1e-3, compute_dtype=torch.float64)
        delta_r, r, r_c = ref_rate_reduction(z, labels, eps_sq=1e-3)
        assert out.r.dtype == torch.float32 and out.r_c.dtype == torch.float32
        assert abs(out.r.double().item() - r.item()) <= RTOL * abs(r.item())
        assert abs(out.r_c.double().item() - r_c.item()) <= RTOL * abs(r_c.item())
        assert abs(out.delta_r.double().item() - delta_r.item()) <= RTOL * abs(delta_r.item())

    def test_rate_reduction_much_smaller_than_the_rate(self):
        # ΔR ≈ 0.008·R here: formed before the rounding to float32, it keeps float32's relative
        # precision of ΔR itself (rounded after the subtraction, only that of R: ~1e-5)
        z = _near_collapsed(60, 40, 0.3, torch.float32)
        labels = torch.arange(60) % 4
        out = coding_rate_reduction(z, labels, eps_sq=10.0, compute_dtype=torch.float64)
        delta_r, r, _ = ref_rate_reduction(z, labels, eps_sq=10.0)
        assert delta_r.item() < 0.05 * r.item()
        assert abs(out.delta_r.double().item() - delta_r.item()) <= 1e-6 * abs(delta_r.item())

    @pytest.mark.parametrize("scale", [1e-50, 1e50])
    def test_float64_rows_beyond_float32_computed_in_float32(self, scale):
        # float64 rows of 1e-50 or 1e50 have their directions kept through the cast
        gen = torch.Generator().manual_seed(5)
        z = torch.randn(20, 30, generator=gen, dtype=torch.float64)
        expected = ref_coding_rate(z).item()
        got = coding_rate(z * scale, compute_dtype=torch.float32)
        assert got.dtype == torch.float64
        assert abs(got.item() - expected) <= RTOL * expected
        out = coding_rate_reduction(z * scale, torch.arange(20) % 3, compute_dtype=torch.float32)
        _, r, _ = ref_rate_reduction(z, torch.arange(20) % 3)
        assert abs(out.r.item() - r.item()) <= RTOL * r.item()

    def test_float64_input_and_float32_compute(self):
        z = torch.randn(20, 30, dtype=torch.float64)
        out = coding_rate(z, compute_dtype=torch.float32)
        assert out.dtype == torch.float64  # the input's dtype, computed in float32
        assert abs(out.item() - ref_coding_rate(z).item()) <= RTOL * ref_coding_rate(z).item()
