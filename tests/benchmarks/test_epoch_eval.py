"""Per-cell run facts (``meta``), the progress file, and testing during training
(``evaluation.interval``)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from benchmarks.harness import train
from tests.benchmarks._util import digits_cell, sqlite_dump

pytestmark = pytest.mark.slow  # trains cells with tests during training

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
            train.run_cell(cfg, str(tmp_path), protocol, cfg.methods[0], 0, CPU,
                           meta=[1])

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


# --------------------------------------------------------------------- testing during training


def _cell(interval: int, epochs: int = 3, augment_shift: int = 2, name: str = "curve"):
    """(config, protocol) of one triplet cell on shifted digits (0-4 -> 5-9), one thread."""
    from benchmarks.harness import config, datasets

    cfg = config.parse_config({
        "name": name,
        "seeds": [0],
        "threads": 1,
        "dataset": {
            "name": "digits",
            "augment_shift": augment_shift,
            "protocols": {"zs": {"type": "zero_shot", "train_classes": [0, 1, 2, 3, 4],
                                 "test_classes": [5, 6, 7, 8, 9]}},
        },
        "training": {**TRAINING, "epochs": epochs},
        "evaluation": {"interval": interval},
        "methods": [TRIPLET],
    })
    return cfg, datasets.build(cfg.dataset)["zs"]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _final_weights(cfg, protocol, run_dir) -> dict:
    """The trunk and embedder weights after the last epoch (the cell stopped after writing its
    last checkpoint, before its final test)."""
    with pytest.raises(train.CellInterrupted):
        train.run_cell(cfg, str(run_dir), protocol, cfg.methods[0], 0, CPU,
                       stop_after_epoch=cfg.training.epochs)
    work = train.cell_paths(str(run_dir), "zs", "triplet", 0)["work"]
    state = torch.load(os.path.join(work, "ckpt.pt"), weights_only=True)
    return {**state["trunk"], **{f"embedder.{k}": v for k, v in state["embedder"].items()}}


def _erank_reference(z: np.ndarray) -> float:
    """exp(entropy) of the singular values (normalised to sum 1) of the L2-normalised rows, in
    float64 through numpy's SVD."""
    z = z.astype(np.float64)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    s = np.linalg.svd(z, compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


class TestIntervalConfig:
    def test_default_is_zero(self):
        cfg, _ = digits_cell("d", TRAINING, [TRIPLET])
        assert cfg.evaluation.interval == 0

    @pytest.mark.parametrize("value", [-1, 1.5, "2", True, None])
    def test_bad_values_name_the_key(self, value):
        from benchmarks.harness import config

        raw = {"name": "x", "dataset": {"name": "digits"}, "evaluation": {"interval": value},
               "methods": [TRIPLET]}
        with pytest.raises(ValueError, match=r"evaluation\.interval"):
            config.parse_config(raw)

    def test_the_default_leaves_the_run_identity_as_before(self):
        from benchmarks.harness import config

        zero, _ = _cell(0)
        two, _ = _cell(2)
        assert "interval" not in config.identity(zero)["evaluation"]
        assert config.identity(two)["evaluation"]["interval"] == 2

    @pytest.mark.parametrize("interval,epochs,expected", [
        (0, 5, []), (1, 3, [1, 2, 3]), (2, 5, [2, 4, 5]), (3, 3, [3]), (7, 3, [3]),
    ])
    def test_tested_epochs(self, interval, epochs, expected):
        got = [e for e in range(1, epochs + 1) if train.tests_at(e, interval, epochs)]
        assert got == expected


class TestCurve:
    def test_interval_does_not_change_training(self, tmp_path, one_thread):
        """Bitwise the same weights after training with a test after every epoch as without:
        the shift augmentation and the DataLoader draw from the generators the tests use."""
        base = _final_weights(*_cell(0), tmp_path / "none")
        tested = _final_weights(*_cell(1), tmp_path / "every")
        assert base.keys() == tested.keys()
        for k in base:
            assert torch.equal(base[k], tested[k]), k

    def test_the_weight_comparison_can_fail(self, tmp_path, one_thread, monkeypatch):
        """Without restoring the generators after a test, training changes (so the test
        above detects a test that draws)."""
        base = _final_weights(*_cell(0), tmp_path / "none")
        monkeypatch.setattr(train, "set_rng_state", lambda state: None)
        tested = _final_weights(*_cell(1), tmp_path / "every")
        assert any(not torch.equal(base[k], tested[k]) for k in base)

    def test_curve_entries_and_final_metrics(self, tmp_path, one_thread):
        cfg0, protocol = _cell(0)
        plain = train.run_cell(cfg0, str(tmp_path / "a"), protocol, cfg0.methods[0], 0, CPU)
        cfg, protocol = _cell(2, epochs=3)
        result = train.run_cell(cfg, str(tmp_path / "b"), protocol, cfg.methods[0], 0, CPU)
        assert "curve" not in plain
        curve = result["curve"]
        assert [e["epoch"] for e in curve] == [2, 3]
        keys = {"epoch", "mean_average_precision_at_r", "precision_at_1", "effective_rank",
                "train_effective_rank"}
        assert all(keys <= set(e) for e in curve)
        # the reported figure is the last epoch's, equal to the run without intermediate tests
        assert result["metrics"] == plain["metrics"]
        assert result["spectrum"] == plain["spectrum"]
        last = {k: v for k, v in curve[-1].items() if k in result["metrics"]}
        assert last == {k: result["metrics"][k] for k in last}
        assert curve[0]["mean_average_precision_at_r"] != curve[1]["mean_average_precision_at_r"]

    def test_train_effective_rank_against_numpy(self, tmp_path, one_thread):
        cfg, protocol = _cell(1, epochs=2)
        weights_dir = tmp_path / "w"
        _final_weights(cfg, protocol, weights_dir)
        work = train.cell_paths(str(weights_dir), "zs", "triplet", 0)["work"]
        state = torch.load(os.path.join(work, "ckpt.pt"), weights_only=True)
        result = train.run_cell(cfg, str(weights_dir), protocol, cfg.methods[0], 0, CPU)
        trunk, embedder = train.build_models(cfg, protocol, False)
        trunk.load_state_dict(state["trunk"])
        embedder.load_state_dict(state["embedder"])
        trunk.eval()
        embedder.eval()
        with torch.no_grad():
            z = embedder(trunk(protocol.train.x)).numpy()  # the unshifted training digits
        assert result["curve"][-1]["train_effective_rank"] == pytest.approx(
            _erank_reference(z), rel=1e-4)
        # the query side is the final result's effective rank
        assert result["curve"][-1]["effective_rank"] == result["metrics"]["effective_rank"]

    def test_resumed_curve_has_no_gap_and_no_repeat(self, tmp_path, one_thread):
        cfg, protocol = _cell(1, epochs=4)
        ref = train.run_cell(cfg, str(tmp_path / "ref"), protocol, cfg.methods[0], 0, CPU)
        run = str(tmp_path / "killed")
        for stop in (1, 3):
            with pytest.raises(train.CellInterrupted):
                train.run_cell(cfg, run, protocol, cfg.methods[0], 0, CPU, stop_after_epoch=stop)
        got = train.run_cell(cfg, run, protocol, cfg.methods[0], 0, CPU)
        assert got["resumed_from_epoch"] == 3
        assert [e["epoch"] for e in got["curve"]] == [1, 2, 3, 4]
        assert got["curve"] == ref["curve"]
        assert got["metrics"] == ref["metrics"]

    def test_resumed_after_the_last_epoch_is_not_tested_again(self, tmp_path, one_thread):
        cfg, protocol = _cell(1, epochs=2)
        ref = train.run_cell(cfg, str(tmp_path / "ref"), protocol, cfg.methods[0], 0, CPU)
        run = str(tmp_path / "killed")
        with pytest.raises(train.CellInterrupted):
            train.run_cell(cfg, run, protocol, cfg.methods[0], 0, CPU, stop_after_epoch=2)
        got = train.run_cell(cfg, run, protocol, cfg.methods[0], 0, CPU)
        assert got["curve"] == ref["curve"]
        assert got["metrics"] == ref["metrics"]
        records = train.cell_paths(run, "zs", "triplet", 0)["records"]
        ref_records = train.cell_paths(str(tmp_path / "ref"), "zs", "triplet", 0)["records"]
        assert sqlite_dump(os.path.join(records, "logs.db")) == sqlite_dump(
            os.path.join(ref_records, "logs.db"))

    def test_curve_is_in_the_records(self, tmp_path, one_thread):
        cfg, protocol = _cell(1, epochs=2)
        result = train.run_cell(cfg, str(tmp_path), protocol, cfg.methods[0], 0, CPU)
        records = train.cell_paths(str(tmp_path), "zs", "triplet", 0)["records"]
        dump = sqlite_dump(os.path.join(records, "logs.db"))
        assert train.CURVE_RECORDS in dump
        import sqlite3

        con = sqlite3.connect(os.path.join(records, "logs.db"))
        cur = con.execute(f'SELECT * FROM "{train.CURVE_RECORDS}" ORDER BY "~iteration~"')
        cols = [d[0] for d in cur.description]
        got = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        con.close()
        assert [r["~iteration~"] for r in got] == [1, 2]  # the epoch
        for row, entry in zip(got, result["curve"], strict=True):
            assert row["train_effective_rank"] == pytest.approx(entry["train_effective_rank"])

    def test_records_equal_those_without_intermediate_tests_but_the_curve(self, tmp_path,
                                                                           one_thread):
        """The losses and the final accuracies are recorded as without ``interval``; the tests
        before the last epoch add the ``curve`` group only (no NMI: their cheaper tester)."""
        dumps = []
        for interval in (0, 1):
            cfg, protocol = _cell(interval)
            run = str(tmp_path / str(interval))
            result = train.run_cell(cfg, run, protocol, cfg.methods[0], 0, CPU)
            records = train.cell_paths(run, "zs", "triplet", 0)["records"]
            dumps.append(sqlite_dump(os.path.join(records, "logs.db")))
        curve = dumps[1].pop(train.CURVE_RECORDS)
        assert len(curve) == 3
        sequence = dumps[1]["sqlite_sequence"]
        assert (train.CURVE_RECORDS, 3) in sequence
        dumps[1]["sqlite_sequence"] = [r for r in sequence if r[0] != train.CURVE_RECORDS]
        assert dumps[0] == dumps[1]
        assert all("NMI" not in e for e in result["curve"])
        assert "NMI" in result["metrics"]
