"""``MCR2Loss``: maximal coding rate reduction as a PML loss."""

from __future__ import annotations

from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.utils import common_functions as c_f

from .. import distributed as D
from .. import functional as F
from ..functional._checks import check_choice, check_labels, resolve_check, resolve_eps_sq
from ._common import already_reduced


class MCR2Loss(BaseMetricLossFunction):
    """Minimises −ΔR = R_c(Z | Π) − R(Z), the negative rate reduction of labelled embeddings.

    ΔR is :func:`pml_anticollapse.functional.coding_rate_reduction`; see it for the formula and
    the ε / ε² convention (default ε² = 0.5, the MCR² code's ``eps=0.5``).

    With ``ref_emb`` (e.g. from ``CrossBatchMemory``) the rate reduction is that of the union of
    the batch and the reference set, which gives the rate a larger sample; ``indices_tuple`` is
    not supported (the loss is set-level, not pair-level).

    Args:
        eps, eps_sq: the precision ε or ε².
        normalize: L2-normalise the rows first (as MCR² does).
        num_classes: labels lie in [0, num_classes); absent classes allowed and no ``unique``.
        check: as ``CodingRateRegularizer`` (default: on CPU only). The class terms need the
            number of classes and the largest class on the host: one sync on CUDA either way.
        distributed: under ``torch.distributed`` with more than one rank, ``"global"`` (default)
            gives the rate reduction of the global batch (embeddings and labels of every rank,
            gathered with gradient where PML's ``DistributedLossWrapper`` has not already
            gathered them), scaled so that DDP's averaging yields the full-batch gradient;
            ``"local"`` that of this rank's rows (objective: the mean over ranks). Under
            ``DistributedLossWrapper(efficient=True)`` the wrapper's ``indices_tuple`` is ignored
            and a ``ref_emb`` given to the wrapper is refused. See
            :mod:`pml_anticollapse.distributed`. No effect in a single process.
        **kwargs: passed to ``BaseMetricLossFunction``.

    Statistics (``collect_stats=True``): ``coding_rate`` (R), ``compression_rate`` (R_c) and
    ``rate_reduction`` (ΔR) — of the global batch under ``distributed="global"``.

    Reference: Yu et al., "Learning Diverse and Discriminative Representations via the
    Principle of Maximal Coding Rate Reduction", arXiv 2006.08558 (NeurIPS 2020).
    """

    def __init__(
        self,
        eps: float | None = None,
        *,
        eps_sq: float | None = None,
        normalize: bool = True,
        num_classes: int | None = None,
        check: bool | None = None,
        distributed: str = "global",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.distributed = check_choice(distributed, "distributed", D.SCOPES)
        self.eps_sq = resolve_eps_sq(eps, eps_sq)
        self.normalize = bool(normalize)
        self.num_classes = num_classes
        self.check = check if check is None else bool(check)
        self.add_to_recordable_attributes(
            list_of_names=["coding_rate", "compression_rate", "rate_reduction"], is_stat=True
        )

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        ctx = D.context()
        check_labels(labels, embeddings.shape[0])
        gathered = None
        if ctx.kind == "wrapper-efficient":
            # the wrapper made indices_tuple and handed its gathered batch as ref_emb
            if ctx.user_ref:
                raise ValueError(
                    "ref_emb given to DistributedLossWrapper(efficient=True) is not supported by "
                    "MCR2Loss; use efficient=False"
                )
            gathered = (ref_emb, ref_labels)
            parts = [(embeddings, labels)]
        else:
            c_f.indices_tuple_not_supported(indices_tuple)
            parts = [(embeddings, labels)]
            if ref_emb is not embeddings:
                check_labels(ref_labels, ref_emb.shape[0], name="ref_labels")
                parts.append((ref_emb.to(embeddings), ref_labels.to(labels)))
        embeddings, labels, scale = D.global_rows(parts, self.distributed, ctx, gathered)
        out = F.coding_rate_reduction(
            embeddings,
            labels,
            eps_sq=self.eps_sq,
            normalize=self.normalize,
            num_classes=self.num_classes,
            check=resolve_check(self.check, embeddings),
        )
        if self.collect_stats:
            self.coding_rate = out.r.detach()
            self.compression_rate = out.r_c.detach()
            self.rate_reduction = out.delta_r.detach()
        return {"loss": already_reduced(-out.delta_r if scale == 1.0 else -scale * out.delta_r)}
