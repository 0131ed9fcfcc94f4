"""Helpers shared by the harness tests: run ``python -m benchmarks`` as a user would."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra or {})
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks", *args]


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli_command(*args),
        cwd=REPO,
        env=cli_env(env),
        capture_output=True,
        check=False,
        text=True,
        timeout=timeout,
    )


def sqlite_dump(path: str) -> dict:
    """{table: sorted rows} of a record-keeper database."""
    con = sqlite3.connect(path)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            t: sorted(map(tuple, con.execute(f'SELECT * FROM "{t}"').fetchall()), key=repr)
            for t in sorted(tables)
        }
    finally:
        con.close()


def digits_cell(name: str, training: dict, methods: list[dict]):
    """(config, protocol) for calling ``train.run_cell`` directly: the zero-shot digits protocol
    (train 0–4, test 5–9), seed 0, one thread, the given training settings and methods."""
    from benchmarks.harness import config, datasets

    cfg = config.parse_config(
        {
            "name": name,
            "seeds": [0],
            "threads": 1,
            "dataset": {
                "name": "digits",
                "protocols": {
                    "zs": {
                        "type": "zero_shot",
                        "train_classes": [0, 1, 2, 3, 4],
                        "test_classes": [5, 6, 7, 8, 9],
                    }
                },
            },
            "training": training,
            "methods": methods,
        }
    )
    return cfg, datasets.build(cfg.dataset)["zs"]


def retrieval_reference(
    xq: np.ndarray, yq: np.ndarray, xr: np.ndarray | None = None, yr: np.ndarray | None = None
) -> tuple[float, float]:
    """(P@1, MAP@R) by brute force in float64, independent of PML and faiss: a full argsort of
    the Euclidean distances between L2-normalised rows. ``xr=None``: queries are their own
    references, each query's own row excluded; else ranked against the distinct ``xr``, and R is
    the number of references that share the query's label."""
    xq = xq.astype(np.float64)
    xq = xq / np.linalg.norm(xq, axis=1, keepdims=True)
    self_ref = xr is None
    if self_ref:
        xr, yr = xq, yq
    else:
        xr = xr.astype(np.float64)
        xr = xr / np.linalg.norm(xr, axis=1, keepdims=True)
    d = ((xq[:, None, :] - xr[None, :, :]) ** 2).sum(-1)
    if self_ref:
        np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1, kind="stable")
    p1, aps = [], []
    for i in range(len(yq)):
        r = int((yr == yq[i]).sum()) - (1 if self_ref else 0)
        rel = (yr[order[i, :r]] == yq[i]).astype(np.float64)
        prec = np.cumsum(rel) / np.arange(1, r + 1)
        aps.append((prec * rel).sum() / r)
        p1.append(float(yr[order[i, 0]] == yq[i]))
    return float(np.mean(p1)), float(np.mean(aps))


#: ``python -c`` program that runs the CLI with a pause before every checkpoint is written (a
#: window for a test to SIGKILL the process between an epoch's end and its checkpoint). The pause
#: lives here, in the tests, not in the harness.
_DELAYED_CLI = """\
import sys, time
from benchmarks.harness import train
save = train.Checkpoint.save
def delayed(self, *args, **kwargs):
    time.sleep({seconds})
    return save(self, *args, **kwargs)
train.Checkpoint.save = delayed
from benchmarks.harness.cli import run
sys.argv[0] = "benchmarks"
sys.exit(run())
"""


def cli_command_with_checkpoint_delay(seconds: float, *args: str) -> list[str]:
    """``cli_command(*args)`` with a ``seconds`` pause before each checkpoint is written."""
    return [sys.executable, "-c", _DELAYED_CLI.format(seconds=float(seconds)), *args]
