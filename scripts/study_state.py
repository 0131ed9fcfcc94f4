"""Keep a long run's finished work in git, so that another session (on another machine) resumes it.

    python -m scripts.study_state save    RUN_DIR STATE_DIR   # finished cells -> STATE_DIR
    python -m scripts.study_state restore STATE_DIR RUN_DIR   # STATE_DIR -> a run folder

A run folder holds checkpoints and record files (megabytes, git-ignored); what a resume needs
from it is small: each committed cell's result (``cells/<protocol>/<method>/seed<k>.json``),
each search's trial records, summaries and the committed cells of its folds, and the run's
identity and history (``config_identity.json``, ``run.json``). ``save`` copies exactly those
(JSON only, never a checkpoint); ``restore`` copies them back where the run folder lacks them,
so the same command then goes on: committed cells are read, not recomputed. The Optuna study
lives in a journal file (``--storage journal:STATE_DIR/optuna.journal``), text that git keeps
as it is.

One clone at a time: ``restore`` never merges, it only fills in what the run folder lacks, so
two clones that ran the same study side by side would each keep their own ``run.json``,
``trials.json`` and journal; commit the state of one before another resumes it.
"""

from __future__ import annotations

import os
import shutil
import sys

#: Files of a run folder that ``save`` keeps (by name), beside the cells' results.
KEPT_NAMES = ("config_identity.json", "run.json", "trials.json", "summary.json", "best.json",
              "folds.json")


def _kept(rel: str) -> bool:
    parts = rel.split(os.sep)
    name = parts[-1]
    if name in KEPT_NAMES:
        return True
    # a committed cell: .../cells/<protocol>/<method>/seed<k>.json
    return (len(parts) >= 4 and parts[-4] == "cells" and name.startswith("seed")
            and name.endswith(".json"))


def _copy_tree(src: str, dst: str, overwrite: bool) -> int:
    copied = 0
    for folder, _, files in os.walk(src):
        for name in files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, src)
            if not _kept(rel):
                continue
            target = os.path.join(dst, rel)
            if os.path.exists(target) and not overwrite:
                continue
            if os.path.exists(target) and _same(path, target):
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(path, target)
            copied += 1
    return copied


def _same(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("save", "restore"):
        print(__doc__, file=sys.stderr)
        return 2
    what, src, dst = argv
    if not os.path.isdir(src):
        if what == "restore":
            return 0  # nothing saved yet: a fresh start
        print(f"study_state: {src} is not a folder", file=sys.stderr)
        return 1
    n = _copy_tree(src, dst, overwrite=what == "save")
    print(f"[study_state] {what}: {n} file(s) {src} -> {dst}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
