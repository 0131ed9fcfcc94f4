"""``torch.compile(..., fullgraph=True)`` of the functions: one graph (no graph break, no
data-dependent guard from a host read), and the same values and gradients as eager mode.

The ``aot_eager`` backend traces forward and backward through AOTAutograd like the default
backend but runs the traced graphs eagerly, so the test checks the tracing without paying
Inductor's code generation. The references are the eager functions themselves, which the other
test files check against float64 eigenvalue oracles; here the question is only whether
compilation changes anything.
"""

from __future__ import annotations

import pytest
import torch

from pml_anticollapse.functional import coding_rate, coding_rate_reduction, half_logdet_gram
from tests.reference import ref_coding_rate

pytestmark = pytest.mark.slow  # compiles with torch.compile


def _compiled(fn):
    torch._dynamo.reset()  # each test compiles afresh: no cache from an earlier shape
    return torch.compile(fn, fullgraph=True, backend="aot_eager")


def _value_and_grad(fn, z):
    z = z.clone().requires_grad_(True)
    out = fn(z)
    (g,) = torch.autograd.grad(out, z)
    return out.detach(), g


class TestCodingRateCompiles:
    # rows: m ≤ d (triangular solves); wide: d ≥ 8m (n×n inverse); cols: m > d (k×k inverse)
    # ε² = 20: the backward's Gram-matrix form for small a·G (see _HalfLogdetGram._grad)
    @pytest.mark.parametrize("eps_sq", [0.5, 20.0])
    @pytest.mark.parametrize("m, d", [(20, 50), (6, 64), (50, 20)], ids=["rows", "wide", "cols"])
    def test_fullgraph_equals_eager(self, m, d, eps_sq):
        z = torch.randn(m, d, dtype=torch.float64)
        compiled = _compiled(lambda t: coding_rate(t, eps_sq=eps_sq))
        value, grad = _value_and_grad(compiled, z)
        eager_value, eager_grad = _value_and_grad(lambda t: coding_rate(t, eps_sq=eps_sq), z)
        torch.testing.assert_close(value, eager_value, rtol=1e-12, atol=0)
        torch.testing.assert_close(grad, eager_grad, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(value, ref_coding_rate(z, eps_sq), rtol=1e-10, atol=0)

    def test_a_second_shape_recompiles_without_a_graph_break(self):
        # the second call of a new shape makes Dynamo trace with symbolic sizes: the scale
        # a = d/(m·ε²) is then symbolic too and must not be read on the host
        compiled = _compiled(lambda t: coding_rate(t, eps_sq=0.25))
        for m, d in [(12, 30), (16, 30), (40, 30)]:
            z = torch.randn(m, d)
            value, grad = _value_and_grad(compiled, z)
            eager_value, eager_grad = _value_and_grad(lambda t: coding_rate(t, eps_sq=0.25), z)
            torch.testing.assert_close(value, eager_value, rtol=1e-6, atol=0)
            torch.testing.assert_close(grad, eager_grad, rtol=1e-5, atol=1e-7)

    def test_options_mask_variant_and_no_normalisation(self):
        z = torch.randn(18, 10, dtype=torch.float64)
        mask = torch.arange(18) % 3 != 0

        def fn(t):
            return (
                coding_rate(t, mask=mask, variant="acl_official")
                + coding_rate(t, normalize=False, eps=0.7)
            )

        value, grad = _value_and_grad(_compiled(fn), z)
        eager_value, eager_grad = _value_and_grad(fn, z)
        torch.testing.assert_close(value, eager_value, rtol=1e-12, atol=0)
        torch.testing.assert_close(grad, eager_grad, rtol=1e-10, atol=1e-14)

    def test_non_finite_input_gives_nan_instead_of_raising(self):
        # under compilation the finiteness check (a host read) is skipped, as documented
        z = torch.randn(8, 5)
        z[2, 3] = float("nan")
        assert torch.isnan(_compiled(lambda t: coding_rate(t))(z))
        with pytest.raises(ValueError, match="z must be finite"):
            coding_rate(z)  # eager mode still raises


class TestHalfLogdetGramCompiles:
    @pytest.mark.parametrize("scalar", [True, False], ids=["float-a", "tensor-a"])
    def test_batched_fullgraph_equals_eager(self, scalar):
        x = torch.randn(3, 5, 7, dtype=torch.float64)
        a = 1.5 if scalar else torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
        w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)

        def fn(t):
            return (half_logdet_gram(t, a, normalize=True) * w).sum()

        value, grad = _value_and_grad(_compiled(fn), x)
        eager_value, eager_grad = _value_and_grad(fn, x)
        torch.testing.assert_close(value, eager_value, rtol=1e-12, atol=0)
        torch.testing.assert_close(grad, eager_grad, rtol=1e-10, atol=1e-14)


class TestRateReductionCompiles:
    @pytest.mark.parametrize("m, d", [(24, 40), (40, 6)], ids=["n<d", "n>d"])
    def test_fullgraph_with_num_classes_equals_eager(self, m, d):
        z = torch.randn(m, d, dtype=torch.float64)
        labels = torch.arange(m) % 3 + 1  # class 0 and classes 4..6 absent

        def fn(t):
            out = coding_rate_reduction(t, labels, num_classes=7)
            return torch.stack(tuple(out))

        compiled = _compiled(fn)
        zz = z.clone().requires_grad_(True)
        terms = compiled(zz)
        (grad,) = torch.autograd.grad(terms[0], zz)
        eager = fn(z)
        (eager_grad,) = torch.autograd.grad(fn(zz)[0], zz)
        torch.testing.assert_close(terms.detach(), eager, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(grad, eager_grad, rtol=1e-10, atol=1e-13)
