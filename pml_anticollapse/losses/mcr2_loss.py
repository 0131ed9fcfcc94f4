"""``MCR2Loss``: maximal coding rate reduction as a PML loss."""

from __future__ import annotations

import torch
from pytorch_metric_learning.losses import BaseMetricLossFunction

from .. import distributed as D
from .._pml2.stats import declare_stats, record_stats
from .._settings import CodingRateSettings, UsesCodingRate
from ..functional._checks import check_embeddings, check_int, check_labels, check_ref
from ._common import already_reduced


class MCR2Loss(UsesCodingRate, BaseMetricLossFunction):
    """Minimises −ΔR = R_c(Z | Π) − R(Z), the negative rate reduction of labelled embeddings.

    ΔR is :func:`pml_anticollapse.functional.coding_rate_reduction`; see it for the formula and
    the ε / ε² convention (default ε² = 0.5, the MCR² code's ``eps=0.5``).

    With ``ref_emb`` / ``ref_labels`` (e.g. a memory bank of earlier batches that you keep) the
    rate reduction is that of the union of the batch and the reference set, which gives the rate
    a larger sample; ``indices_tuple`` is not supported (the loss is set-level, not pair-level).
    PML's ``CrossBatchMemory`` accepts only the PML losses on its list and refuses this class at
    construction (PML's bare ``Exception``): pass the memory as ``ref_emb`` instead.

    Args:
        eps, eps_sq: the precision ε or ε².
        normalize: L2-normalise the rows first (as MCR² does).
        num_classes: an int ≥ 1: labels lie in [0, num_classes), absent classes allowed and no
            ``unique``; ``None`` (default): the classes are the distinct labels present.
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
        compute_dtype: ``None`` (default: float32 for float32 embeddings) or ``torch.float64``:
            compute the rate in float64 and return float32, for 1e-5 relative accuracy on nearly
            collapsed rows and on square batches at a small ε², where float32 rounding cannot
            give it (1.3–2.7× the cost; docs/speed.md, "Accuracy").
        **kwargs: passed to ``BaseMetricLossFunction``.

    The settings are kept in ``self.settings`` (the ``CodingRateSettings`` shared with the
    other coding-rate classes; the standard scale and the −ΔR form, which this class does not
    let you change) and readable as attributes.

    Inputs: ``embeddings`` (batch_size, dim) float; integer ``labels`` (batch_size,);
    ``ref_emb`` / ``ref_labels`` given together, ``ref_emb`` with the embeddings' dim, dtype
    and device. A mismatch raises a ``ValueError``/``TypeError`` naming the argument.

    Statistics (``collect_stats=True``): ``coding_rate`` (R), ``compression_rate`` (R_c) and
    ``rate_reduction`` (ΔR) — of the global batch under ``distributed="global"``.

    Reference: Yu et al., "Learning Diverse and Discriminative Representations via the
    Principle of Maximal Coding Rate Reduction", arXiv 2006.08558 (NeurIPS 2020).

    Example:
        >>> import torch
        >>> from pml_anticollapse import MCR2Loss
        >>> z, labels = torch.eye(4), torch.tensor([0, 0, 1, 1])
        >>> round(MCR2Loss()(z, labels).item(), 4)  # −ΔR = −(2·log 3 − log 5)
        -0.5878
    """

    setting_names = ("eps_sq", "normalize", "check", "distributed", "compute_dtype")

    def __init__(
        self,
        eps: float | None = None,
        *,
        eps_sq: float | None = None,
        normalize: bool = True,
        num_classes: int | None = None,
        check: bool | None = None,
        distributed: str = "global",
        compute_dtype: torch.dtype | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.settings = CodingRateSettings.from_arguments(
            eps, eps_sq, normalize=normalize, check=check, distributed=distributed,
            compute_dtype=compute_dtype,
        )
        self.num_classes = None if num_classes is None else check_int(num_classes, "num_classes", 1)
        declare_stats(self, "coding_rate", "compression_rate", "rate_reduction")

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        check_embeddings(embeddings)
        check_labels(labels, embeddings.shape[0])
        check_ref(ref_emb, ref_labels, embeddings, same_dtype=True)
        return super().forward(embeddings, labels, indices_tuple, ref_emb, ref_labels)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        ctx = D.context()
        gathered = None
        parts = [(embeddings, labels)]
        if ctx.kind == "wrapper-efficient":
            # the wrapper made indices_tuple and handed its gathered batch as ref_emb
            if ctx.user_ref:
                raise ValueError(
                    "ref_emb given to DistributedLossWrapper(efficient=True) is not supported by "
                    "MCR2Loss; use efficient=False"
                )
            gathered = (ref_emb, ref_labels)
        else:
            if indices_tuple is not None:
                raise ValueError(
                    "indices_tuple is not supported by MCR2Loss, which measures the rate "
                    "reduction of the whole batch (so it does not go after a miner or inside "
                    "CrossBatchMemory): pass indices_tuple=None, got "
                    f"{type(indices_tuple).__name__}"
                )
            if ref_emb is not embeddings:
                parts.append((ref_emb, ref_labels.to(labels)))
        embeddings, labels, scale = D.global_rows(parts, self.distributed, ctx, gathered)
        out = self.settings.rate_reduction(embeddings, labels, self.num_classes)
        record_stats(
            self, coding_rate=out.r, compression_rate=out.r_c, rate_reduction=out.delta_r
        )
        return {"loss": already_reduced(-out.delta_r if scale == 1.0 else -scale * out.delta_r)}
