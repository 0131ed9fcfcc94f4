"""The default benchmark needs no network: the smoke run passes with every socket connection
refused (``sitecustomize`` on ``PYTHONPATH``, so that every Python process of the run, data-loader
workers included, is blocked), and no connection is even attempted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.benchmarks._util import REPO, cli_command, cli_env

pytestmark = pytest.mark.slow  # runs the smoke benchmark in a subprocess

BLOCKER = '''\
import os
import socket

_LOG = os.environ["NO_NETWORK_LOG"]


def _refuse(*args, **kwargs):
    with open(_LOG, "a", encoding="utf-8") as f:
        f.write(repr(args[1:] if args and isinstance(args[0], socket.socket) else args) + "\\n")
    raise OSError("network blocked by the test (no_network)")


socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
'''


def _env(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    log = tmp_path / "attempts.log"
    env = cli_env({"NO_NETWORK_LOG": str(log)})
    env["PYTHONPATH"] = str(site) + ":" + env["PYTHONPATH"]
    return env, log


class TestNoNetwork:
    def test_the_blocker_blocks(self, tmp_path):
        env, log = _env(tmp_path)
        code = ("import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
                "except OSError as e:\n    print(e)\n")
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, text=True,
                             capture_output=True, timeout=60, check=True).stdout
        assert out.strip() == "network blocked by the test (no_network)"
        assert "127.0.0.1" in log.read_text()

    def test_the_smoke_benchmark_runs_offline(self, tmp_path):
        env, log = _env(tmp_path)
        out = tmp_path / "run"
        proc = subprocess.run(
            cli_command(
                "--dataset", "digits", "--smoke", "--output", str(out), "--progress", "none"
            ),
            cwd=REPO, env=env, text=True, capture_output=True, timeout=600, check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert not log.exists(), log.read_text()  # not one connection attempted
        results = json.loads((out / "results.json").read_text())
        assert results["metadata"]["missing_cells"] == []
        plan = json.loads((out / "run.json").read_text())["plan"]
        assert len(results["results"]) == len(plan) > 0
        assert (out / "table.md").exists()
