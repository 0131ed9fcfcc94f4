"""One contract over every public class in ``pml_anticollapse.__all__``.

Each class is exercised the way PML calls it: a regularizer as ``reg(x)``, a loss as
``loss(embeddings, labels)``, a miner as ``miner(embeddings, labels)``. A class added to
``__all__`` is covered without touching this file when its role's defaults construct it (a
``BaseRegularizer``, ``BaseMetricLossFunction`` or ``BaseMiner`` with no required argument);
otherwise ``TestEveryClassHasARecipe`` fails until a recipe is added to ``RECIPES``.

The contract: a scalar, finite output (a miner: index tensors into the batch); gradients reach
the input and every parameter of the class; bad input (wrong shape, integer dtype, NaN on CPU)
raises ``ValueError``/``TypeError`` with the shared message; the object pickles and deep-copies
into one that gives the same output; ``state_dict`` carries its state into a fresh object.
"""

from __future__ import annotations

import copy
import inspect
import pickle
from collections.abc import Callable
from typing import NamedTuple

import pytest
import torch
from pytorch_metric_learning import losses
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.miners import BaseMiner
from pytorch_metric_learning.regularizers import BaseRegularizer

import pml_anticollapse

M, D, C = 12, 8, 4


class Recipe(NamedTuple):
    make: Callable[[], torch.nn.Module]
    role: str  # "regularizer", "loss" or "miner"


# classes whose defaults do not say enough (a required argument, or a setting that exercises
# more of the class than the default)
RECIPES: dict[str, Recipe] = {
    # the wrapped proxy loss gives the class parameters of its own; "both" runs both terms
    "AntiCollapseLoss": Recipe(
        lambda: pml_anticollapse.AntiCollapseLoss(losses.ProxyAnchorLoss(C, D), target="both"),
        "loss",
    ),
}
ROLES = (("regularizer", BaseRegularizer), ("loss", BaseMetricLossFunction), ("miner", BaseMiner))


def _public_classes() -> list[str]:
    return [n for n in pml_anticollapse.__all__ if inspect.isclass(getattr(pml_anticollapse, n))]


def _recipe(name: str) -> Recipe | None:
    if name in RECIPES:
        return RECIPES[name]
    cls = getattr(pml_anticollapse, name)
    for role, base in ROLES:
        if issubclass(cls, base):
            required = [
                p for p in list(inspect.signature(cls).parameters.values())
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            ]
            return None if required else Recipe(cls, role)
    return None


CLASSES = _public_classes()


def _make(name: str, seed: int = 0) -> tuple[torch.nn.Module, str]:
    torch.manual_seed(seed)
    recipe = _recipe(name)
    return recipe.make(), recipe.role


def _batch(dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(M, D, generator=g, dtype=dtype)
    y = torch.arange(M) % C
    return z, y


def _call(obj, role, z, y):
    return obj(z) if role == "regularizer" else obj(z, y)


def _same(a, b):
    if isinstance(a, tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
    else:
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class TestEveryClassHasARecipe:
    def test_the_public_classes_are_found(self):
        assert {"AntiCollapseLoss", "CodingRateRegularizer", "MCR2Loss"} <= set(CLASSES)

    @pytest.mark.parametrize("name", CLASSES)
    def test_recipe(self, name):
        assert _recipe(name) is not None, (
            f"{name} is public but has no recipe: its constructor has required arguments or it "
            f"is not a PML regularizer, loss or miner; add one to RECIPES in tests/test_contract.py"
        )


def _with_recipe(names):
    return [n for n in names if _recipe(n) is not None]  # the others fail in TestEveryClassHas...


def _of_role(*roles):
    return [n for n in _with_recipe(CLASSES) if _recipe(n).role in roles]


class TestOutput:
    @pytest.mark.parametrize("name", _of_role("regularizer", "loss"))
    def test_scalar_and_finite(self, name, dtype):
        obj, role = _make(name)
        obj = obj.to(dtype)
        z, y = _batch(dtype)
        out = _call(obj, role, z, y)
        assert isinstance(out, torch.Tensor) and out.dim() == 0 and out.dtype == dtype
        assert torch.isfinite(out)

    @pytest.mark.parametrize("name", _of_role("miner"))
    def test_miner_gives_indices_into_the_batch(self, name):
        obj, role = _make(name)
        z, y = _batch()
        out = _call(obj, role, z, y)
        assert isinstance(out, tuple) and len(out) in (3, 4)
        assert len({t.shape for t in out}) == 1 and out[0].numel() > 0
        for t in out:
            assert t.dtype == torch.long and t.dim() == 1
            assert int(t.min()) >= 0 and int(t.max()) < M

    @pytest.mark.parametrize("name", _of_role("regularizer", "loss"))
    def test_gradients_reach_the_input_and_every_parameter(self, name):
        obj, role = _make(name)
        z, y = _batch()
        z.requires_grad_(True)
        _call(obj, role, z, y).backward()
        assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
        for pname, p in obj.named_parameters():
            assert p.grad is not None, f"no gradient reaches {name}.{pname}"
            assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


BAD_INPUTS = {
    "3-d": (lambda z: z[:, None, :], ValueError, r"must have shape \(batch_size, dim\)"),
    "integer": (lambda z: z.long(), TypeError, "must have a floating-point dtype"),
    "nan": (lambda z: z.index_fill(0, torch.tensor([2]), float("nan")), ValueError,
            "must be finite"),
    "inf": (lambda z: z.index_fill(0, torch.tensor([5]), float("inf")), ValueError,
            "must be finite"),
}


class TestBadInput:
    @pytest.mark.parametrize("case", sorted(BAD_INPUTS))
    @pytest.mark.parametrize("name", _with_recipe(CLASSES))
    def test_raises_with_the_shared_message(self, name, case):
        obj, role = _make(name)
        z, y = _batch()
        spoil, exc, match = BAD_INPUTS[case]
        with pytest.raises(exc, match=match):
            _call(obj, role, spoil(z), y)


def _perturb(obj):
    """Change every parameter and buffer of ``obj`` (so that a lost state shows)."""
    with torch.no_grad():
        for t in list(obj.parameters()) + list(obj.buffers()):
            if t.dtype.is_floating_point:
                t.add_(torch.randn_like(t))


class TestState:
    @pytest.mark.parametrize("name", _with_recipe(CLASSES))
    def test_pickles_and_deep_copies(self, name):
        obj, role = _make(name)
        _perturb(obj)
        z, y = _batch()
        want = _call(obj, role, z, y)
        for clone in (pickle.loads(pickle.dumps(obj)), copy.deepcopy(obj)):
            assert type(clone) is type(obj)
            _same(_call(clone, role, z, y), want)

    @pytest.mark.parametrize("name", _with_recipe(CLASSES))
    def test_state_dict_round_trips(self, name):
        obj, role = _make(name, seed=0)
        _perturb(obj)
        fresh, _ = _make(name, seed=1)
        z, y = _batch()
        state = obj.state_dict()
        assert set(fresh.state_dict()) == set(state)
        if state:  # the test can fail: without the state the outputs differ
            assert not torch.equal(_call(fresh, role, z, y), _call(obj, role, z, y))
        fresh.load_state_dict(state)
        _same(_call(fresh, role, z, y), _call(obj, role, z, y))


LOW_PRECISION = [torch.bfloat16, torch.float16]


class TestLowPrecision:
    """bfloat16 / float16 embeddings, as autocast hands them, on the CPU: every class works and
    gives what it gives for the same (rounded) rows in float32. The float32 value is the
    reference; only the wrapped PML loss of ``AntiCollapseLoss`` computes in the low dtype, hence
    the tolerance."""

    @pytest.mark.parametrize("low", LOW_PRECISION, ids=["bf16", "fp16"])
    @pytest.mark.parametrize("name", _of_role("regularizer", "loss"))
    def test_value_and_gradient(self, name, low):
        from tests.conftest import TOLERANCES

        obj, role = _make(name)
        z, y = _batch()
        rounded = z.to(low)
        zl = rounded.clone().requires_grad_(True)
        out = _call(obj, role, zl, y)
        out.backward()
        assert out.dim() == 0 and torch.isfinite(out)
        assert zl.grad.dtype == low and torch.isfinite(zl.grad).all()
        z32 = rounded.float().requires_grad_(True)
        want = _call(_make(name)[0], role, z32, y)
        want.backward()
        torch.testing.assert_close(out.float(), want, **TOLERANCES[low])
        cos = torch.nn.functional.cosine_similarity(zl.grad.float().flatten(),
                                                    z32.grad.flatten(), dim=0)
        assert cos > 0.99, float(cos)

    @pytest.mark.parametrize("name", _of_role("regularizer", "loss"))
    def test_under_autocast(self, name):
        obj, role = _make(name)
        z, y = _batch()
        lin = torch.nn.Linear(D, D)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            x = lin(z)
            assert x.dtype == torch.bfloat16
            out = _call(obj, role, x, y)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(lin.weight.grad).all()

    @pytest.mark.parametrize("low", LOW_PRECISION, ids=["bf16", "fp16"])
    @pytest.mark.parametrize("name", _of_role("miner"))
    def test_miner_mines_the_rounded_rows(self, name, low):
        obj, role = _make(name)
        z, y = _batch()
        got = _call(obj, role, z.to(low), y)
        want = _call(_make(name)[0], role, z.to(low).float(), y)
        _same(got, want)


@pytest.mark.parametrize("name", CLASSES)
def test_every_public_class_has_a_runnable_example(name):
    # pytest runs it (--doctest-modules on the package); here: that there is one
    doc = inspect.getdoc(getattr(pml_anticollapse, name)) or ""
    assert "Example:" in doc and ">>> " in doc, f"{name} has no Example section"
