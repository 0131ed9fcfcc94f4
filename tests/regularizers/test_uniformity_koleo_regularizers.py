"""UniformityRegularizer / KoLeoRegularizer: what they minimise, PML integration identities
(embedding_regularizer on pair losses, weight_regularizer on proxy losses), statistics,
gradients, constructor validation and the NaN policy."""

from __future__ import annotations

import copy

import pytest
import torch
from pytorch_metric_learning import losses

from pml_anticollapse import KoLeoRegularizer, UniformityRegularizer
from pml_anticollapse.functional import mean_log_nn_distance, uniformity
from tests.reference_spread import ref_mean_log_nn_distance, ref_uniformity
from tests.regularizers.pml_losses import ALL_LOSSES, WEIGHT_LOSSES, WEIGHT_ROWS
from tests.regularizers.pml_losses import call_loss as _call
from tests.regularizers.pml_losses import make_loss as _make_loss

C, D, M = 6, 16, 24
REG_WEIGHT = 0.37

# what each class minimises, from the float64 loop references: the papers' losses
PAPER_LOSS = {
    "uniformity": lambda x, **kw: -ref_uniformity(x, **kw),
    "koleo": lambda x, **kw: -ref_mean_log_nn_distance(x, **kw),
}
CLASSES = {"uniformity": UniformityRegularizer, "koleo": KoLeoRegularizer}
SETTINGS = {"uniformity": dict(t=1.5), "koleo": dict(eps=1e-6)}  # the references' names too


def _make(name, **kwargs):
    return CLASSES[name](**SETTINGS[name], **kwargs)


def _batch():
    torch.manual_seed(3)
    return torch.randn(M, D, requires_grad=True), torch.arange(M) % C


class TestWhatIsMinimised:
    @pytest.mark.parametrize("name", CLASSES)
    @pytest.mark.parametrize("normalize", [True, False])
    def test_the_papers_loss(self, name, normalize):
        z = torch.randn(M, D, dtype=torch.float64)
        out = _make(name, normalize=normalize)(z)
        expected = PAPER_LOSS[name](z, normalize=normalize, **SETTINGS[name])
        assert out.dim() == 0 and out.dtype == torch.float64
        torch.testing.assert_close(out.item(), expected, rtol=1e-10, atol=1e-12)

    def test_module_is_minus_the_function(self):
        z = torch.randn(M, D)
        torch.testing.assert_close(UniformityRegularizer(t=1.5)(z), -uniformity(z, 1.5))
        torch.testing.assert_close(KoLeoRegularizer(eps=1e-6)(z), -mean_log_nn_distance(z, 1e-6))

    @pytest.mark.parametrize("name", CLASSES)
    def test_a_spread_batch_costs_less_than_a_collapsed_one(self, name):
        spread = torch.eye(8)
        collapsed = torch.ones(8, 8) + 1e-3 * torch.randn(8, 8)
        reg = _make(name)
        assert reg(spread) < reg(collapsed)


class TestEmbeddingRegularizer:
    @pytest.mark.parametrize("name", CLASSES)
    def test_the_regularizer_adds_its_gradient(self, name):
        # the identities below would also hold with a detached term: the gradients must add up
        z, y = _batch()
        (g_bare,) = torch.autograd.grad(losses.ContrastiveLoss()(z, y), z)
        loss = losses.ContrastiveLoss(embedding_regularizer=_make(name), embedding_reg_weight=1.0)
        (g_reg,) = torch.autograd.grad(loss(z, y), z)
        (g_term,) = torch.autograd.grad(_make(name)(z), z)
        torch.testing.assert_close(g_reg, g_bare + g_term, rtol=1e-5, atol=1e-6)
        assert g_term.abs().sum() > 0


class TestEveryPMLLoss:
    """loss(z, y) with the regularizer = bare loss + weight × the paper's loss (float64 loop
    reference), on every PML loss that takes a regularizer — ContrastiveLoss and ProxyAnchorLoss
    among them (the loss list and constructors shared with the coding-rate contract test)."""

    @pytest.mark.parametrize("name", CLASSES)
    @pytest.mark.parametrize(
        "loss", [n for n in ALL_LOSSES if n not in ("GenericPairLoss", "VICRegLoss")]
    )
    def test_embedding_regularizer(self, name, loss):
        z, y = _batch()
        bare = _make_loss(loss)
        reg = _make_loss(loss, embedding_regularizer=_make(name), embedding_reg_weight=REG_WEIGHT)
        reg.load_state_dict(copy.deepcopy(bare.state_dict()))
        out = _call(reg, z, y)
        penalty = PAPER_LOSS[name](z, **SETTINGS[name])
        expected = _call(bare, z, y).double() + REG_WEIGHT * penalty
        torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
        out.backward()
        assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0

    @pytest.mark.parametrize("name", CLASSES)
    @pytest.mark.parametrize("loss", WEIGHT_LOSSES)
    def test_weight_regularizer(self, name, loss):
        z, y = _batch()
        bare = _make_loss(loss)
        reg = _make_loss(loss, weight_regularizer=_make(name), weight_reg_weight=REG_WEIGHT)
        reg.load_state_dict(copy.deepcopy(bare.state_dict()))
        penalty = PAPER_LOSS[name](WEIGHT_ROWS[loss](bare), **SETTINGS[name])
        out = reg(z, y)
        torch.testing.assert_close(
            out.double(), bare(z, y).double() + REG_WEIGHT * penalty, rtol=1e-5, atol=1e-5
        )


class TestRegularizerModule:
    @pytest.mark.parametrize("name,stat,fn", [
        ("uniformity", "uniformity", ref_uniformity),
        ("koleo", "mean_log_nn_distance", ref_mean_log_nn_distance),
    ])
    def test_statistics_are_recorded_only_when_asked(self, name, stat, fn):
        z = torch.randn(20, 8)
        on = _make(name, collect_stats=True)
        on(z)
        value = getattr(on, stat)
        assert not value.requires_grad
        assert value.item() == pytest.approx(fn(z, **SETTINGS[name]), rel=1e-5)
        assert stat in on._record_these_stats
        off = _make(name, collect_stats=False)
        off(z)
        assert stat not in getattr(off, "_record_these_stats", [])

    @pytest.mark.parametrize("name", CLASSES)
    def test_gradcheck(self, name):
        z = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(_make(name), (z,))

    @pytest.mark.parametrize("name", CLASSES)
    def test_duplicate_rows_give_finite_gradients(self, name):
        z = torch.randn(10, 4)
        z[5] = z[2]
        z.requires_grad_(True)
        out = _make(name)(z)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(z.grad).all()

    @pytest.mark.parametrize("cls,kwargs,exc,match", [
        (UniformityRegularizer, dict(t=0), ValueError, "t must be a finite number > 0, got 0"),
        (UniformityRegularizer, dict(t=-1.0), ValueError, "t must be a finite number > 0"),
        (UniformityRegularizer, dict(t="2"), TypeError, "t must be a positive number, got str"),
        (KoLeoRegularizer, dict(eps=0), ValueError, "eps must be a finite number > 0, got 0"),
        (KoLeoRegularizer, dict(eps=1e-45), ValueError, "eps must be >= 1e-30"),
        (KoLeoRegularizer, dict(eps=None), TypeError, "eps must be a positive number, got None"),
        (UniformityRegularizer, dict(normalize="yes"), TypeError,
         "normalize must be a bool \\(True or False\\), got str 'yes'"),
        (KoLeoRegularizer, dict(check="no"), TypeError,
         "check must be a bool \\(True or False\\), got str 'no'"),
    ])
    def test_bad_arguments(self, cls, kwargs, exc, match):
        with pytest.raises(exc, match=match):
            cls(**kwargs)


class TestCheckPolicy:
    @pytest.mark.parametrize("name", CLASSES)
    def test_cpu_default_raises_on_nan(self, name):
        z = torch.randn(6, 4)
        z[1, 2] = float("nan")
        with pytest.raises(ValueError, match="z must be finite"):
            _make(name)(z)

    @pytest.mark.parametrize("name", CLASSES)
    def test_check_false_lets_nan_through_without_raising(self, name):
        z = torch.randn(6, 4)
        z[1, 2] = float("inf")
        assert torch.isnan(_make(name, check=False)(z))

    @pytest.mark.parametrize("name", CLASSES)
    def test_nan_inside_a_pml_loss_raises(self, name):
        z, y = _batch()
        z = z.detach().clone()
        z[0, 0] = float("nan")
        loss = losses.ContrastiveLoss(embedding_regularizer=_make(name))
        with pytest.raises(ValueError, match="z must be finite"):
            loss(z, y)
