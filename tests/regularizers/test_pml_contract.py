"""CodingRateRegularizer on every PML loss that takes a regularizer.

Identity checked for each: loss(z, y) with the regularizer equals the bare loss (same weights)
plus weight × (−R), R from the float64 eigenvalue reference on the tensor PML hands over.
"""

from __future__ import annotations

import copy

import pytest
import torch

from pml_anticollapse import CodingRateRegularizer
from tests.reference import ref_coding_rate, ref_effective_rank
from tests.regularizers.pml_losses import (
    ALL_LOSSES,
    WEIGHT_LOSSES,
    WEIGHT_ROWS,
    C,
    D,
    M,
    call_loss,
    make_loss,
)

REG_WEIGHT = 0.37


def _batch():
    torch.manual_seed(3)
    z = torch.randn(M, D, requires_grad=True)
    y = torch.arange(M) % C
    return z, y


def test_the_lists_cover_pml():
    assert len(ALL_LOSSES) >= 35 and len(WEIGHT_LOSSES) == len(WEIGHT_ROWS)
    assert set(WEIGHT_LOSSES) == set(WEIGHT_ROWS)


class TestEmbeddingRegularizer:
    # GenericPairLoss is abstract: nothing to construct, so no case (rather than an empty pass)
    @pytest.mark.parametrize("name", [n for n in ALL_LOSSES if n != "GenericPairLoss"])
    def test_loss_plus_weight_times_regularizer(self, name):
        if name == "VICRegLoss":
            with pytest.raises(ValueError, match="cannot use a regularizer"):
                make_loss(name, embedding_regularizer=CodingRateRegularizer())
            return
        z, y = _batch()
        bare = make_loss(name)
        reg = make_loss(
            name, embedding_regularizer=CodingRateRegularizer(), embedding_reg_weight=REG_WEIGHT
        )
        reg.load_state_dict(copy.deepcopy(bare.state_dict()))
        out = call_loss(reg, z, y)
        expected = call_loss(bare, z, y).double() - REG_WEIGHT * ref_coding_rate(z)
        assert out.dim() == 0 and torch.isfinite(out)
        torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
        out.backward()
        assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


class TestWeightRegularizer:
    @pytest.mark.parametrize("name", WEIGHT_LOSSES)
    @pytest.mark.parametrize("form", ["neg", "exp"])
    def test_loss_plus_weight_times_regularizer(self, name, form):
        z, y = _batch()
        bare = make_loss(name)
        reg = make_loss(
            name,
            weight_regularizer=CodingRateRegularizer(form=form, gamma=0.5),
            weight_reg_weight=REG_WEIGHT,
        )
        reg.load_state_dict(copy.deepcopy(bare.state_dict()))
        rate = ref_coding_rate(WEIGHT_ROWS[name](bare))
        penalty = -rate if form == "neg" else torch.exp(-0.5 * rate)
        out = reg(z, y)
        torch.testing.assert_close(
            out.double(), bare(z, y).double() + REG_WEIGHT * penalty, rtol=1e-5, atol=1e-5
        )
        out.backward()
        weight = next(p for p in reg.parameters() if p.dim() == 2)
        assert torch.isfinite(weight.grad).all() and weight.grad.abs().sum() > 0
        assert torch.isfinite(z.grad).all()


class TestRegularizerModule:
    def test_statistics_are_recorded_only_when_asked(self):
        z = torch.randn(20, 8)
        on = CodingRateRegularizer(collect_stats=True)
        on(z)
        assert on.coding_rate.item() == pytest.approx(ref_coding_rate(z).item(), rel=1e-5)
        assert on.effective_rank.item() == pytest.approx(ref_effective_rank(z), rel=1e-5)
        assert "coding_rate" in on._record_these_stats
        off = CodingRateRegularizer(collect_stats=False)
        off(z)
        assert "coding_rate" not in getattr(off, "_record_these_stats", [])

    def test_gradcheck(self):
        z = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
        for form in ("neg", "exp"):
            reg = CodingRateRegularizer(form=form)
            assert torch.autograd.gradcheck(reg, (z,))

    @pytest.mark.parametrize("kwargs,exc,match", [
        (dict(form="log"), ValueError, "form must be one of 'neg', 'exp', got 'log'"),
        (dict(gamma=0), ValueError, "gamma must be a finite number > 0, got 0"),
        (dict(eps=-0.1), ValueError, "eps must be a finite number > 0"),
        (dict(variant="x"), ValueError, "variant must be one of"),
        (dict(gamma="1"), TypeError, "gamma must be a positive number, got str"),
    ])
    def test_bad_arguments(self, kwargs, exc, match):
        with pytest.raises(exc, match=match):
            CodingRateRegularizer(**kwargs)


class TestCheckPolicy:
    def test_cpu_default_raises_on_nan(self):
        z = torch.randn(6, 4)
        z[1, 2] = float("nan")
        with pytest.raises(ValueError, match="z must be finite"):
            CodingRateRegularizer()(z)

    def test_check_false_lets_nan_through_without_raising(self):
        z = torch.randn(6, 4)
        z[1, 2] = float("nan")
        assert torch.isnan(CodingRateRegularizer(check=False)(z))

    def test_default_policy_skips_the_sync_off_cpu(self):
        from pml_anticollapse.functional._checks import resolve_check

        assert resolve_check(None, torch.empty(1)) is True
        assert resolve_check(None, torch.empty(1, device="meta")) is False  # stands for CUDA
        assert resolve_check(True, torch.empty(1, device="meta")) is True
        assert resolve_check(False, torch.empty(1)) is False


class TestRatePenalty:
    """functional.rate_penalty, the one penalty the regularizer and AntiCollapseLoss use."""

    @pytest.mark.parametrize("rate", [0.0, 0.7, 3.6])
    def test_closed_forms_and_gradients(self, rate):
        import math

        from pml_anticollapse.functional import rate_penalty

        r = torch.tensor(rate, dtype=torch.float64, requires_grad=True)
        neg = rate_penalty(r)
        (g_neg,) = torch.autograd.grad(neg, r)
        assert (neg.item(), g_neg.item()) == (-rate, -1.0)
        exp = rate_penalty(r, "exp", gamma=0.5)
        (g_exp,) = torch.autograd.grad(exp, r)
        assert exp.item() == pytest.approx(math.exp(-0.5 * rate), rel=1e-12)
        assert g_exp.item() == pytest.approx(-0.5 * math.exp(-0.5 * rate), rel=1e-12)

    def test_the_classes_use_it(self, monkeypatch):
        from pml_anticollapse.functional import penalties

        calls = []
        real = penalties.rate_penalty
        monkeypatch.setattr(
            "pml_anticollapse._settings.rate_penalty",
            lambda *a: calls.append(a[1:]) or real(*a),
        )
        CodingRateRegularizer(form="exp", gamma=0.25)(torch.randn(6, 4))
        assert calls == [("exp", 0.25)]


class TestStatsAdapter:
    """pml_anticollapse._pml2.stats: the one place PML 2's recorded statistics are used."""

    def test_declare_and_record(self):
        from pml_anticollapse._pml2.stats import declare_attributes, declare_stats, record_stats

        on, off = CodingRateRegularizer(collect_stats=True), CodingRateRegularizer()
        for reg in (on, off):
            declare_stats(reg, "probe")
            declare_attributes(reg, "gamma")
            record_stats(reg, probe=torch.tensor(2.0, requires_grad=True) * 1)
        assert "probe" in on._record_these_stats and "gamma" in on._record_these
        assert on.probe.item() == 2.0 and not on.probe.requires_grad
        assert "probe" not in getattr(off, "_record_these_stats", [])
        assert "gamma" in off._record_these
        assert not hasattr(off, "probe")
