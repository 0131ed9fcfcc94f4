"""Run metadata shared by the harness report and the speed benchmark."""

from __future__ import annotations

import os
import platform
import subprocess


def git_commit(short: bool = False) -> str | None:
    """The repository's HEAD commit, with ``-dirty`` when tracked files differ; None outside git."""
    here = os.path.dirname(os.path.abspath(__file__))

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["git", *args], cwd=here, capture_output=True, text=True, timeout=10, check=False
        )

    try:
        out = git("rev-parse", *(["--short"] if short else []), "HEAD")
        if out.returncode != 0:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, where ``platform.processor()`` is
    empty), else whatever ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
