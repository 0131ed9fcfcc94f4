"""``KoLeoRegularizer``: the KoLeo loss of Sablayrolles et al. as a PML regularizer."""

from __future__ import annotations

from .. import functional as F
from ..functional.koleo import check_eps
from ._spreading import SpreadingRegularizer


class KoLeoRegularizer(SpreadingRegularizer):
    """Minimises L_koleo(X) = −(1/n)·Σ_i log(ρ_i + ε) = −S(X), ρ_i the distance from row i of X
    to its nearest other row.

    S is :func:`pml_anticollapse.functional.mean_log_nn_distance` (higher = more spread out);
    see it for the formula, the handling of duplicate rows (ε inside the log, a zero gradient
    where a distance is 0) and the sign convention. The value returned is the paper's (and
    DINOv2's) KoLeo loss.

    Use it unchanged on any PML loss: ``embedding_regularizer=KoLeoRegularizer()`` (X is the
    batch embeddings) or ``weight_regularizer=KoLeoRegularizer()`` (X is the loss's class
    weights, which PML hands over as rows, (num_classes, dim)). It has no weight of its own:
    PML multiplies it by ``embedding_reg_weight`` / ``weight_reg_weight``.

    Args:
        eps: ε added to each distance inside the log (default 1e-8, DINOv2's value).
        normalize: L2-normalise the rows first (the paper's and DINOv2's setting).
        check: raise on NaN/inf input. ``None`` (default): on CPU tensors only, where it is
            free; on CUDA only with ``check=True`` (otherwise a NaN propagates into the loss).
        **kwargs: passed to ``BaseRegularizer`` (``collect_stats``, ``reducer``).

    Statistics (when ``collect_stats=True``): ``mean_log_nn_distance``, S of the last input,
    detached.

    Distributed: the term is computed on the rows it is handed — the global batch inside PML's
    ``DistributedLossWrapper(efficient=False)``, this rank's rows otherwise (no gathering of
    its own, unlike ``CodingRateRegularizer``). As a ``weight_regularizer`` inside that wrapper
    the proxies are replicated on every rank and PML multiplies the loss by the world size, so
    the proxies' gradient from this term is world-size times the single-process one (the
    coding-rate classes undo that; these do not): divide ``weight_reg_weight`` by the world
    size there.

    Reference: Sablayrolles et al., ICLR 2019, arXiv 1806.03198.

    Example:
        >>> import torch
        >>> from pml_anticollapse import KoLeoRegularizer
        >>> z = torch.eye(4)  # every nearest neighbour at distance √2
        >>> round(KoLeoRegularizer()(z).item(), 6)  # −log √2
        -0.346574
    """

    def __init__(self, eps: float = 1e-8, *, normalize: bool = True, check: bool | None = None,
                 **kwargs):
        eps = check_eps(eps)
        super().__init__(normalize=normalize, check=check, **kwargs)
        self.eps = eps

    stat_name = "mean_log_nn_distance"

    def value(self, x):
        return F.mean_log_nn_distance(
            x, self.eps, normalize=self.normalize, check=self._check_for(x)
        )
