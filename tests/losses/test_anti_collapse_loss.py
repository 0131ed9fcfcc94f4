"""AntiCollapseLoss and MCR2Loss against float64 references and PML's contracts."""

from __future__ import annotations

import copy

import pytest
import torch
from pytorch_metric_learning import losses, reducers

from pml_anticollapse import AntiCollapseLoss, MCR2Loss
from tests.reference import ref_acl_official_term, ref_coding_rate, ref_rate_reduction

C, D, M = 10, 16, 24

# proxy rows and each row's class, written independently of the package
PROXY_LOSSES = {
    "ProxyAnchorLoss": (lambda l: l.proxies, 1),
    "ProxyNCALoss": (lambda l: l.proxies, 1),
    "NormalizedSoftmaxLoss": (lambda l: l.W.t(), 1),
    "ArcFaceLoss": (lambda l: l.W.t(), 1),
    "CosFaceLoss": (lambda l: l.W.t(), 1),
    "SubCenterArcFaceLoss": (lambda l: l.W.t(), 3),  # 3 sub-centres per class by default
    "SoftTripleLoss": (lambda l: l.fc.t(), 10),  # 10 centres per class by default
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
            assert torch.autograd.gradcheck(lambda t: acl(t, y), (z,))
        acl = AntiCollapseLoss(inner, target="proxies")
        proxies = inner.proxies.detach().clone().requires_grad_(True)
        assert torch.autograd.gradcheck(
            lambda p: torch.func.functional_call(acl, {"loss.proxies": p}, (z.detach(), y)),
            (proxies,),
        )


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
