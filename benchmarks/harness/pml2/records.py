"""PML 2's record-keeper support: ``record_keeper`` (csv + sqlite, TensorBoard when installed)
and ``logging_presets.HookContainer``."""

from __future__ import annotations

import collections
import logging
import os

from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import logging_presets


def make_record_keeper(folder: str, tensorboard: bool = False, purge_step: int | None = None):
    """record-keeper with csv + sqlite; tensorboard only when asked for and installed.

    PML's ``get_record_keeper`` imports tensorboard unconditionally (``from torch.utils.tensorboard
    import SummaryWriter`` in ``pytorch_metric_learning/utils/logging_presets.py``, PML 2.9), so the
    writer is built here from record-keeper's own classes. ``purge_step``: on resume, TensorBoard
    drops the events of the folder's earlier writers at steps ≥ it (logged after the checkpoint).
    """
    import record_keeper as rk

    writer = rk.RecordWriter(folder=folder)
    tb = None
    if tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(log_dir=os.path.join(folder, "tensorboard"), purge_step=purge_step)
        except ImportError:
            logging.getLogger(__name__).warning("tensorboard is not installed; csv + sqlite only")
    return rk.RecordKeeper(
        tensorboard_writer=tb,
        record_writer=writer,
        attributes_to_search_for=c_f.list_of_recordable_attributes_list_names(),
    )


def make_hooks(keeper, log_freq: int):
    """``HookContainer`` logging to ``keeper`` (no model saving: the harness checkpoints)."""
    return logging_presets.HookContainer(
        keeper,
        primary_metric="mean_average_precision_at_r",
        validation_split_name="test",
        save_models=False,
        log_freq=log_freq,
    )


def pending_records(keeper) -> dict:
    """The records not yet written to disk, as plain (picklable) dicts."""
    return {group: dict(series) for group, series in keeper.record_writer.records.items()}


def set_pending_records(keeper, records: dict) -> None:
    keeper.record_writer.records.clear()
    for group, series in records.items():
        keeper.record_writer.records[group] = collections.OrderedDict(series)
