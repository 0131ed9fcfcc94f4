"""A run killed with SIGKILL and restarted with the same command loses and duplicates nothing.

An uninterrupted reference run and a run killed twice (once inside a cell, between an epoch's end
and its checkpoint, once just after a cell was committed) must give the same table, the same
per-cell results and the same record-keeper records, row for row. Before the last restart, the
latest checkpoint and the latest committed result of the killed run are damaged (truncated): the
resumed run names both files and recovers, from the previous checkpoint and by computing the cell
again. Ctrl-C and SIGTERM end a run with one line giving the command that resumes it.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import time

import pytest

from tests.benchmarks._util import (
    REPO,
    cli_command_with_checkpoint_delay,
    cli_env,
    run_cli,
    sqlite_dump,
)

pytestmark = pytest.mark.slow  # kills and resumes benchmark processes

CONFIG = """\
name: resume-test
seeds: [0, 1]
threads: 1
dataset:
  name: digits
  protocols:
    zs: {type: zero_shot, train_classes: [0, 1, 2, 3, 4], test_classes: [5, 6, 7, 8, 9]}
training: {epochs: 3, batch_size: 40, m_per_class: 8, iterations_per_epoch: 4, log_freq: 1}
methods:
  - {name: no_learning, no_learning: true}
  - name: triplet+coding_rate
    loss:
      class: TripletMarginLoss
      args:
        margin: 0.2
        embedding_regularizer: {class: CodingRateRegularizer}
        embedding_reg_weight: 0.1
  - name: proxy_anchor
    loss: {class: ProxyAnchorLoss, args: {margin: 0.1, alpha: 32}}
"""
# cells in plan order: no_learning/0, no_learning/1, triplet+coding_rate/0,
# triplet+coding_rate/1, proxy_anchor/0, ...
N_CELLS = 6


def _args(cfg, out):
    return ["--config", str(cfg), "--output", str(out), "--progress", "none", "--no-plots"]


def _wait_for(pred, proc, timeout=120.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    return False


def _kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _cells(out):
    return sorted(glob.glob(os.path.join(out, "cells", "*", "*", "*.json")))


def _records(out):
    rec = {}
    for folder in sorted(glob.glob(os.path.join(out, "records", "*", "*", "*"))):
        key = os.path.relpath(folder, out)
        files = {}
        for name in sorted(os.listdir(folder)):
            p = os.path.join(folder, name)
            if name.endswith(".csv"):
                with open(p) as f:
                    files[name] = f.read()
        files["logs.db"] = sqlite_dump(os.path.join(folder, "logs.db"))
        rec[key] = files
    return rec


def _truncate(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def _strip_volatile(cell):
    return {k: v for k, v in cell.items() if k not in ("seconds", "resumed_from_epoch")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("resume")
    cfg = base / "cfg.yaml"
    cfg.write_text(CONFIG)
    ref, killed = base / "ref", base / "killed"

    proc = run_cli(*_args(cfg, ref))
    assert proc.returncode == 0, proc.stderr[-3000:]

    env = cli_env()
    # a 0.4 s pause before each checkpoint is written (patched in by the test's launcher)
    command = cli_command_with_checkpoint_delay(0.4, *_args(cfg, killed))
    work_ckpt = os.path.join(killed, "work", "zs", "triplet+coding_rate", "seed0", "ckpt.pt")

    # kill 1: inside cell triplet+coding_rate/seed0, after epoch 1's checkpoint, during epoch 2's
    # window (epoch 2 has run and its records are in memory, its checkpoint not yet written)
    p = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert _wait_for(lambda: os.path.exists(work_ckpt), p), "no checkpoint appeared"
    time.sleep(0.15)
    _kill(p)
    first_ckpt_epoch = __import__("torch").load(work_ckpt, weights_only=True)["epoch"]
    n_cells_after_kill1 = len(_cells(killed))

    # kill 2: once one more cell (triplet+coding_rate/seed0, resumed) is committed and the next
    # one has written epoch 2's checkpoint (epoch 1's kept as ckpt.prev.pt); epoch 3's is 0.4 s
    # away at the earliest
    work = os.path.join(killed, "work", "zs", "triplet+coding_rate", "seed1")
    ckpt, prev = os.path.join(work, "ckpt.pt"), os.path.join(work, "ckpt.prev.pt")
    p = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert _wait_for(
        lambda: len(_cells(killed)) >= n_cells_after_kill1 + 1
        and os.path.exists(prev) and os.path.exists(ckpt), p
    ), "no cell committed and two checkpoints written"
    _kill(p)
    n_cells_after_kill2 = len(_cells(killed))
    import torch

    epochs = (torch.load(ckpt, weights_only=True)["epoch"],
              torch.load(prev, weights_only=True)["epoch"])

    # damage the latest checkpoint and the latest committed result
    latest_cell = max(_cells(killed), key=os.path.getmtime)
    with open(latest_cell) as f:
        latest_before_damage = json.load(f)
    _truncate(ckpt)
    _truncate(latest_cell)

    proc = run_cli(*_args(cfg, killed))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {
        "cfg": cfg,
        "ref": ref,
        "killed": killed,
        "first_ckpt_epoch": first_ckpt_epoch,
        "n1": n_cells_after_kill1,
        "n2": n_cells_after_kill2,
        "epochs": epochs,
        "ckpt": ckpt,
        "prev": prev,
        "cell": latest_cell,
        "cell_before_damage": latest_before_damage,
        "stderr": proc.stderr,
    }


def _truncate(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


class TestResumeAfterSigkill:
    def test_kills_happened_mid_run(self, runs):
        assert 1 <= runs["first_ckpt_epoch"] < 3
        assert runs["n1"] < runs["n2"] < N_CELLS

    def test_the_killed_cell_resumed_from_its_checkpoint(self, runs):
        # as committed by the 2nd session (then damaged, and computed again by the 3rd)
        cell = runs["cell_before_damage"]
        assert (cell["method"], cell["seed"]) == ("triplet+coding_rate", 0)
        assert cell["resumed_from_epoch"] == runs["first_ckpt_epoch"]

    def test_same_cells_no_loss_no_duplicate(self, runs):
        ref, killed = _cells(runs["ref"]), _cells(runs["killed"])
        assert len(ref) == N_CELLS
        assert [os.path.relpath(p, runs["ref"]) for p in ref] == [
            os.path.relpath(p, runs["killed"]) for p in killed
        ]
        for a, b in zip(ref, killed, strict=True):
            with open(a) as fa, open(b) as fb:
                assert _strip_volatile(json.load(fa)) == _strip_volatile(json.load(fb)), a

    def test_same_table(self, runs):
        def body(p):
            text = (p / "table.md").read_text()
            return text[text.index("### ") :]

        assert body(runs["ref"]) == body(runs["killed"])
        results = json.loads((runs["killed"] / "results.json").read_text())
        assert results["metadata"]["missing_cells"] == []
        assert len(results["results"]) == N_CELLS

    def test_same_records_row_for_row(self, runs):
        ref, killed = _records(runs["ref"]), _records(runs["killed"])
        assert sorted(ref) == sorted(killed)
        assert len(ref) == N_CELLS
        for key in ref:
            assert ref[key] == killed[key], key
        # loss history: one row per iteration, 3 epochs x 4 iterations, no repeats
        hist = killed["records/zs/triplet+coding_rate/seed0"]["logs.db"]["loss_histories"]
        assert len(hist) == 12

    def test_no_working_files_left(self, runs):
        assert not (runs["killed"] / "work").exists()
        leftovers = glob.glob(os.path.join(runs["killed"], "**", ".tmp-*"), recursive=True)
        assert leftovers == []


class TestKilledBetweenCommitAndCleanUp:
    def test_a_committed_cell_drops_its_leftover_work_folder(self, tmp_path):
        import torch

        from benchmarks.harness import train
        from tests.benchmarks._util import digits_cell

        cfg, protocol = digits_cell("cleanup", {}, [{"name": "floor", "no_learning": True}])
        method, cpu = cfg.methods[0], torch.device("cpu")
        first = train.run_cell(cfg, str(tmp_path), protocol, method, 0, cpu)
        assert not (tmp_path / "work").exists()
        # a kill after the result was written but before the working folder was deleted
        leftover = tmp_path / "work" / "zs" / "floor" / "seed0"
        leftover.mkdir(parents=True)
        (leftover / "ckpt.pt").write_bytes(b"stale")
        again = train.run_cell(cfg, str(tmp_path), protocol, method, 0, cpu)
        assert again == first
        assert not (tmp_path / "work").exists()


class TestResumeAfterDamage:
    def test_the_kill_left_two_checkpoints(self, runs):
        assert runs["epochs"] == (2, 1)

    def test_the_log_names_both_damaged_files(self, runs):
        lines = runs["stderr"].splitlines()
        ckpt, cell = runs["ckpt"], runs["cell"]
        assert any(
            x.startswith(f"[benchmarks] damaged file {ckpt}: cannot be read")
            and x.endswith(f"(moved to {ckpt}.damaged); resuming from {runs['prev']} (epoch 1)")
            for x in lines
        ), runs["stderr"][-3000:]
        assert any(
            x.startswith(f"[benchmarks] damaged file {cell}: not valid JSON")
            and x.endswith(f"(moved to {cell}.damaged); computing the cell again")
            for x in lines
        ), runs["stderr"][-3000:]
        assert "Traceback" not in runs["stderr"]
        assert os.path.exists(cell + ".damaged")  # kept for inspection

    def test_the_damaged_checkpoint_cell_resumed_from_the_previous_one(self, runs):
        cell = json.loads(
            (runs["killed"] / "cells" / "zs" / "triplet+coding_rate" / "seed1.json").read_text()
        )
        assert cell["resumed_from_epoch"] == 1
        again = json.loads(open(runs["cell"]).read())
        assert again["resumed_from_epoch"] is None  # the damaged result: computed from scratch
        assert _strip_volatile(again) == _strip_volatile(runs["cell_before_damage"])


class TestInterrupt:
    @pytest.mark.parametrize("sig, status, what", [
        (signal.SIGINT, 130, "interrupted (Ctrl-C)"),
        (signal.SIGTERM, 143, "terminated (SIGTERM)"),
    ])
    def test_one_line_with_the_resume_command(self, runs, tmp_path, sig, status, what):
        out = tmp_path / "run"
        args = [*_args(runs["cfg"], out), "--fresh"]
        ckpt = os.path.join(out, "work", "zs", "triplet+coding_rate", "seed0", "ckpt.pt")
        # 2 s before every checkpoint: the run is still going when the signal comes, however
        # slow or fast the machine (after the first checkpoint, several epochs remain)
        # SIGINT back to its default in the child: a test session started in the background
        # (`cmd &`, as CI may do) ignores SIGINT, and Python then installs no Ctrl-C handler
        p = subprocess.Popen(cli_command_with_checkpoint_delay(2.0, *args), cwd=REPO,
                             env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        assert _wait_for(lambda: os.path.exists(ckpt), p), "no checkpoint appeared"
        assert p.poll() is None, "the run ended before the signal"
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
        assert p.returncode == status, err[-3000:]
        assert "Traceback" not in err and "KeyboardInterrupt" not in err
        resume = "python -m benchmarks " + " ".join(_args(runs["cfg"], out))  # without --fresh
        assert err.rstrip().splitlines()[-1] == (
            f"python -m benchmarks: {what}; every finished epoch is kept; resume with: {resume}"
        )
        assert os.path.exists(ckpt)  # the finished epoch is there to resume from
