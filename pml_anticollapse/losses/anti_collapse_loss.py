"""``AntiCollapseLoss``: any PML loss plus the coding-rate term of the ACL paper."""

from __future__ import annotations

from typing import Any

import torch
from pytorch_metric_learning.losses import BaseMetricLossFunction, CrossBatchMemory

from .. import distributed as D
from .._pml2.stats import declare_stats, record_stats
from .._settings import CodingRateSettings, UsesCodingRate
from ..functional._checks import (
    check_choice,
    check_embeddings,
    check_finite_if,
    check_labels,
    check_nonnegative,
    check_ref,
)
from ._common import already_reduced
from ._proxies import proxies_of

TARGETS = ("embeddings", "proxies", "both")
PROXY_SETS = ("batch", "all")


class AntiCollapseLoss(UsesCodingRate, BaseMetricLossFunction):
    """Minimises loss_weight·L + ac_weight·penalty(R(Z)) and/or ac_weight·penalty(R(P)).

    L is the wrapped PML loss; R is :func:`pml_anticollapse.functional.coding_rate` of the batch
    embeddings Z (``target="embeddings"``, for pair-based losses), of the wrapped loss's class
    proxies P (``target="proxies"``, for proxy-based losses), or of both; penalty is −R
    (``form="neg"``) or exp(−γ·R) (``form="exp"``). Each term is its own PML sub-loss
    (``loss``, ``embedding_anti_collapse``, ``proxy_anti_collapse``), so PML and record-keeper
    log them separately.

    ``proxy_set="batch"`` measures the rate of the proxies of the classes present in the batch
    (the official code's ``batch_proxy``, the default there); ``"all"`` of every proxy. Proxies
    are found in each PML layout (``proxies`` rows, ``W`` / ``fc`` columns, several centres per
    class for SoftTriple and SubCenterArcFace).

    Defaults are the standard coding rate (scale d/(m·ε²), ε² = 0.5) with the −R form.
    :meth:`official` reproduces the official code's term exactly, which departs from the paper's
    formula: scale m/(d·ε²) on the proxies' Gram matrix (the rate of Pᵀ), exp(−R), batch proxies,
    and w_align = 0.0035 on Proxy-Anchor.

    Which class for which objective (one recommended way each): the proxies of the classes in
    the batch (the paper's proxy setting, ``target="proxies"``), embeddings and proxies together
    (``"both"``) and the official code's term (:meth:`official`) — this class. The rate of the
    batch embeddings alone — ``embedding_regularizer=CodingRateRegularizer()`` on the loss;
    ``target="embeddings"`` here gives the same value and gradient, for when the term should be
    its own logged sub-loss (under ``DistributedLossWrapper(efficient=True)`` it also reuses the
    wrapper's gathered batch instead of gathering again). All proxies —
    ``weight_regularizer=CodingRateRegularizer()``, the same as ``proxy_set="all"`` here.

    PML's ``CrossBatchMemory`` accepts only the PML losses on its list and refuses this class at
    construction (PML's bare ``Exception``); a class cannot wrap ``CrossBatchMemory`` either. Put
    ``embedding_regularizer=CodingRateRegularizer()`` on the loss inside ``CrossBatchMemory``
    instead.

    Args:
        loss: the PML loss to wrap (any ``BaseMetricLossFunction``, ``MCR2Loss`` included).
        target: ``"embeddings"``, ``"proxies"`` or ``"both"``.
        proxy_set: ``"batch"`` or ``"all"``.
        ac_weight: weight of each anti-collapse term (≥ 0).
        loss_weight: weight of the wrapped loss (≥ 0).
        eps, eps_sq, form, gamma, normalize, variant, check: as ``CodingRateRegularizer``.
        distributed: under ``torch.distributed`` with more than one rank, ``"global"`` (default):
            the embedding term is the rate of the global batch (gathered with gradient where
            PML's ``DistributedLossWrapper`` has not already gathered it) and ``proxy_set="batch"``
            uses the classes present in the global batch; ``"local"``: both use this rank's
            rows. Either way the terms are scaled so that DDP's averaging yields the full-batch
            gradient (global) or the mean of the per-rank ones (local); proxies are replicated
            and never gathered. See :mod:`pml_anticollapse.distributed`. No effect in a single
            process; the wrapped loss is called exactly as without it.
        compute_dtype: ``None`` (default: float32 for float32 embeddings) or ``torch.float64``:
            compute the rate in float64 and return float32, for 1e-5 relative accuracy on nearly
            collapsed rows and on square batches at a small ε², where float32 rounding cannot
            give it (1.3–2.7× the cost; docs/speed.md, "Accuracy").
        **kwargs: passed to ``BaseMetricLossFunction`` (``collect_stats``, ``reducer``,
            ``embedding_regularizer`` …).

    The coding-rate settings are kept in ``self.settings`` (a frozen ``CodingRateSettings``,
    shared with ``CodingRateRegularizer``) and readable as attributes; :meth:`rate` is the
    coding rate with them.

    Inputs: ``embeddings`` (batch_size, dim) float; ``ref_emb`` / ``ref_labels`` given together,
    ``ref_emb`` with the embeddings' dim and device; ``labels`` integers (needed for
    ``proxy_set="batch"``). A mismatch raises a ``ValueError``/``TypeError`` naming the
    argument. PML's proxy losses move their proxies to the embeddings' device and dtype
    themselves. NaN/inf embeddings raise on CPU (``check=None``), also for ``target="proxies"``.

    Statistics (``collect_stats=True``): ``embedding_coding_rate``, ``proxy_coding_rate`` — of
    the global batch under ``distributed="global"``, the same on every rank.

    Reference: Jiang et al., arXiv 2407.03106 (2024); official code
    NUST-Machine-Intelligence-Laboratory/Anti-Collapse-Loss, commit ec1e0bc, ``criteria/antico.py``.

    Example:
        >>> import torch
        >>> from pytorch_metric_learning.losses import ContrastiveLoss
        >>> from pml_anticollapse import AntiCollapseLoss
        >>> z, labels = torch.eye(4), torch.tensor([0, 0, 1, 1])
        >>> loss = AntiCollapseLoss(ContrastiveLoss(), ac_weight=0.1)
        >>> round(loss(z, labels).item(), 4)  # √2 (contrastive) + 0.1·(−2·log 3)
        1.1945
    """

    def __init__(
        self,
        loss: BaseMetricLossFunction,
        target: str = "embeddings",
        proxy_set: str = "batch",
        ac_weight: float = 1.0,
        loss_weight: float = 1.0,
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
        if isinstance(loss, CrossBatchMemory):
            raise TypeError(
                "loss must be a pytorch_metric_learning BaseMetricLossFunction, got "
                "CrossBatchMemory, which AntiCollapseLoss cannot wrap (and which refuses "
                "AntiCollapseLoss): put embedding_regularizer=CodingRateRegularizer() on the loss "
                "inside CrossBatchMemory instead"
            )
        if not isinstance(loss, BaseMetricLossFunction):
            raise TypeError(
                f"loss must be a pytorch_metric_learning BaseMetricLossFunction, "
                f"got {type(loss).__name__}"
            )
        # set before super().__init__, which asks for the sub-loss names to build the reducers
        self.target = check_choice(target, "target", TARGETS)
        super().__init__(**kwargs)
        self.loss = loss
        self.proxy_set = check_choice(proxy_set, "proxy_set", PROXY_SETS)
        self.ac_weight = check_nonnegative(ac_weight, "ac_weight")
        self.loss_weight = check_nonnegative(loss_weight, "loss_weight")
        self.settings = CodingRateSettings.from_arguments(
            eps, eps_sq, form=form, gamma=gamma, normalize=normalize, variant=variant,
            check=check, distributed=distributed, compute_dtype=compute_dtype,
        )
        if self.target != "embeddings":
            proxies_of(loss)  # fail now, not at the first batch
        declare_stats(self, "embedding_coding_rate", "proxy_coding_rate")

    @classmethod
    def official(cls, loss: BaseMetricLossFunction, **overrides) -> AntiCollapseLoss:
        """The term as the official code trains it (see the class docstring); any setting may be
        overridden by keyword."""
        settings: dict[str, Any] = dict(
            target="proxies",
            proxy_set="batch",
            form="exp",
            gamma=1.0,
            variant="acl_official",
            eps_sq=0.5,
            loss_weight=0.0035,
            ac_weight=1.0,
        )
        settings.update(overrides)
        return cls(loss, **settings)

    def _sub_loss_names(self):
        names = ["loss"]
        if self.target in ("embeddings", "both"):
            names.append("embedding_anti_collapse")
        if self.target in ("proxies", "both"):
            names.append("proxy_anti_collapse")
        return names

    def _term(self, rate: torch.Tensor, scale: float = 1.0) -> dict:
        weight = self.ac_weight if scale == 1.0 else self.ac_weight * scale
        return already_reduced(weight * self.settings.penalty(rate))

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        check_embeddings(embeddings)
        if labels is not None or (self.target != "embeddings" and self.proxy_set == "batch"):
            check_labels(labels, embeddings.shape[0])
        check_ref(ref_emb, ref_labels, embeddings)
        if not torch.compiler.is_compiling():
            # the embedding term checks its rows itself; these only the wrapped loss would see
            only_wrapped = None if self.target != "proxies" else embeddings
            check_finite_if(self.check, (only_wrapped, "embeddings"), (ref_emb, "ref_emb"))
        return super().forward(embeddings, labels, indices_tuple, ref_emb, ref_labels)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        ctx = D.context()
        # in "wrapper-efficient" mode ref_emb/ref_labels are PML's gathered copy of the batch
        gathered = (ref_emb, ref_labels) if ctx.kind == "wrapper-efficient" else None
        if ref_emb is embeddings and ref_labels is labels:
            ref_emb = ref_labels = None  # PML filled them in; proxy losses refuse them
        try:
            wrapped = self.loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        except NotImplementedError as exc:  # e.g. torch.cdist has no CPU bfloat16 kernel
            if embeddings.dtype not in (torch.float16, torch.bfloat16):
                raise
            raise TypeError(
                f"embeddings of dtype {embeddings.dtype} are not supported by the wrapped "
                f"{type(self.loss).__name__} on {embeddings.device.type} ({exc}); pass float32 "
                f"embeddings or compute them under torch.autocast, which hands PML's distances "
                f"float32"
            ) from exc
        loss_dict = {"loss": already_reduced(self.loss_weight * wrapped)}
        if self.target in ("embeddings", "both"):
            rows = D.global_rows([(embeddings, None)], self.distributed, ctx, gathered)
            rate = self.rate(rows.x)
            loss_dict["embedding_anti_collapse"] = self._term(rate, rows.scale)
            record_stats(self, embedding_coding_rate=rate)
        if self.target in ("proxies", "both"):
            proxies, proxy_class = proxies_of(self.loss)
            mask = None
            if self.proxy_set == "batch":
                present = D.global_labels(
                    labels, self.distributed, ctx, None if gathered is None else gathered[1]
                )
                mask = torch.isin(proxy_class, present.to(proxy_class.device))
            rate = self.rate(proxies, mask)
            loss_dict["proxy_anti_collapse"] = self._term(rate, D.replicated_scale(ctx))
            record_stats(self, proxy_coding_rate=rate)
        return loss_dict
