"""AntiCollapseLoss and MCR2Loss against float64 references and PML's contracts."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from pytorch_metric_learning import losses, reducers

from pml_anticollapse import AntiCollapseLoss, CodingRateRegularizer, MCR2Loss
from pml_anticollapse._settings import CodingRateSettings
from tests.reference import ref_acl_official_term, ref_coding_rate, ref_rate_reduction

C, D, M = 10, 16, 24

# proxy rows and each row's class, written independently of the package
PROXY_LOSSES = {
    "ProxyAnchorLoss": (lambda loss: loss.proxies, 1),
    "ProxyNCALoss": (lambda loss: loss.proxies, 1),
    "NormalizedSoftmaxLoss": (lambda loss: loss.W.t(), 1),
    "ArcFaceLoss": (lambda loss: loss.W.t(), 1),
    "CosFaceLoss": (lambda loss: loss.W.t(), 1),
    "SubCenterArcFaceLoss": (lambda loss: loss.W.t(), 3),  # 3 sub-centres per class by default
    "SoftTripleLoss": (lambda loss: loss.fc.t(), 10),  # 10 centres per class by default
}


def _batch(num_present=6):
    torch.manual_seed(5)
    z = torch.randn(M, D, requires_grad=True)
    y = torch.arange(M) % num_present  # classes 0..num_present-1 present, the rest absent
    return z, y


class TestEmbeddingTerm:
    def test_wrapped_loss_plus_minus_rate(self):
        z, y = _batch()
        acl = AntiCollapseLoss(losses.TripletMarginLoss(), ac_weight=0.7, loss_weight=2.0)
        expected = 2.0 * losses.TripletMarginLoss()(z, y).double() - 0.7 * ref_coding_rate(z)
        torch.testing.assert_close(acl(z, y).double(), expected, rtol=1e-5, atol=1e-6)

    def test_exp_form(self):
        z, y = _batch()
        acl = AntiCollapseLoss(losses.ContrastiveLoss(), form="exp", gamma=0.3, eps=0.5)
        expected = losses.ContrastiveLoss()(z, y).double() + torch.exp(
            -0.3 * ref_coding_rate(z, eps_sq=0.25)
        )
        torch.testing.assert_close(acl(z, y).double(), expected, rtol=1e-5, atol=1e-6)

    def test_each_term_is_its_own_sub_loss(self):
        acl = AntiCollapseLoss(losses.ProxyAnchorLoss(C, D), target="both")
        assert acl.sub_loss_names() == ["loss", "embedding_anti_collapse", "proxy_anti_collapse"]
        assert isinstance(acl.reducer, reducers.MultipleReducers)
        z, y = _batch()
        loss_dict = acl.compute_loss(z, y, None, z, y)
        assert set(loss_dict) == {"loss", "embedding_anti_collapse", "proxy_anti_collapse"}

    def test_statistics(self):
        z, y = _batch()
        acl = AntiCollapseLoss(losses.ProxyAnchorLoss(C, D), target="both", collect_stats=True)
        acl(z, y)
        want = ref_coding_rate(z).item()
        assert acl.embedding_coding_rate.item() == pytest.approx(want, rel=1e-5)
        assert acl.proxy_coding_rate.item() > 0

    def test_works_with_a_miner_and_ref_emb(self):
        z, y = _batch()
        ref = torch.randn(10, D)
        ref_y = torch.arange(10) % 6
        acl = AntiCollapseLoss(losses.ContrastiveLoss())
        expected = losses.ContrastiveLoss()(z, y, None, ref, ref_y).double() - ref_coding_rate(z)
        got = acl(z, y, None, ref, ref_y).double()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


class TestProxyTerm:
    @pytest.mark.parametrize("name", sorted(PROXY_LOSSES))
    @pytest.mark.parametrize("proxy_set", ["batch", "all"])
    def test_rate_of_the_proxies(self, name, proxy_set):
        z, y = _batch(num_present=6)
        inner = getattr(losses, name)(num_classes=C, embedding_size=D)
        bare = copy.deepcopy(inner)
        acl = AntiCollapseLoss(inner, target="proxies", proxy_set=proxy_set, ac_weight=0.5)
        rows_of, per_class = PROXY_LOSSES[name]
        rows = rows_of(bare)
        if proxy_set == "batch":
            keep = torch.isin(torch.arange(rows.shape[0]) // per_class, y)
            assert keep.sum() == 6 * per_class
            rows = rows[keep]
        expected = bare(z, y).double() - 0.5 * ref_coding_rate(rows)
        out = acl(z, y)
        torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
        out.backward()
        (weight,) = [p for p in inner.parameters() if p.dim() == 2]
        assert torch.isfinite(weight.grad).all() and weight.grad.abs().sum() > 0

    def test_official_mode_equals_the_official_term(self):
        z, y = _batch(num_present=6)
        inner = losses.ProxyAnchorLoss(C, D, margin=0.1, alpha=64)
        bare = copy.deepcopy(inner)
        acl = AntiCollapseLoss.official(inner)
        present = torch.unique(y)
        expected = 0.0035 * bare(z, y).double() + ref_acl_official_term(bare.proxies, present)
        torch.testing.assert_close(acl(z, y).double(), expected, rtol=1e-5, atol=1e-6)

    def test_official_mode_departs_from_the_standard_rate(self):
        z, y = _batch(num_present=6)
        standard = AntiCollapseLoss(losses.ProxyAnchorLoss(C, D), target="proxies", form="exp")
        official = AntiCollapseLoss.official(copy.deepcopy(standard.loss), loss_weight=1.0)
        assert not torch.allclose(standard(z, y), official(z, y))

    def test_gradcheck(self):
        z = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
        y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        inner = losses.ProxyAnchorLoss(6, 5).double()
        for acl in (
            AntiCollapseLoss(inner, target="both"),
            AntiCollapseLoss.official(inner),
            AntiCollapseLoss(losses.ContrastiveLoss(), form="exp"),
        ):
            assert torch.autograd.gradcheck(lambda t, acl=acl: acl(t, y), (z,))
        acl = AntiCollapseLoss(inner, target="proxies")
        proxies = inner.proxies.detach().clone().requires_grad_(True)
        assert torch.autograd.gradcheck(
            lambda p: torch.func.functional_call(acl, {"loss.proxies": p}, (z.detach(), y)),
            (proxies,),
        )


class TestOneObjectiveTwoWays:
    """The two spellings the docstrings name for one objective give the same value and
    gradient (the regularizer way is the recommended one)."""

    @pytest.mark.parametrize("form", ["neg", "exp"])
    def test_embedding_term(self, form):
        z, y = _batch()
        z2 = z.detach().clone().requires_grad_(True)
        acl = AntiCollapseLoss(losses.TripletMarginLoss(), ac_weight=0.3, form=form, gamma=0.5)
        reg = losses.TripletMarginLoss(
            embedding_regularizer=CodingRateRegularizer(form=form, gamma=0.5),
            embedding_reg_weight=0.3,
        )
        a, b = acl(z, y), reg(z2, y)
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        a.backward()
        b.backward()
        torch.testing.assert_close(z.grad, z2.grad, rtol=1e-6, atol=1e-7)

    def test_all_proxies(self):
        z, y = _batch()
        inner = losses.ProxyAnchorLoss(C, D)
        with_reg = losses.ProxyAnchorLoss(
            C, D, weight_regularizer=CodingRateRegularizer(), weight_reg_weight=0.4
        )
        with_reg.load_state_dict(inner.state_dict())
        acl = AntiCollapseLoss(inner, target="proxies", proxy_set="all", ac_weight=0.4)
        a, b = acl(z, y), with_reg(z, y)
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        a.backward()
        b.backward()
        torch.testing.assert_close(inner.proxies.grad, with_reg.proxies.grad, rtol=1e-6,
                                   atol=1e-7)


    def test_inside_cross_batch_memory_through_the_inner_loss(self):
        """The docstrings' way round CrossBatchMemory refusing the classes: the regularizer on
        the inner loss measures each batch (not the memory)."""
        def memory(**kwargs):
            return losses.CrossBatchMemory(losses.ContrastiveLoss(**kwargs), D, memory_size=48)

        with_reg = memory(embedding_regularizer=CodingRateRegularizer(), embedding_reg_weight=0.5)
        bare = memory()
        y = torch.arange(M) % 6
        for step in range(3):  # the memory fills up: the pair term changes, the rate term not
            z = torch.randn(M, D, generator=torch.Generator().manual_seed(step))
            want = bare(z, y).double() - 0.5 * ref_coding_rate(z)
            torch.testing.assert_close(with_reg(z, y).double(), want, rtol=1e-5, atol=1e-6)


class TestSharedSettings:
    def test_one_frozen_spec(self):
        import dataclasses

        acl = AntiCollapseLoss(losses.ContrastiveLoss(), eps=0.5, form="exp", gamma=2.0)
        assert acl.settings == CodingRateSettings(eps_sq=0.25, form="exp", gamma=2.0)
        assert (acl.eps_sq, acl.form, acl.gamma, acl.normalize, acl.check) == (
            0.25, "exp", 2.0, True, None
        )
        with pytest.raises(dataclasses.FrozenInstanceError):
            acl.settings.eps_sq = 1.0
        with pytest.raises(AttributeError):
            acl.eps_sq = 1.0
        assert MCR2Loss(eps_sq=0.3).settings == CodingRateRegularizer(eps_sq=0.3).settings

    def test_spec_validates_however_it_is_built(self):
        import dataclasses

        with pytest.raises(ValueError, match="form must be one of 'neg', 'exp', got 'log'"):
            dataclasses.replace(CodingRateSettings(), form="log")
        with pytest.raises(TypeError, match="normalize must be a bool"):
            CodingRateSettings(normalize="yes")

    def test_rate_is_the_coding_rate(self):
        z, _ = _batch()
        for obj in (AntiCollapseLoss(losses.ContrastiveLoss(), eps_sq=0.3),
                    CodingRateRegularizer(eps_sq=0.3), MCR2Loss(eps_sq=0.3)):
            torch.testing.assert_close(
                obj.rate(z).double(), ref_coding_rate(z, eps_sq=0.3), rtol=1e-5, atol=1e-6
            )

    def test_repr_shows_the_settings_a_class_takes(self):
        assert "eps_sq=0.5, normalize=True, check=None, distributed='global'" in repr(MCR2Loss())
        assert "form=" not in repr(MCR2Loss())
        assert "form='exp', gamma=2.0" in repr(CodingRateRegularizer(form="exp", gamma=2.0))


class TestMCR2Loss:
    @pytest.mark.parametrize("m,d", [(24, 16), (12, 40)])
    def test_equals_minus_rate_reduction(self, m, d, dtype):
        z = torch.randn(m, d, dtype=dtype)
        y = torch.randint(0, 4, (m,))
        delta_r, _, _ = ref_rate_reduction(z, y)
        out = MCR2Loss()(z, y)
        assert out.item() == pytest.approx(-delta_r.item(), rel=1e-5, abs=1e-6)

    def test_ref_emb_is_the_union(self):
        z, y = torch.randn(10, 8), torch.arange(10) % 3
        ref, ref_y = torch.randn(14, 8), torch.arange(14) % 4
        out = MCR2Loss()(z, y, None, ref, ref_y)
        delta_r, _, _ = ref_rate_reduction(torch.cat([z, ref]), torch.cat([y, ref_y]))
        assert out.item() == pytest.approx(-delta_r.item(), rel=1e-5)

    def test_gradcheck_and_stats(self):
        z = torch.randn(9, 6, dtype=torch.float64, requires_grad=True)
        y = torch.arange(9) % 3
        loss = MCR2Loss(collect_stats=True)
        assert torch.autograd.gradcheck(lambda t: loss(t, y), (z,))
        _, r, r_c = ref_rate_reduction(z, y)
        assert loss.coding_rate.item() == pytest.approx(r.item())
        assert loss.compression_rate.item() == pytest.approx(r_c.item())

    def test_inside_anti_collapse_loss(self):
        z, y = _batch()
        acl = AntiCollapseLoss(MCR2Loss(), ac_weight=0.5)
        delta_r, r, _ = ref_rate_reduction(z, y)
        torch.testing.assert_close(acl(z, y).double(), -delta_r - 0.5 * r, rtol=1e-5, atol=1e-6)


class TestBadInput:
    def test_wrapped_must_be_a_pml_loss(self):
        msg = "loss must be a pytorch_metric_learning BaseMetricLossFunction, got Linear"
        with pytest.raises(TypeError, match=msg):
            AntiCollapseLoss(torch.nn.Linear(2, 2))

    def test_proxies_need_a_proxy_loss(self):
        with pytest.raises(TypeError, match="loss must be a PML proxy loss .* got ContrastiveLoss"):
            AntiCollapseLoss(losses.ContrastiveLoss(), target="proxies")

    @pytest.mark.parametrize("kwargs,match", [
        (
            dict(target="weights"),
            "target must be one of 'embeddings', 'proxies', 'both', got 'weights'",
        ),
        (dict(proxy_set="some"), "proxy_set must be one of 'batch', 'all', got 'some'"),
        (dict(form="linear"), "form must be one of 'neg', 'exp'"),
        (dict(ac_weight=-1.0), "ac_weight must be a finite number >= 0, got -1.0"),
        (dict(eps_sq=0), "eps_sq must be a finite number > 0"),
    ])
    def test_settings(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            AntiCollapseLoss(losses.ProxyAnchorLoss(C, D), **kwargs)

    def test_labels(self):
        z = torch.randn(6, D)
        with pytest.raises(ValueError, match="labels are required, got None"):
            MCR2Loss()(z)
        with pytest.raises(ValueError, match="indices_tuple is not supported"):
            MCR2Loss()(z, torch.arange(6), (torch.arange(2), torch.arange(2), torch.arange(2)))
        with pytest.raises(ValueError, match="z must be finite"):
            MCR2Loss()(torch.full((6, D), float("nan")), torch.arange(6))


# ---------------------------------------------------------------- bad inputs, one row each

# (id, call, error type, message regex from its start), evaluated with the names of _namespace();
# the same rows are listed in the docs' bad-input table (docs/errors.md).
BAD_INPUT_ROWS = [
    ("mcr2-num-classes-0", 'MCR2Loss(num_classes=0)', ValueError,
     r"num_classes must be an int >= 1, got 0"),
    ("mcr2-num-classes-str", 'MCR2Loss(num_classes="3")', TypeError,
     r"num_classes must be an int, got str '3'"),
    ("mcr2-num-classes-float", 'MCR2Loss(num_classes=2.0)', TypeError,
     r"num_classes must be an int, got float 2\.0"),
    ("mcr2-normalize-str", 'MCR2Loss(normalize="False")', TypeError,
     r"normalize must be a bool \(True or False\), got str 'False'"),
    ("mcr2-check-int", 'MCR2Loss(check=1)', TypeError,
     r"check must be a bool \(True or False\), got int 1"),
    ("mcr2-distributed", 'MCR2Loss(distributed="all")', ValueError,
     r"distributed must be one of 'global', 'local', got 'all'"),
    ("mcr2-3d", 'MCR2Loss()(torch.zeros(6, 2, 2), labels)', ValueError,
     r"embeddings must have shape \(batch_size, dim\), got \(6, 2, 2\)"),
    ("mcr2-int-embeddings", 'MCR2Loss()(z.long(), labels)', TypeError,
     r"embeddings must have a floating-point dtype .*got torch\.int64"),
    ("mcr2-no-labels", 'MCR2Loss()(z)', ValueError, r"labels are required, got None"),
    ("mcr2-ref-dim", 'MCR2Loss()(z, labels, None, torch.randn(5, 3), labels[:5])', ValueError,
     r"ref_emb must have dim 4 like the embeddings, got 3"),
    ("mcr2-ref-dtype", 'MCR2Loss()(z, labels, None, z.double(), labels)', TypeError,
     r"ref_emb must have the embeddings' dtype \(torch\.float32\), got torch\.float64"),
    ("mcr2-ref-device", 'MCR2Loss()(z, labels, None, z.to("meta"), labels)', ValueError,
     r"ref_emb must be on the embeddings' device \(cpu\), got meta"),
    ("mcr2-ref-no-labels", 'MCR2Loss()(z, labels, None, z + 1)', ValueError,
     r"ref_emb and ref_labels must be given together, got ref_emb=a tensor, ref_labels=None"),
    ("mcr2-ref-labels-float", 'MCR2Loss()(z, labels, None, z + 1, labels.float())', TypeError,
     r"ref_labels must have an integer dtype, got torch\.float32"),
    ("mcr2-indices-tuple", 'MCR2Loss()(z, labels, (labels, labels, labels))', ValueError,
     r"indices_tuple is not supported by MCR2Loss, which measures the rate reduction of the "
     r"whole batch"),
    ("mcr2-in-cross-batch-memory", 'CrossBatchMemory(MCR2Loss(), 4, memory_size=8)', Exception,
     r"CrossBatchMemory not supported for MCR2Loss"),
    ("acl-in-cross-batch-memory",
     'CrossBatchMemory(AntiCollapseLoss(ContrastiveLoss()), 4, memory_size=8)', Exception,
     r"CrossBatchMemory not supported for AntiCollapseLoss"),
    ("acl-wraps-cross-batch-memory",
     'AntiCollapseLoss(CrossBatchMemory(ContrastiveLoss(), 4, memory_size=8))', TypeError,
     r"loss must be a pytorch_metric_learning BaseMetricLossFunction, got CrossBatchMemory, "
     r"which AntiCollapseLoss cannot wrap"),
    ("acl-normalize-str", 'AntiCollapseLoss(ContrastiveLoss(), normalize="yes")', TypeError,
     r"normalize must be a bool \(True or False\), got str 'yes'"),
    ("acl-check-str", 'AntiCollapseLoss(ContrastiveLoss(), check="no")', TypeError,
     r"check must be a bool \(True or False\), got str 'no'"),
    ("acl-loss-weight-str", 'AntiCollapseLoss(ContrastiveLoss(), loss_weight="1")', TypeError,
     r"loss_weight must be a non-negative number, got str"),
    ("acl-gamma-zero", 'AntiCollapseLoss(ContrastiveLoss(), form="exp", gamma=0)', ValueError,
     r"gamma must be a finite number > 0, got 0"),
    ("acl-proxies-of-pair-loss", 'AntiCollapseLoss(ContrastiveLoss(), target="proxies")',
     TypeError, r"loss must be a PML proxy loss .*got ContrastiveLoss"),
    ("acl-3d", 'AntiCollapseLoss(ContrastiveLoss())(torch.zeros(6, 2, 2), labels)', ValueError,
     r"embeddings must have shape \(batch_size, dim\), got \(6, 2, 2\)"),
    ("acl-labels-short", 'AntiCollapseLoss(ContrastiveLoss())(z, labels[:5])', ValueError,
     r"labels must have shape \(6,\) to match the embeddings, got \(5,\)"),
    ("acl-ref-dim", 'AntiCollapseLoss(ContrastiveLoss())(z, labels, None, torch.randn(5, 3), '
     'labels[:5])', ValueError, r"ref_emb must have dim 4 like the embeddings, got 3"),
    ("acl-ref-device", 'AntiCollapseLoss(ContrastiveLoss())(z, labels, None, z.to("meta"), '
     'labels)', ValueError, r"ref_emb must be on the embeddings' device \(cpu\), got meta"),
    ("acl-ref-no-labels", 'AntiCollapseLoss(ContrastiveLoss())(z, labels, None, z + 1)',
     ValueError, r"ref_emb and ref_labels must be given together"),
    ("acl-ref-nan", 'AntiCollapseLoss(ContrastiveLoss())(z, labels, None, z_nan, labels)',
     ValueError, r"ref_emb must be finite, got NaN or inf values \(first in row 2\)"),
    ("acl-proxies-nan", 'AntiCollapseLoss(ProxyAnchorLoss(3, 4), target="proxies")(z_nan, '
     'labels)', ValueError, r"embeddings must be finite, got NaN or inf values \(first in row 2\)"),
    ("acl-proxies-no-labels", 'AntiCollapseLoss(ProxyAnchorLoss(3, 4), target="proxies")(z)',
     ValueError, r"labels are required, got None"),
    ("acl-proxies-float-labels",
     'AntiCollapseLoss(ProxyAnchorLoss(3, 4), target="proxies")(z, labels.float())', TypeError,
     r"labels must have an integer dtype, got torch\.float32"),
    ("reg-normalize-str", 'CodingRateRegularizer(normalize="yes")', TypeError,
     r"normalize must be a bool \(True or False\), got str 'yes'"),
    ("reg-check-str", 'CodingRateRegularizer(check="no")', TypeError,
     r"check must be a bool \(True or False\), got str 'no'"),
    ("reg-variant", 'CodingRateRegularizer(variant="paper")', ValueError,
     r"variant must be one of 'standard', 'acl_official', got 'paper'"),
    ("reg-distributed", 'CodingRateRegularizer(distributed=True)', ValueError,
     r"distributed must be one of 'global', 'local', got True"),
    ("reg-eps-and-eps-sq", 'CodingRateRegularizer(eps=0.5, eps_sq=0.25)', ValueError,
     r"give either eps \(ε\) or eps_sq \(ε²\), not both"),
    ("reg-3d", 'CodingRateRegularizer()(torch.zeros(6, 2, 2))', ValueError,
     r"z must have shape \(batch_size, dim\), got \(6, 2, 2\)"),
    ("reg-inf", 'CodingRateRegularizer()(z_inf)', ValueError, r"z must be finite"),
    ("penalty-form", 'F.rate_penalty(torch.tensor(1.0), "log")', ValueError,
     r"form must be one of 'neg', 'exp', got 'log'"),
    ("penalty-gamma", 'F.rate_penalty(torch.tensor(1.0), "exp", gamma=-1.0)', ValueError,
     r"gamma must be a finite number > 0, got -1\.0"),
    ("running-in-kind", 'D.running_in("DDP").__enter__()', ValueError,
     r"kind must be one of 'wrapper', 'wrapper-efficient', 'ddp', got 'DDP'"),
    ("running-in-user-ref", 'D.running_in("ddp", user_ref="yes").__enter__()', TypeError,
     r"user_ref must be a bool \(True or False\), got str 'yes'"),
]


def _namespace():
    import pml_anticollapse
    from pml_anticollapse import distributed as D

    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    z_nan, z_inf = z.clone(), z.clone()
    z_nan[2, 1] = float("nan")
    z_inf[2, 0] = float("inf")
    return dict(
        torch=torch, F=pml_anticollapse.functional, D=D, z=z, z_nan=z_nan, z_inf=z_inf,
        labels=torch.tensor([0, 0, 1, 1, 2, 2]), AntiCollapseLoss=AntiCollapseLoss,
        MCR2Loss=MCR2Loss, CodingRateRegularizer=CodingRateRegularizer,
        ContrastiveLoss=losses.ContrastiveLoss, ProxyAnchorLoss=losses.ProxyAnchorLoss,
        CrossBatchMemory=losses.CrossBatchMemory,
    )


class TestBadInputRows:
    @pytest.mark.parametrize("call, exc, pattern", [r[1:] for r in BAD_INPUT_ROWS],
                             ids=[r[0] for r in BAD_INPUT_ROWS])
    def test_row(self, call, exc, pattern):
        with pytest.raises(exc) as info:
            eval(call, _namespace())
        assert type(info.value) is exc, f"{type(info.value).__name__}: {info.value}"
        assert re.match(pattern, str(info.value)), str(info.value)

    def test_ids_are_distinct(self):
        assert len({r[0] for r in BAD_INPUT_ROWS}) == len(BAD_INPUT_ROWS)
