"""Per-cell run facts (``meta``), the progress file, and testing during training
(``evaluation.interval``)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from benchmarks.harness import train
from tests.benchmarks._util import digits_cell

CPU = torch.device("cpu")
TRAINING = {"epochs": 3, "batch_size": 40, "m_per_class": 8, "iterations_per_epoch": 2}
TRIPLET = {"name": "triplet", "loss": {"class": "TripletMarginLoss", "args": {"margin": 0.2}}}


class TestMetaAndProgress:
    def test_meta_is_stored_under_run(self, tmp_path):
        cfg, protocol = digits_cell("meta", TRAINING, [TRIPLET])
        meta = {"threads": 1, "world_size": 1, "rank": 0, "device": "cpu", "cpu": "x"}
        result = train.run_cell(cfg, str(tmp_path), protocol, cfg.methods[0], 0, CPU, meta=meta)
        assert result["run"] == meta
        path = train.cell_paths(str(tmp_path), "zs", "triplet", 0)["result"]
        with open(path) as f:
            assert json.load(f)["run"] == meta

    def test_without_meta_there_is_no_run_key(self, tmp_path):
        cfg, protocol = digits_cell("meta", TRAINING, [TRIPLET])
        result = train.run_cell(cfg, str(tmp_path), protocol, cfg.methods[0], 0, CPU)
        assert "run" not in result

    def test_meta_must_be_a_dict(self, tmp_path):
        cfg, protocol = digits_cell("meta", TRAINING, [TRIPLET])
        with pytest.raises(TypeError, match="meta"):
            train.run_cell(cfg, str(tmp_path), protocol, cfg.methods[0], 0, CPU, meta=[1])

    def test_progress_file_after_each_epoch(self, tmp_path):
        cfg, protocol = digits_cell("progress", TRAINING, [TRIPLET])
        work = train.cell_paths(str(tmp_path), "zs", "triplet", 0)["work"]
        for epoch in (1, 2):
            with pytest.raises(train.CellInterrupted):
                train.run_cell(cfg, str(tmp_path), protocol, cfg.methods[0], 0, CPU,
                               stop_after_epoch=epoch)
            with open(os.path.join(work, "progress.json")) as f:
                assert json.load(f) == {"epoch": epoch, "epochs": 3}
        train.run_cell(cfg, str(tmp_path), protocol, cfg.methods[0], 0, CPU)
        assert not os.path.exists(work)
