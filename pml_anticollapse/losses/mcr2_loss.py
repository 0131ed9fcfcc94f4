"""``MCR2Loss``: maximal coding rate reduction as a PML loss."""

from __future__ import annotations

import torch
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.utils import common_functions as c_f

from .. import functional as F
from ..functional._checks import check_labels, resolve_eps_sq
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
        check: validate finiteness (host syncs on CUDA).
        **kwargs: passed to ``BaseMetricLossFunction``.

    Statistics (``collect_stats=True``): ``coding_rate`` (R), ``compression_rate`` (R_c) and
    ``rate_reduction`` (ΔR).

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
        check: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.eps_sq = resolve_eps_sq(eps, eps_sq)
        self.normalize = bool(normalize)
        self.num_classes = num_classes
        self.check = bool(check)
        self.add_to_recordable_attributes(
            list_of_names=["coding_rate", "compression_rate", "rate_reduction"], is_stat=True
        )

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.indices_tuple_not_supported(indices_tuple)
        check_labels(labels, embeddings.shape[0])
        if ref_emb is not embeddings:
            check_labels(ref_labels, ref_emb.shape[0], name="ref_labels")
            embeddings = torch.cat([embeddings, ref_emb.to(embeddings)])
            labels = torch.cat([labels, ref_labels.to(labels)])
        out = F.coding_rate_reduction(
            embeddings,
            labels,
            eps_sq=self.eps_sq,
            normalize=self.normalize,
            num_classes=self.num_classes,
            check=self.check,
        )
        if self.collect_stats:
            self.coding_rate = out.r.detach()
            self.compression_rate = out.r_c.detach()
            self.rate_reduction = out.delta_r.detach()
        return {"loss": already_reduced(-out.delta_r)}
