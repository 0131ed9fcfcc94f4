"""The grid under torch's own launcher (2 CPU processes, gloo): the same cells as one process, the
same tuned settings, and a killed rank resumed without recomputing or losing a committed cell.

Each test starts real processes through ``python -m benchmarks.launch`` (which runs
``torchrun --standalone``), as ``scripts/benchmark.sh`` does.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from benchmarks import _shared
from benchmarks.harness import cli, ranks
from tests.benchmarks._util import REPO, cli_env

pytestmark = [
    pytest.mark.slow,  # real processes through torchrun
    pytest.mark.skipif(not hasattr(os, "sched_getaffinity"),
                       reason="torchrun's CPU layout is tested on Linux"),
]

GRID = (
    "name: torchrun-test\nseeds: [0, 1]\n"
    "dataset: {name: digits, protocols: {zs: {type: zero_shot,\n"
    "  train_classes: [0, 1, 2, 3, 4], test_classes: [5, 6, 7, 8, 9]}}}\n"
    "training: {epochs: 2, batch_size: 32, m_per_class: 4, iterations_per_epoch: 3}\n"
    "evaluation: {interval: 1}\n"
    "methods:\n"
    "  - {name: no_learning, no_learning: true}\n"
    "  - {name: triplet, loss: {class: TripletMarginLoss, args: {margin: 0.2}}}\n"
    "  - name: contrastive+coding_rate\n"
    "    loss: {class: ContrastiveLoss, args: {embedding_reg_weight: 0.1,\n"
    "      embedding_regularizer: {class: CodingRateRegularizer}}}\n"
    "  - name: margin+easy_positive\n"
    "    loss: {class: MarginLoss}\n"
    "    miner: {class: pml_anticollapse.miners.EasyPositiveMiner}\n"
)

#: Kills this process (rank 1 only) right after it saved the checkpoint of epoch 1 of its first
#: learned cell: a rank stopped at a known point, not by a timer. Loaded into every rank through
#: PYTHONPATH, the way a user's sitecustomize would be.
KILL_RANK_1 = """\
import os, signal
if os.environ.get("RANK") == "1":
    from benchmarks.harness import train
    _save = train.Checkpoint.save
    def save(self, cell, trainer, elapsed):
        _save(self, cell, trainer, elapsed)
        if trainer.epoch >= 1:
            os.kill(os.getpid(), signal.SIGKILL)
    train.Checkpoint.save = save
"""


def _launch(*args, nproc=2, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.launch", "--nproc-per-node", str(nproc),
         "--resume-as", "RESUME", "--", *args],
        cwd=REPO, env=cli_env(env), capture_output=True, text=True, timeout=timeout,
        check=False,
    )


def _cells(out):
    """(protocol, method, seed) -> metrics and curve of every cell in a finished run folder."""
    results = json.loads((out / "results.json").read_text())["results"]
    return {
        (r["protocol"], r["method"], r["seed"]): (r["metrics"], r.get("curve"), r["run"]["threads"])
        for r in results
    }


def _table(out):
    # the table's numbers only: the footer names the run's wall time and layout
    return [line for line in (out / "table.md").read_text().splitlines() if line.startswith("|")]


@pytest.fixture
def grid(tmp_path):
    p = tmp_path / "grid.yaml"
    p.write_text(GRID)
    return p


def test_two_ranks_give_the_cells_and_table_of_one_process(grid, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--config", str(grid), "--progress", "none", "--no-plots", "--threads", "1"]
    assert cli.main([*common, "--output", str(one)]) == 0
    proc = _launch(*common, "--output", str(two))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes" in proc.stderr
    a, b = _cells(one), _cells(two)
    assert len(a) == 8 and a.keys() == b.keys()
    for cell in a:
        assert a[cell] == b[cell], cell  # same threads: the same numbers, to the bit
    assert _table(one) == _table(two)
    sessions = json.loads((two / "run.json").read_text())["sessions"]
    assert sessions[-1]["world_size"] == 2 and sessions[-1]["threads"] == 1
    assert sessions[-1]["command"].startswith("RESUME --config ")  # what the user typed
    results = json.loads((two / "results.json").read_text())["results"]
    ranks_seen = {r["run"]["rank"] for r in results}
    assert ranks_seen == {0, 1}  # both ranks computed cells


def test_a_killed_rank_is_named_and_the_same_command_resumes(grid, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_RANK_1)
    out, ref = tmp_path / "run", tmp_path / "ref"
    common = ["--config", str(grid), "--progress", "none", "--no-plots", "--threads", "1"]
    killed = _launch(*common, "--output", str(out),
                     env={"PYTHONPATH": f"{hook}{os.pathsep}{REPO}"}, timeout=300)
    assert killed.returncode == 1
    lines = [line for line in killed.stderr.splitlines() if "resume with" in line]
    assert len(lines) == 1, killed.stderr[-3000:]  # one line, not one per rank
    assert "rank 1 killed by SIGKILL" in lines[0]
    assert lines[0].endswith("resume with: RESUME " + " ".join(common + ["--output", str(out)]))
    committed = {p: p.read_bytes() for p in (out / "cells").rglob("seed*.json")}
    assert committed  # rank 0's cells (and rank 1's finished ones) were committed
    stamps = {p: p.stat().st_mtime_ns for p in committed}

    resumed = _launch(*common, "--output", str(out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for p, data in committed.items():  # nothing committed recomputed or lost
        assert p.read_bytes() == data and p.stat().st_mtime_ns == stamps[p], p
    assert cli.main([*common, "--output", str(ref)]) == 0
    assert _cells(out) == _cells(ref)
    assert _table(out) == _table(ref)
    last = json.loads((out / "run.json").read_text())["sessions"][-1]
    assert len(last["cells_computed"]) == len(_cells(ref)) - len(committed)


def test_two_ranks_tune_to_the_settings_of_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--smoke", "--dataset", "digits", "--protocols", "zero_shot", "--progress", "none",
              "--no-plots",
              "--threads", "1", "--methods", "triplet", "triplet+coding_rate", "no_learning"]
    assert cli.tune_main([*common, "--output", str(one)]) == 0
    journal = tmp_path / "shared" / "optuna.log"
    proc = _launch("tune", *common, "--output", str(two), "--storage", f"journal:{journal}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = [json.loads((o / "tuning" / "best.json").read_text()) for o in (one, two)]
    assert best[0] == best[1]
    assert journal.exists()  # the searches went through the storage asked for
    assert _table(one) == _table(two)


def test_run_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = tmp_path / "a.json"
        _shared.atomic_write_json(str(path), {"a": 1})
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o077)
        _shared.atomic_write_json(str(path), {"a": 2})
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_a_rank_that_cannot_see_the_run_folder_says_so(tmp_path):
    where = ranks.Ranks(rank=3, world_size=4, local_rank=1, local_world_size=2)
    with pytest.raises(ValueError, match="cannot see the run folder .* every rank must see"):
        ranks.check_shared_folder(str(tmp_path), "token-1", where, "node-a")
    (tmp_path / ".session").write_text("token-0")
    with pytest.raises(ValueError, match="another run in its"):
        ranks.check_shared_folder(str(tmp_path), "token-1", where, "node-a")
    (tmp_path / ".session").write_text("token-1")
    ranks.check_shared_folder(str(tmp_path), "token-1", where, "node-a")
