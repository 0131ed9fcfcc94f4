"""What the three benchmark products share (and nothing else): atomic files, run metadata
(git commit, CPU model) and argparse types.

- atomic files: every result file of a run is written to a temporary file and renamed, so a
  reader sees the old file or the new one, never half; a file that is damaged all the same
  (disk full, another program) raises :class:`DamagedFileError` naming it;
- run metadata: the harness report and the speed benchmark name the commit and the CPU the same way;
- argparse types: a bad value stops with exit code 2 and a message naming the option (argparse
  puts its name before ours).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from typing import Any

# ---------------------------------------------------------------- atomic files

def _umask() -> int:
    """The process's umask (read by setting it and putting it back: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _open_temp(folder: str) -> tuple[int, str]:
    """A temporary file in ``folder`` (``.tmp-*``) with the mode a plain ``open`` would give it:
    ``mkstemp`` creates files 0600, which would leave results unreadable to the colleagues that
    the user's umask lets in (a shared file system)."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never half."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = _open_temp(folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_figure(fig, path: str, **kwargs) -> None:
    """A matplotlib figure as PNG, atomically and with no software stamp (a re-run writes the
    same bytes); ``kwargs`` go to ``savefig`` (e.g. ``bbox_inches="tight"``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None}, **kwargs)
    atomic_write_bytes(path, buf.getvalue())


def atomic_torch_save(path: str, obj: Any, previous: str | None = None) -> None:
    """``torch.save`` atomically; with ``previous``, the file that was at ``path`` is kept there
    (renamed, so at every moment ``path`` or ``previous`` holds a complete file)."""
    import torch  # only the harness saves checkpoints

    buf = io.BytesIO()
    torch.save(obj, buf)
    if previous is None or not os.path.exists(path):
        atomic_write_bytes(path, buf.getvalue())
        return
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = _open_temp(folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# ---------------------------------------------------------------- folder lock

#: The folders this process holds locked: {real path: open lock file}.
_LOCKS: dict = {}


def lock_folder(folder: str, name: str = ".lock", what: str = "folder") -> None:
    """Lock ``folder`` for this process: ``fcntl.flock`` on ``folder/name``, kept until
    :func:`unlock_folder` or the end of the process (the OS releases it when a process dies, so a
    killed process leaves no stale lock; the file itself stays: deleting it would let a second
    process lock a new file while the first still holds the old one). The file names the holder
    (PID and command). A folder that another process holds is a ``ValueError`` naming that
    process; calling again in the holding process is a no-op."""
    import fcntl
    import shlex
    import sys

    key = os.path.realpath(folder)
    if key in _LOCKS:
        return
    path = os.path.join(folder, name)
    try:
        f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held open while locked)
    except OSError as e:
        raise ValueError(f"--output {folder!r} is not writable ({e.strerror}: {path})") from e
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise ValueError(
            f"{what} {folder!r} is in use by {holder} (lock {path}); wait for it to end, "
            "or pick another --output"
        ) from None
    f.seek(0)
    f.truncate()
    command = " ".join(shlex.quote(a) for a in [os.path.basename(sys.executable), *sys.argv])
    f.write(f"PID {os.getpid()} ({command})\n")
    f.flush()
    _LOCKS[key] = f


def unlock_folder(folder: str) -> None:
    f = _LOCKS.pop(os.path.realpath(folder), None)
    if f is not None:
        f.close()  # closing the file releases the flock


def held_locks() -> list[str]:
    """The folders this process holds locked (real paths)."""
    return sorted(_LOCKS)


# ---------------------------------------------------------------- damaged files


class DamagedFileError(ValueError):
    """A run file that exists but cannot be read (truncated, not JSON, wrong content); the
    message names the file. ``path`` and ``reason`` are kept for the caller's recovery."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"damaged file {path}: {reason}")
        self.path = path
        self.reason = reason


def read_json(path: str) -> Any:
    """The JSON in ``path``; a file that is not valid UTF-8 JSON raises
    :class:`DamagedFileError` naming it (a missing file: ``FileNotFoundError``)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        reason = "empty file" if not data.strip() else f"not valid JSON ({e})"
        raise DamagedFileError(path, reason) from None


def read_json_or_none(path: str) -> Any:
    """``read_json(path)``, or None when the file is missing or damaged (for readers that can
    do without it, e.g. a report that lists a damaged cell as missing)."""
    try:
        return read_json(path)
    except (FileNotFoundError, DamagedFileError):
        return None


def move_aside(path: str) -> str:
    """Rename a damaged ``path`` to ``path.damaged`` (``.damaged.1``, ... when taken); return
    the new name. Damaged files are kept for inspection, never deleted."""
    target, k = path + ".damaged", 0
    while os.path.exists(target):
        k += 1
        target = f"{path}.damaged.{k}"
    os.replace(path, target)
    return target


def snapshot_folder(folder: str) -> dict[str, bytes]:
    """The files directly under ``folder`` as {name: bytes} (records are flat folders)."""
    out = {}
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            p = os.path.join(folder, name)
            if os.path.isfile(p) and not name.startswith(".tmp-"):
                with open(p, "rb") as f:
                    out[name] = f.read()
    return out


def restore_folder(folder: str, files: dict[str, bytes]) -> None:
    """Make ``folder`` hold exactly ``files`` (used to roll records back to a checkpoint)."""
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    for name, data in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)


def atomic_replace_folder(src: str, dst: str) -> None:
    """Move the finished folder ``src`` to ``dst``, replacing an older ``dst`` if one is there."""
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    if os.path.exists(dst):
        shutil.rmtree(dst)
    os.replace(src, dst)


# ---------------------------------------------------------------- run metadata

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


# ---------------------------------------------------------------- argparse types

def _number(cast: Callable[[str], float], strict: bool, what: str) -> Callable[[str], float]:
    """A type that parses ``text`` with ``cast`` and accepts finite values > 0 (``strict``) or
    ≥ 0."""

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or (value <= 0 if strict else value < 0):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse's fallback message names the type by it
    return parse


positive_int = _number(int, True, "a positive integer")
non_negative_int = _number(int, False, "an integer >= 0")
positive_float = _number(float, True, "a positive, finite number")
non_negative_float = _number(float, False, "a finite number >= 0")
