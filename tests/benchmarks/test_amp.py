"""The harness's mixed-precision trainer (``training.amp``): bfloat16 autocast on the CPU.

On CUDA the same trainer runs float16 with a grad scaler; here it is exercised on the CPU, where
autocast picks bfloat16 and the scaler is off. Checked: autocast really is on while the
embeddings are computed, the coding-rate term still trains (finite results), and a run stopped
after its first epoch's checkpoint and resumed ends exactly where the uninterrupted run ends.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from pytorch_metric_learning import trainers

from benchmarks.harness import train
from tests.benchmarks._util import digits_cell

pytestmark = pytest.mark.slow  # trains under autocast, stopped and resumed

TRAINING = {"epochs": 2, "batch_size": 40, "m_per_class": 8, "iterations_per_epoch": 3, "amp": True}
METHOD = {
    "name": "triplet+coding_rate",
    "loss": {
        "class": "TripletMarginLoss",
        "args": {
            "margin": 0.2,
            "embedding_regularizer": {"class": "CodingRateRegularizer"},
            "embedding_reg_weight": 0.1,
        },
    },
}


@pytest.fixture(scope="module")
def setup():
    cfg, protocol = digits_cell("amp-test", TRAINING, [METHOD])
    return cfg, protocol, cfg.methods[0]


def _metrics(result):
    return {k: v for k, v in result.items() if k not in ("seconds", "resumed_from_epoch")}


def test_embeddings_are_computed_under_bfloat16_autocast(setup, tmp_path, monkeypatch):
    cfg, protocol, method = setup
    seen = []
    original = trainers.MetricLossOnly.compute_embeddings

    def spy(self, x):
        out = original(self, x)
        seen.append((torch.is_autocast_enabled("cpu"), out.dtype))
        return out

    monkeypatch.setattr(trainers.MetricLossOnly, "compute_embeddings", spy)
    result = train.run_cell(cfg, str(tmp_path), protocol, method, 0, torch.device("cpu"))
    assert len(seen) == 2 * 3  # epochs × iterations
    assert all(enabled and dtype == torch.bfloat16 for enabled, dtype in seen)
    metrics = result["metrics"]
    assert 0.0 < metrics["mean_average_precision_at_r"] <= 1.0
    assert all(math.isfinite(v) for v in metrics.values())
    assert all(math.isfinite(v) for v in result["spectrum"])


def test_amp_off_trains_in_float32(setup, tmp_path, monkeypatch):
    cfg, protocol, method = setup
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, amp=False))
    seen = []
    original = trainers.MetricLossOnly.compute_embeddings

    def spy(self, x):
        out = original(self, x)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(trainers.MetricLossOnly, "compute_embeddings", spy)
    train.run_cell(cfg, str(tmp_path), protocol, method, 0, torch.device("cpu"))
    assert seen and set(seen) == {torch.float32}


def test_stopped_and_resumed_amp_run_matches_the_uninterrupted_one(setup, tmp_path):
    cfg, protocol, method = setup
    cpu = torch.device("cpu")
    whole = train.run_cell(cfg, str(tmp_path / "whole"), protocol, method, 0, cpu)
    with pytest.raises(train.CellInterrupted, match="stopped after epoch 1"):
        train.run_cell(cfg, str(tmp_path / "cut"), protocol, method, 0, cpu, stop_after_epoch=1)
    ckpt = next((tmp_path / "cut").rglob("ckpt.pt"))
    assert "grad_scaler" in torch.load(ckpt, weights_only=False)
    resumed = train.run_cell(cfg, str(tmp_path / "cut"), protocol, method, 0, cpu)
    assert resumed["resumed_from_epoch"] == 1
    assert _metrics(resumed) == _metrics(whole)
