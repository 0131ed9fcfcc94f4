"""One run folder, one process: a second ``python -m benchmarks`` on a folder in use stops at
once naming the holder, before it writes anything; a killed holder leaves no stale lock; a folder
that cannot be written is an error before training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from benchmarks import _shared as _io
from benchmarks.harness import cli, runner
from tests.benchmarks._util import REPO, cli_command_with_checkpoint_delay, cli_env, run_cli

pytestmark = pytest.mark.slow  # runs competing benchmark processes

CONFIG = (
    "name: lock-test\nseeds: [0]\nthreads: 1\n"
    "dataset: {name: digits, protocols: {zs: {type: zero_shot,\n"
    "  train_classes: [0, 1, 2, 3, 4], test_classes: [5, 6, 7, 8, 9]}}}\n"
    "training: {epochs: 2, batch_size: 16, m_per_class: 4, iterations_per_epoch: 1}\n"
    "methods:\n"
    "  - {name: no_learning, no_learning: true}\n"
    "  - {name: triplet, loss: {class: TripletMarginLoss, args: {margin: 0.2}}}\n"
)

#: A process that locks a folder as the harness does (the lock is in the light shared module).
HOLDER = (
    "import sys, time\nfrom benchmarks import _shared\n"
    "_shared.lock_folder(sys.argv[1], '.lock', what='run folder')\n"
    "print('locked', flush=True)\ntime.sleep(120)\n"
)


def _args(cfg, out):
    return ["--config", str(cfg), "--output", str(out), "--progress", "none", "--no-plots"]


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def cfg(tmp_path):
    p = tmp_path / "cfg.yaml"
    p.write_text(CONFIG)
    return p


@pytest.fixture
def holder(tmp_path):
    """A process that holds the lock of ``tmp_path / 'run'`` (killed at the end)."""
    out = tmp_path / "run"
    out.mkdir()
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], cwd=REPO, env=cli_env(),
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    yield p
    if p.poll() is None:
        p.kill()
        p.wait(timeout=30)


class TestLock:
    def test_a_second_run_is_refused_while_the_first_runs(self, cfg, tmp_path):
        out = tmp_path / "run"
        # the first run pauses 3 s before each checkpoint: it is mid-cell when the second starts
        first = subprocess.Popen(cli_command_with_checkpoint_delay(3, *_args(cfg, out)),
                                 cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        try:
            t0 = time.time()
            while not (out / "cells" / "zs" / "no_learning").exists():
                assert first.poll() is None and time.time() - t0 < 120, "first run did not start"
                time.sleep(0.05)
            sessions = json.loads((out / "run.json").read_text())["sessions"]
            second = run_cli(*_args(cfg, out))
            assert first.poll() is None  # still running: the refusal came while it held the lock
            assert second.returncode == 1
            assert "Traceback" not in second.stderr
            assert f"python -m benchmarks: error: run folder '{out}' is in use by PID " \
                f"{first.pid} (" in second.stderr
            # the second wrote nothing: no session of its own, no half-written file (the first
            # goes on writing its cells meanwhile, so the folder's listing is no measure)
            after = json.loads((out / "run.json").read_text())["sessions"]
            assert [x["started_utc"] for x in after] == [x["started_utc"] for x in sessions]
            assert len(after) == 1
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)

    def test_the_message_names_the_holder_and_fresh_deletes_nothing(self, cfg, tmp_path, holder):
        out = tmp_path / "run"
        (out / "run.json").write_text("{}")  # looks like a run: --fresh would delete it
        with pytest.raises(ValueError, match=rf"run folder '{out}' is in use by PID "
                           rf"{holder.pid} \(.*-c .*\) \(lock {out}/\.lock\); wait for it to "
                           r"end, or pick another --output"):
            cli.main([*_args(cfg, out), "--fresh"])
        assert (out / "run.json").read_text() == "{}"
        assert _listing(out) == [".lock", "run.json"]

    def test_a_stale_lock_of_a_killed_process_does_not_block(self, cfg, tmp_path, holder):
        out = tmp_path / "run"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        assert str(holder.pid) in (out / runner.LOCK_NAME).read_text()
        assert cli.main([*_args(cfg, out), "--methods", "no_learning"]) == 0
        assert str(os.getpid()) in (out / runner.LOCK_NAME).read_text()

    def test_the_lock_is_released_at_the_end_and_reentrant(self, cfg, tmp_path):
        out = tmp_path / "run"
        assert cli.main([*_args(cfg, out), "--methods", "no_learning"]) == 0
        assert os.path.realpath(out) not in _io.held_locks()  # released by main
        _io.lock_folder(str(out), runner.LOCK_NAME)
        _io.lock_folder(str(out), runner.LOCK_NAME)  # the holder itself: a no-op
        try:
            proc = subprocess.run([sys.executable, "-c", HOLDER, str(out)], cwd=REPO,
                                  env=cli_env(), capture_output=True, text=True, timeout=60)
            assert proc.returncode == 1 and f"in use by PID {os.getpid()}" in proc.stderr
        finally:
            _io.unlock_folder(str(out))
        assert os.path.realpath(out) not in _io.held_locks()


class TestUnwritableFolder:
    @pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux /sys")
    def test_a_folder_that_cannot_be_created_or_written(self, cfg):
        with pytest.raises(ValueError, match=r"--output '/sys/benchmarks-run': cannot create "
                           r"the folder \(Operation not permitted\)"):
            cli.main(_args(cfg, "/sys/benchmarks-run"))
        with pytest.raises(ValueError, match=r"--output '/sys/kernel' is not writable "
                           r"\(Permission denied: /sys/kernel/\.lock\)"):
            cli.main(_args(cfg, "/sys/kernel"))

    @pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
    def test_a_read_only_folder(self, cfg, tmp_path):
        out = tmp_path / "run"
        out.mkdir()
        out.chmod(0o555)
        try:
            with pytest.raises(ValueError, match=rf"{out} is not a writable folder"):
                cli.main(_args(cfg, out))
        finally:
            out.chmod(0o755)

    def test_a_read_only_subfolder_is_found_before_training(self, cfg, tmp_path, monkeypatch):
        out = tmp_path / "run"
        (out / "cells").mkdir(parents=True)
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m: False if str(p).endswith("cells")
                            else real(p, m))
        from benchmarks.harness import train

        monkeypatch.setattr(train, "run_cell", lambda *a, **k: pytest.fail("trained"))
        with pytest.raises(ValueError, match=rf"{out / 'cells'} is not a writable folder"):
            cli.main(_args(cfg, out))
