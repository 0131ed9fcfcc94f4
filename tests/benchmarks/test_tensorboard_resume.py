"""TensorBoard records of a cell stopped after a checkpoint and resumed equal the uninterrupted
ones: the events written before the stop are kept, those after the checkpoint purged."""

from __future__ import annotations

import glob
import os

import pytest
import torch

from benchmarks.harness import train
from tests.benchmarks._util import digits_cell

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing import event_accumulator  # noqa: E402

TRAINING = {
    "epochs": 3,
    "batch_size": 40,
    "m_per_class": 8,
    "iterations_per_epoch": 4,
    "log_freq": 1,
    "tensorboard": True,
}
METHODS = [{"name": "triplet", "loss": {"class": "TripletMarginLoss", "args": {"margin": 0.2}}}]


def _scalars(run_dir: str) -> dict:
    """{tag: [(step, value), ...]} over every event file of the cell, TensorBoard's view."""
    (folder,) = glob.glob(os.path.join(run_dir, "records", "*", "*", "*", "tensorboard"))
    acc = event_accumulator.EventAccumulator(folder, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_stopped_and_resumed_cell_has_the_uninterrupted_tensorboard_scalars(tmp_path):
    cfg, protocol = digits_cell("tb-test", TRAINING, METHODS)
    method, cpu = cfg.methods[0], torch.device("cpu")
    train.run_cell(cfg, str(tmp_path / "whole"), protocol, method, 0, cpu)
    whole = _scalars(str(tmp_path / "whole"))
    assert whole and all(whole.values())
    steps = sorted({s for v in whole.values() for s, _ in v})
    assert steps[0] == 0 and steps[-1] == 3 * 4 - 1  # every iteration of the 3 epochs
    with pytest.raises(train.CellInterrupted, match="stopped after epoch 2"):
        train.run_cell(cfg, str(tmp_path / "cut"), protocol, method, 0, cpu, stop_after_epoch=2)
    # simulate a kill during epoch 3: its events reach the event file, no checkpoint follows
    tb_dir = glob.glob(str(tmp_path / "cut" / "work" / "*" / "*" / "*" / "records" / "tensorboard"))
    assert tb_dir, "the stopped cell kept no TensorBoard folder"
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(tb_dir[0]) as w:
        w.add_scalar(next(iter(whole)), 123.0, 2 * 4 + 1)
    train.run_cell(cfg, str(tmp_path / "cut"), protocol, method, 0, cpu)
    assert _scalars(str(tmp_path / "cut")) == whole
