"""Helpers shared by the harness tests: run ``python -m benchmarks`` as a user would."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

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
    from benchmarks.harness import config, data

    cfg = config.deep_merge(
        config.DEFAULTS,
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
        },
    )
    config.validate_config(cfg)
    return cfg, data.build_protocols(cfg)["zs"]
