"""Recorded statistics, PML 2 style (removed in PML 3).

PML 2's ``ModuleWithRecords`` keeps a ``collect_stats`` flag; attributes declared with
``add_to_recordable_attributes(..., is_stat=True)`` are zeroed by ``reset_stats()`` at every
forward and read by record-keeper (``is_stat=False``: settings it logs once). The classes of this
package declare and set their statistics only through the functions below.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning.utils.module_with_records import ModuleWithRecords

__all__ = ["declare_attributes", "declare_stats", "record_stats", "wants_stats"]


def declare_stats(module: ModuleWithRecords, *names: str) -> None:
    """Declare ``names`` as recorded statistics of ``module`` (a no-op unless
    ``collect_stats=True``, as in PML)."""
    module.add_to_recordable_attributes(list_of_names=list(names), is_stat=True)


def declare_attributes(module: ModuleWithRecords, *names: str) -> None:
    """Declare ``names`` (settings such as a margin) as attributes record-keeper logs."""
    module.add_to_recordable_attributes(list_of_names=list(names), is_stat=False)


def wants_stats(module: torch.nn.Module) -> bool:
    """Whether ``module`` records statistics: compute the costly ones only then."""
    return bool(getattr(module, "collect_stats", False))


def record_stats(module: torch.nn.Module, **values: torch.Tensor) -> None:
    """Set each statistic to its value, detached, when ``module`` records statistics."""
    if wants_stats(module):
        for name, value in values.items():
            setattr(module, name, value.detach())
