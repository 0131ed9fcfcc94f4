"""``CodingRateRegularizer``: the Anti-Collapse term as a PML regularizer."""

from __future__ import annotations

import torch
from pytorch_metric_learning.regularizers import BaseRegularizer

from .. import distributed as D
from .. import functional as F
from .._pml2.stats import declare_stats, record_stats, wants_stats
from .._settings import CodingRateSettings, UsesCodingRate


class CodingRateRegularizer(UsesCodingRate, BaseRegularizer):
    """Minimises −R(X) (``form="neg"``) or exp(−γ·R(X)) (``form="exp"``) of the rows of X.

    R is :func:`pml_anticollapse.functional.coding_rate`; see it for the formula, the ε / ε²
    convention (``eps_sq=0.5`` is the official codes' ``eps=0.5``) and ``variant``.

    Use it unchanged on any PML loss:

    - ``embedding_regularizer=CodingRateRegularizer()``: X is the batch embeddings
      (pair-based losses, the paper's "pair" setting);
    - ``weight_regularizer=CodingRateRegularizer()``: X is the loss's class weights, which PML
      always hands over as rows (num_classes, dim) whatever its storage layout (the paper's
      proxy setting, with all proxies).

    The regularizer has no weight of its own: PML multiplies it by ``embedding_reg_weight`` /
    ``weight_reg_weight``.

    Which class for which objective (one recommended way each): the rate of the batch
    embeddings on any PML loss — this regularizer as ``embedding_regularizer``;
    ``AntiCollapseLoss(loss, target="embeddings")`` gives the same value and gradient and is
    for when the term should be its own logged sub-loss or go with a proxy term. The rate of
    all class proxies — this regularizer as ``weight_regularizer`` (the same as
    ``AntiCollapseLoss(loss, target="proxies", proxy_set="all")``). The proxies of the classes
    in the batch, and the official code's term, need ``AntiCollapseLoss``.

    Args:
        eps, eps_sq: the precision ε or ε² (default ε² = 0.5).
        form: ``"neg"`` — MCR²-style −R, never saturates; ``"exp"`` — exp(−γ·R) as in the
            official ACL code, bounded in (0, 1] but flat once R is large.
        gamma: γ of the exp form.
        normalize: L2-normalise the rows before measuring the rate.
        variant: ``"standard"`` or ``"acl_official"`` (see ``coding_rate``).
        check: raise on NaN/inf input and report a failed factorisation. ``None`` (default):
            on CPU tensors only, where it is free; on CUDA it costs a host sync per call, so
            there it runs only with ``check=True`` (otherwise a NaN propagates into the loss).
        distributed: under ``torch.distributed`` with more than one rank, ``"global"`` (default)
            measures the rate of the global batch — the rows of every rank, gathered with
            gradient where PML has not already gathered them, scaled so that DDP's averaging
            yields the full-batch gradient; ``"local"`` the rate of this rank's rows (the
            objective is then the mean of the per-rank rates). Weights handed over as
            ``weight_regularizer`` are replicated and never gathered. See
            :mod:`pml_anticollapse.distributed` for the modes and the limits. No effect in a
            single process.
        compute_dtype: ``None`` (default: float32 for float32 embeddings) or ``torch.float64``:
            compute the rate in float64 and return float32, for 1e-5 relative accuracy on nearly
            collapsed rows and on square batches at a small ε², where float32 rounding cannot
            give it (1.3–2.7× the cost; docs/speed.md, "Accuracy").
        **kwargs: passed to ``BaseRegularizer`` (``collect_stats``, ``reducer``).

    The settings are kept in ``self.settings`` (a frozen ``CodingRateSettings``, shared with
    ``AntiCollapseLoss`` and ``MCR2Loss``) and readable as attributes (``self.eps_sq`` …);
    :meth:`rate` is the coding rate with them.

    Statistics (when ``collect_stats=True``; nothing extra is computed otherwise):
        ``coding_rate`` and ``effective_rank`` of the last input, as detached tensors — under
        ``distributed="global"`` those of the global batch, the same on every rank.

    Reference: Jiang et al., arXiv 2407.03106 (2024).

    Example:
        >>> import torch
        >>> from pml_anticollapse import CodingRateRegularizer
        >>> z = torch.eye(4)  # four orthonormal rows: R = 2·log 3
        >>> round(CodingRateRegularizer()(z).item(), 6)  # minimised: −R
        -2.197225
    """

    def __init__(
        self,
        eps: float | None = None,
        *,
        eps_sq: float | None = None,
        form: str = "neg",
        gamma: float = 1.0,
        normalize: bool = True,
        variant: str = "standard",
        check: bool | None = None,
        distributed: str = "global",
        compute_dtype: torch.dtype | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.settings = CodingRateSettings.from_arguments(
            eps, eps_sq, form=form, gamma=gamma, normalize=normalize, variant=variant,
            check=check, distributed=distributed, compute_dtype=compute_dtype,
        )
        declare_stats(self, "coding_rate", "effective_rank")

    def compute_loss(self, x):
        x, _, scale = D.regularizer_rows(x, self.distributed)
        rate = self.rate(x)
        if wants_stats(self):
            effective_rank = F.effective_rank(x.detach(), normalize=self.normalize)
            record_stats(self, coding_rate=rate, effective_rank=effective_rank)
        loss = self.settings.penalty(rate)
        return {
            "loss": {
                "losses": loss if scale == 1.0 else loss * scale,
                "indices": None,
                "reduction_type": "already_reduced",
            }
        }
