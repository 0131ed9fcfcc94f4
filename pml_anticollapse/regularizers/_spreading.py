"""What the two spreading regularizers share: flags, the NaN policy, one statistic and PML's
loss dict around −(the function's value). Each subclass names its function, its one number
argument (validated by the subclass) and its statistic."""

from __future__ import annotations

from pytorch_metric_learning.regularizers import BaseRegularizer

from .._pml2.stats import declare_stats, record_stats
from ..functional._checks import check_flag, check_optional_flag, resolve_check


class SpreadingRegularizer(BaseRegularizer):
    """Minimises −f(X) for a spreading quantity f (higher = more spread out)."""

    #: the statistic recorded with ``collect_stats=True`` (f of the last input, detached)
    stat_name = ""

    def __init__(self, *, normalize: bool, check: bool | None, **kwargs):
        super().__init__(**kwargs)
        self.normalize = check_flag(normalize, "normalize")
        self.check = check_optional_flag(check, "check")
        declare_stats(self, self.stat_name)

    def value(self, x):
        """f(x) with the regularizer's settings."""
        raise NotImplementedError

    def compute_loss(self, x):
        value = self.value(x)
        record_stats(self, **{self.stat_name: value})
        return {"loss": {"losses": -value, "indices": None, "reduction_type": "already_reduced"}}

    def _check_for(self, x) -> bool:
        return resolve_check(self.check, x)
