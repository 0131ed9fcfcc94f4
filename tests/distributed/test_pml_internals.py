"""Recognising PML's DistributedLossWrapper, and failing loudly when PML is not what is expected.

One process standing in for rank 0 of 2: ``torch.distributed.is_initialized`` / ``get_world_size``
/ ``get_rank`` are patched, and PML's gather (``gather_emb_and_ref``) is replaced by one that
appends a detached copy of the batch, as the other rank's rows would arrive. What the classes
then see is recorded by a probe loss and a probe regularizer. The real 2-process runs are in
``test_distributed.py``.
"""

from __future__ import annotations

import types

import pytest
import torch
import torch.distributed as dist
from pytorch_metric_learning import losses
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.losses import mixins as pml_mixins
from pytorch_metric_learning.regularizers import BaseRegularizer
from pytorch_metric_learning.utils import distributed as pml_dist
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper

from pml_anticollapse import AntiCollapseLoss, CodingRateRegularizer, MCR2Loss
from pml_anticollapse import distributed as D
from tests.reference import ref_coding_rate

W = 2


def _fake_gather(emb, labels, ref_emb=None, ref_labels=None):
    """PML's gather_emb_and_ref for rank 0 of 2: this rank's rows first, then the other
    rank's (here a detached shifted copy)."""
    def cat(t):
        return None if t is None else torch.cat([t, t.detach().flip(0)])

    return cat(emb), cat(labels), cat(ref_emb), cat(ref_labels), labels


@pytest.fixture
def two_ranks(monkeypatch):
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: W)
    monkeypatch.setattr(dist, "get_rank", lambda *a, **k: 0)
    monkeypatch.setattr(pml_dist, "gather_emb_and_ref", _fake_gather)


class ProbeLoss(BaseMetricLossFunction):
    """Records the distributed context and the batch size it is handed."""

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        self.seen = (D.context(), embeddings.shape[0])
        return {"loss": {"losses": embeddings.sum() * 0, "indices": None,
                         "reduction_type": "already_reduced"}}


class ProbeRegularizer(BaseRegularizer):
    def compute_loss(self, x):
        self.role = D.regularizer_target()
        return {"loss": {"losses": x.sum() * 0, "indices": None,
                         "reduction_type": "already_reduced"}}


def _batch():
    torch.manual_seed(0)
    return torch.randn(6, 5, requires_grad=True), torch.tensor([0, 0, 1, 1, 2, 2])


def _rename_pml_method(monkeypatch, name="forward_regular_loss"):
    """A PML release in which the wrapper's method has another name, its forward calling it
    under that name: the method's own code is renamed too, so a walk that looked for the old name
    would find nothing and take the wrapper for plain DDP."""
    new = "_" + name + "_v3"
    original = getattr(DistributedLossWrapper, name)
    renamed = types.FunctionType(
        original.__code__.replace(co_name=new, co_qualname="DistributedLossWrapper." + new),
        original.__globals__, new, original.__defaults__, original.__closure__,
    )
    monkeypatch.setattr(DistributedLossWrapper, new, renamed, raising=False)
    monkeypatch.delattr(DistributedLossWrapper, name)

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None,
                ref_labels=None):
        args = (embeddings, labels, indices_tuple, ref_emb, ref_labels, dist.get_world_size())
        return getattr(self, new)(*args)

    if name == "forward_regular_loss":
        monkeypatch.setattr(DistributedLossWrapper, "forward", forward)


class TestRecognisesPMLsWrapper:
    @pytest.mark.parametrize("efficient, kind, rows", [(False, "wrapper", 2 * 6),
                                                       (True, "wrapper-efficient", 6)])
    def test_wrapper_modes(self, two_ranks, efficient, kind, rows):
        probe = ProbeLoss()
        z, y = _batch()
        DistributedLossWrapper(probe, efficient=efficient)(z, y)
        assert probe.seen == (D.Context(kind, W, False), rows)

    def test_user_reference_set(self, two_ranks):
        probe = ProbeLoss()
        z, y = _batch()
        DistributedLossWrapper(probe, efficient=True)(z, y, None, z[:4], y[:4])
        assert probe.seen[0] == D.Context("wrapper-efficient", W, True)

    def test_no_wrapper_is_plain_ddp(self, two_ranks):
        probe = ProbeLoss()
        z, y = _batch()
        probe(z, y)
        assert probe.seen == (D.Context("ddp", W, False), 6)

    def test_weight_and_embedding_regularizers(self, two_ranks):
        weight_reg, emb_reg = ProbeRegularizer(), ProbeRegularizer()
        loss = losses.NormalizedSoftmaxLoss(3, 5, weight_regularizer=weight_reg,
                                            embedding_regularizer=emb_reg)
        z, y = _batch()
        loss(z, y)
        assert (weight_reg.role, emb_reg.role) == ("weights", "embeddings")

    def test_the_classes_under_the_wrapper(self, two_ranks):
        """AntiCollapseLoss measures the wrapper's gathered batch, once, undivided (the
        wrapper's ×W is PML's)."""
        z, y = _batch()
        acl = AntiCollapseLoss(losses.ContrastiveLoss(), loss_weight=0.0, collect_stats=True)
        out = DistributedLossWrapper(acl)(z, y)
        gathered = _fake_gather(z, y)[0]
        want = ref_coding_rate(gathered)
        assert acl.embedding_coding_rate.item() == pytest.approx(want.item(), rel=1e-5)
        assert out.item() == pytest.approx(-W * want.item(), rel=1e-5)


class TestLoudFailure:
    def test_renamed_wrapper_method(self, two_ranks, monkeypatch):
        _rename_pml_method(monkeypatch)
        z, y = _batch()
        wrapped = DistributedLossWrapper(AntiCollapseLoss(losses.ContrastiveLoss()))
        with pytest.raises(D.PMLInternalsError) as err:
            wrapped(z, y)
        msg = str(err.value)
        assert "missing DistributedLossWrapper.forward_regular_loss" in msg
        assert "gather the batch a second time" in msg
        assert "pip install 'pytorch-metric-learning>=2.9,<3'" in msg
        assert "pml_anticollapse.distributed.running_in(kind)" in msg
        with pytest.raises(D.PMLInternalsError, match="forward_regular_loss"):
            D.check_pml_internals()

    def test_renamed_cross_batch_method_is_found_too(self, two_ranks, monkeypatch):
        _rename_pml_method(monkeypatch, "forward_cross_batch")
        z, y = _batch()
        with pytest.raises(D.PMLInternalsError, match="missing DistributedLossWrapper"
                                                      ".forward_cross_batch"):
            MCR2Loss()(z, y)  # also without a wrapper: DDP cannot be told from the wrapper

    def test_forward_no_longer_calling_the_method(self, two_ranks, monkeypatch):
        def forward(self, embeddings, labels=None, *args):
            return self.loss(*pml_dist.gather_emb_and_ref(embeddings, labels)[:2]) * W

        monkeypatch.setattr(DistributedLossWrapper, "forward", forward)
        z, y = _batch()
        with pytest.raises(D.PMLInternalsError, match="the call of forward_regular_loss in "
                                                      "DistributedLossWrapper.forward"):
            DistributedLossWrapper(ProbeLoss())(z, y)

    def test_subclass_calling_the_loss_itself(self, two_ranks):
        class MyWrapper(DistributedLossWrapper):
            def forward_regular_loss(self, emb, labels, indices_tuple, ref_emb, ref_labels, ws):
                all_emb, all_labels, *_ = pml_dist.gather_emb_and_ref(emb, labels)
                return self.loss(all_emb, all_labels) * ws

        z, y = _batch()
        with pytest.raises(D.PMLInternalsError, match="called by .*MyWrapper"
                                                      ".forward_regular_loss"):
            MyWrapper(ProbeLoss())(z, y)

    def test_subclass_delegating_to_pml_is_recognised(self, two_ranks):
        class Logged(DistributedLossWrapper):
            def forward_regular_loss(self, *args):
                return super().forward_regular_loss(*args)

        probe = ProbeLoss()
        z, y = _batch()
        Logged(probe)(z, y)
        assert probe.seen == (D.Context("wrapper", W, False), 12)

    def test_renamed_regularizer_mixin_method(self, two_ranks, monkeypatch):
        monkeypatch.delattr(pml_mixins.WeightRegularizerMixin, "weight_regularization_loss")
        z, _ = _batch()
        with pytest.raises(D.PMLInternalsError, match="cannot tell a weight_regularizer from an "
                                                      "embedding_regularizer"):
            CodingRateRegularizer()(z)

    def test_nothing_is_checked_in_one_process(self, monkeypatch):
        _rename_pml_method(monkeypatch)
        z, y = _batch()
        AntiCollapseLoss(losses.ContrastiveLoss())(z, y)  # no process group: no stack walk


class TestRunningIn:
    @pytest.mark.parametrize("kind", D.KINDS)
    def test_declared_kind_wins_without_a_stack_walk(self, two_ranks, monkeypatch, kind):
        _rename_pml_method(monkeypatch)  # the walk would fail loudly
        probe = ProbeLoss()
        z, y = _batch()
        with D.running_in(kind, user_ref=True):
            probe(z, y)
        assert probe.seen[0] == D.Context(kind, W, kind == "wrapper-efficient")
        with pytest.raises(D.PMLInternalsError):  # the declaration ends with the block
            probe(z, y)

    def test_declared_wrapper_under_a_custom_wrapper(self, two_ranks):
        """A wrapper that is not PML's, declared: the gathered batch is measured once."""
        def my_wrapper(loss, z, y):
            all_z, all_y, *_ = _fake_gather(z, y)
            with D.running_in("wrapper"):
                return loss(all_z, all_y) * W

        z, y = _batch()
        acl = AntiCollapseLoss(losses.ContrastiveLoss(), loss_weight=0.0, collect_stats=True)
        my_wrapper(acl, z, y)
        want = ref_coding_rate(_fake_gather(z, y)[0])
        assert acl.embedding_coding_rate.item() == pytest.approx(want.item(), rel=1e-5)

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="kind must be one of 'wrapper', 'wrapper-efficient', "
                                             "'ddp', got 'DDP'"):
            with D.running_in("DDP"):
                pass
        with pytest.raises(TypeError, match="user_ref must be a bool"):
            with D.running_in("ddp", user_ref="yes"):
                pass

    def test_one_process_ignores_it(self):
        with D.running_in("wrapper"):
            assert D.context() == D.SINGLE
