"""``compute_dtype`` through the classes: the setting reaches the rate, the loss stays float32."""

from __future__ import annotations

import pytest
import torch

from pml_anticollapse import AntiCollapseLoss, CodingRateRegularizer, MCR2Loss
from tests.reference import ref_coding_rate, ref_rate_reduction


def _collapsed(m: int = 64, d: int = 32, sigma: float = 0.01) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(1, d, generator=gen, dtype=torch.float64)
    return (base + sigma * torch.randn(m, d, generator=gen, dtype=torch.float64)).float()


def _grad(loss_of, z):
    z = z.clone().requires_grad_(True)
    loss = loss_of(z)
    (g,) = torch.autograd.grad(loss, z)
    return loss, g


def _ref_neg_rate_grad(z, eps_sq):
    x = z.detach().double().requires_grad_(True)
    xn = x / x.norm(dim=1, keepdim=True)
    m, d = x.shape
    r = 0.5 * torch.log1p(d / (m * eps_sq) * torch.linalg.eigvalsh(xn @ xn.T).clamp_min(0)).sum()
    (g,) = torch.autograd.grad(-r, x)
    return g


class TestRegularizer:
    def test_the_setting_is_kept_and_shown(self):
        reg = CodingRateRegularizer(compute_dtype=torch.float64)
        assert reg.compute_dtype is torch.float64 and reg.settings.compute_dtype is torch.float64
        assert "compute_dtype=torch.float64" in repr(reg)
        assert CodingRateRegularizer().compute_dtype is None

    def test_float64_compute_on_nearly_collapsed_rows(self):
        z = _collapsed()
        eps_sq = 1e-3
        loss, g = _grad(lambda t: CodingRateRegularizer(eps_sq=eps_sq,
                                                        compute_dtype=torch.float64)(t), z)
        assert loss.dtype == torch.float32 and g.dtype == torch.float32
        assert loss.item() == pytest.approx(-ref_coding_rate(z, eps_sq).item(), rel=1e-6)
        ref = _ref_neg_rate_grad(z, eps_sq)
        assert float((g.double() - ref).norm() / ref.norm()) <= 1e-5
        # the float32 default on the same rows is far off: the setting changed the computation
        _, g32 = _grad(lambda t: CodingRateRegularizer(eps_sq=eps_sq)(t), z)
        assert float((g32.double() - ref).norm() / ref.norm()) > 1e-4

    def test_pickles(self):
        import pickle

        reg = pickle.loads(pickle.dumps(CodingRateRegularizer(compute_dtype=torch.float64)))
        assert reg.compute_dtype is torch.float64


def ref_rate_reduction_graph(x, labels, eps_sq):
    """ΔR with autograd (float64): a Python loop over classes, d×d logdet (the paper's form)."""
    xn = x / x.norm(dim=1, keepdim=True)
    m, d = xn.shape
    eye = torch.eye(d, dtype=x.dtype)
    r = 0.5 * torch.logdet(eye + d / (m * eps_sq) * xn.T @ xn)
    r_c = 0
    for c in torch.unique(labels):
        zc = xn[labels == c]
        n = zc.shape[0]
        r_c = r_c + n / (2 * m) * torch.logdet(eye + d / (n * eps_sq) * zc.T @ zc)
    return r - r_c


class TestLosses:
    def test_mcr2_loss(self):
        z = _collapsed(40, 24, 0.05)
        labels = torch.arange(40) % 4
        fn = MCR2Loss(eps_sq=1e-3, compute_dtype=torch.float64)
        assert "compute_dtype=torch.float64" in repr(fn)
        loss, g = _grad(lambda t: fn(t, labels), z)
        delta_r, _, _ = ref_rate_reduction(z, labels, eps_sq=1e-3)
        assert loss.dtype == torch.float32 and g.dtype == torch.float32
        assert loss.item() == pytest.approx(-delta_r.item(), rel=1e-5)
        # the gradient against float64 autograd through the loop-and-logdet oracle
        x = z.double().requires_grad_(True)
        (ref,) = torch.autograd.grad(-ref_rate_reduction_graph(x, labels, 1e-3), x)
        assert float((g.double() - ref).norm() / ref.norm()) <= 1e-5

    def test_anti_collapse_loss(self):
        from pytorch_metric_learning.losses import ContrastiveLoss

        z = _collapsed(32, 16, 0.05)
        labels = torch.arange(32) % 4
        inner = ContrastiveLoss()
        loss = AntiCollapseLoss(inner, eps_sq=1e-3, compute_dtype=torch.float64)
        assert loss.compute_dtype is torch.float64
        assert "compute_dtype=torch.float64" in repr(loss)
        expected = inner(z, labels).double() - ref_coding_rate(z, 1e-3)  # ac_weight 1, −R
        got = loss(z, labels)
        assert got.dtype == torch.float32
        assert got.item() == pytest.approx(expected.item(), rel=1e-5)
