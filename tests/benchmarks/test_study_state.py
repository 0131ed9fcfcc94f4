"""A long run kept in git as small JSON files (scripts/study_state.py) and resumed from them in a
fresh run folder, as another clone on another machine would: nothing committed is recomputed."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from benchmarks.harness import cli
from scripts import study_state

CFG = {
    "name": "study-state",
    "seeds": [0, 1],
    "training": {"epochs": 1, "iterations_per_epoch": 2, "batch_size": 20, "m_per_class": 4},
    "tuning": {"per_protocol": True},
    "methods": [
        {"name": "floor", "no_learning": True},
        {"name": "triplet", "loss": {"class": "TripletMarginLoss", "args": {"margin": 0.2}},
         "search": {"loss.args.margin": {"uniform": [0.05, 0.5]}}},
    ],
}


def _tune(cfg, out, journal):
    return cli.tune_main(["--config", str(cfg), "--output", str(out), "--trials", "2",
                          "--folds", "2", "--progress", "none", "--no-plots", "--threads", "1",
                          "--storage", f"journal:{journal}"])


@pytest.mark.slow  # two tuning runs
def test_saved_state_resumes_in_a_fresh_folder_without_recomputing(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CFG))
    state = tmp_path / "state"
    first = tmp_path / "first"
    assert _tune(cfg, first, state / "optuna.journal") == 0
    assert study_state.main(["save", str(first), str(state)]) == 0
    saved = sorted(os.path.relpath(os.path.join(d, f), state)
                   for d, _, fs in os.walk(state) for f in fs)
    assert not [p for p in saved if p.endswith((".pt", ".csv", ".db", ".png"))]
    assert "config_identity.json" in saved and "run.json" in saved
    assert any(p.startswith(os.path.join("cells", "")) for p in saved)
    assert any(p.endswith("trials.json") for p in saved)

    second = tmp_path / "second"  # another clone: only the saved state
    assert study_state.main(["restore", str(state), str(second)]) == 0
    assert _tune(cfg, second, state / "optuna.journal") == 0
    last = json.loads((second / "run.json").read_text())["sessions"][-1]
    assert last["cells_computed"] == []  # every test cell was read back
    for name in ("results.json",):
        a = json.loads((first / name).read_text())["results"]
        b = json.loads((second / name).read_text())["results"]
        assert [r["metrics"] for r in a] == [r["metrics"] for r in b]
    for protocol in ("zero_shot",):
        a, b = (json.loads((o / "tuning" / protocol / "triplet" / "trials.json").read_text())
                for o in (first, second))
        assert len(a) == 2 and a == b  # the trials were read back, not run again


def test_restore_without_a_state_is_a_fresh_start(tmp_path):
    assert study_state.main(["restore", str(tmp_path / "none"), str(tmp_path / "run")]) == 0
    assert study_state.main(["bogus", "a", "b"]) == 2
