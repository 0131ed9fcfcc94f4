"""The coding-rate classes at their default settings under ``torch.compile(fullgraph=True)``.

``aot_eager`` traces the forward and the backward graph (dynamo + AOTAutograd) without a C++
compiler, so CI stays fast; a graph break fails the test. Values and gradients must equal eager
mode, and the value the float64 reference.
"""

from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import losses

from pml_anticollapse import AntiCollapseLoss, CodingRateRegularizer
from tests.conftest import TOLERANCES
from tests.reference import ref_coding_rate

pytestmark = pytest.mark.slow  # compiles with torch.compile

M, D, C = 12, 8, 3
TOL = TOLERANCES[torch.float32]


def _make(name):
    torch.manual_seed(0)
    if name == "regularizer":
        return CodingRateRegularizer(), lambda z: ref_coding_rate(z).neg()
    inner = losses.NormalizedSoftmaxLoss(C, D)
    bare = losses.NormalizedSoftmaxLoss(C, D)
    bare.load_state_dict(inner.state_dict())
    # reference: an identical bare PML loss (eager) minus R from the float64 reference
    return AntiCollapseLoss(inner), lambda z: bare(z, _labels()).double() - ref_coding_rate(z)


def _labels():
    return torch.arange(M) % C


def _value_and_grad(fn, z):
    z = z.clone().requires_grad_(True)
    out = fn(z)
    out.backward()
    return out.detach(), z.grad


class TestFullgraphCompile:
    @pytest.mark.parametrize("name", ["regularizer", "anti_collapse_loss"])
    def test_equals_eager(self, name):
        torch._dynamo.reset()
        module, reference = _make(name)
        call = module if name == "regularizer" else (lambda z: module(z, _labels()))
        compiled = torch.compile(call, fullgraph=True, backend="aot_eager")
        z = torch.randn(M, D, generator=torch.Generator().manual_seed(1))
        want, want_grad = _value_and_grad(call, z)
        for _ in range(2):  # the second call reuses the compiled graph
            got, got_grad = _value_and_grad(compiled, z)
            torch.testing.assert_close(got, want, **TOL)
            torch.testing.assert_close(got_grad, want_grad, **TOL)
        torch.testing.assert_close(got.double(), reference(z), **TOL)
        assert got_grad.abs().sum() > 0
