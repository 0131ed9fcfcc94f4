"""``UniformityRegularizer``: Wang & Isola's uniformity loss as a PML regularizer."""

from __future__ import annotations

from .. import functional as F
from ..functional._checks import check_positive
from ._spreading import SpreadingRegularizer


class UniformityRegularizer(SpreadingRegularizer):
    """Minimises L_uniform(X) = log mean_{i<j} exp(−t·‖x_i − x_j‖²) = −U(X) of the rows of X.

    U is :func:`pml_anticollapse.functional.uniformity` (≥ 0, higher = more spread out); see it
    for the formula, the numerics and the sign convention. The value returned is the paper's
    loss itself, ≤ 0, and 0 for a collapsed input.

    Use it unchanged on any PML loss: ``embedding_regularizer=UniformityRegularizer()`` (X is
    the batch embeddings) or ``weight_regularizer=UniformityRegularizer()`` (X is the loss's
    class weights, which PML hands over as rows, (num_classes, dim)). It has no weight of its
    own: PML multiplies it by ``embedding_reg_weight`` / ``weight_reg_weight``.

    Args:
        t: the temperature t > 0 (the paper's default 2).
        normalize: L2-normalise the rows first (the paper's setting).
        check: raise on NaN/inf input. ``None`` (default): on CPU tensors only, where it is
            free; on CUDA only with ``check=True`` (otherwise a NaN propagates into the loss).
        **kwargs: passed to ``BaseRegularizer`` (``collect_stats``, ``reducer``).

    Statistics (when ``collect_stats=True``): ``uniformity``, U of the last input, detached.

    Distributed: the term is computed on the rows it is handed — the global batch inside PML's
    ``DistributedLossWrapper(efficient=False)``, this rank's rows otherwise (no gathering of
    its own, unlike ``CodingRateRegularizer``). As a ``weight_regularizer`` inside that wrapper
    the proxies are replicated on every rank and PML multiplies the loss by the world size, so
    the proxies' gradient from this term is world-size times the single-process one (the
    coding-rate classes undo that; these do not): divide ``weight_reg_weight`` by the world
    size there.

    Reference: Wang & Isola, ICML 2020, arXiv 2005.10242.

    Example:
        >>> import torch
        >>> from pml_anticollapse import UniformityRegularizer
        >>> z = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # antipodal: U = 4t = 8
        >>> UniformityRegularizer()(z).item()  # minimised: −U
        -8.0
    """

    def __init__(self, t: float = 2.0, *, normalize: bool = True, check: bool | None = None,
                 **kwargs):
        t = check_positive(t, "t")
        super().__init__(normalize=normalize, check=check, **kwargs)
        self.t = t

    stat_name = "uniformity"

    def value(self, x):
        return F.uniformity(x, self.t, normalize=self.normalize, check=self._check_for(x))
