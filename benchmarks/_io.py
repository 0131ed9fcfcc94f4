"""Atomic file writes: every result file of a run is written to a temporary file and renamed."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from typing import Any

import torch


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never half."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
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


def atomic_torch_save(path: str, obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


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
