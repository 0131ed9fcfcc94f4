"""``CodingRateRegularizer``: the Anti-Collapse term as a PML regularizer."""

from __future__ import annotations

import torch
from pytorch_metric_learning.regularizers import BaseRegularizer

from .. import distributed as D
from .. import functional as F
from ..functional._checks import check_choice, check_positive, resolve_check, resolve_eps_sq
from ..functional.coding_rate import VARIANTS

FORMS = ("neg", "exp")


def rate_penalty(rate: torch.Tensor, form: str, gamma: float) -> torch.Tensor:
    """What is minimised for a coding rate: −R (``"neg"``) or exp(−γ·R) (``"exp"``)."""
    return -rate if form == "neg" else torch.exp(-gamma * rate)


class CodingRateRegularizer(BaseRegularizer):
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
        **kwargs: passed to ``BaseRegularizer`` (``collect_stats``, ``reducer``).

    Statistics (when ``collect_stats=True``; nothing extra is computed otherwise):
        ``coding_rate`` and ``effective_rank`` of the last input, as detached tensors — under
        ``distributed="global"`` those of the global batch, the same on every rank.

    Reference: Jiang et al., arXiv 2407.03106 (2024).
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
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.distributed = check_choice(distributed, "distributed", D.SCOPES)
        self.eps_sq = resolve_eps_sq(eps, eps_sq)
        self.form = check_choice(form, "form", FORMS)
        self.gamma = check_positive(gamma, "gamma")
        self.normalize = bool(normalize)
        self.variant = check_choice(variant, "variant", VARIANTS)
        self.check = check if check is None else bool(check)
        self.add_to_recordable_attributes(
            list_of_names=["coding_rate", "effective_rank"], is_stat=True
        )

    def rate(self, x: torch.Tensor) -> torch.Tensor:
        """The coding rate of ``x`` with this regularizer's settings (differentiable)."""
        return F.coding_rate(
            x,
            eps_sq=self.eps_sq,
            normalize=self.normalize,
            variant=self.variant,
            check=resolve_check(self.check, x),
        )

    def compute_loss(self, x):
        scale = 1.0
        ctx = D.context()
        if ctx.kind != "single":
            if D.regularizer_target() == "weights":
                scale = D.replicated_scale(ctx)
            else:
                x, _, scale = D.global_rows([(x, None)], self.distributed, ctx)
        rate = self.rate(x)
        if self.collect_stats:
            self.coding_rate = rate.detach()
            self.effective_rank = F.effective_rank(x.detach(), normalize=self.normalize)
        loss = rate_penalty(rate, self.form, self.gamma)
        return {
            "loss": {
                "losses": loss if scale == 1.0 else loss * scale,
                "indices": None,
                "reduction_type": "already_reduced",
            }
        }
