"""Publish a finished run: copy its report files into ``benchmarks/results/<NAME>/``.

    python -m scripts.publish RUN_DIR NAME [--incomplete]

Copies ``table.md``, ``results.json``, the folder's PNGs and those of its ``tuning/`` (with
``tuning/best.json``): what the docs' results page and the README read. Never a checkpoint, a
record file or a cell (a long run keeps its cells with ``scripts/study_state.py``). A run with
missing cells (``results.json``: ``metadata.missing_cells``) is refused unless ``--incomplete``.
The report files of an earlier publication there (``table.md``, ``results.json``, the PNGs,
``tuning/best.json``) are removed first, so no figure of another run stays behind; anything else
(e.g. a study's ``state/``) is left alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def report_files(run_dir: Path) -> list[Path]:
    """The report files of ``run_dir``, relative to it."""
    found = [Path("table.md"), Path("results.json")]
    found += sorted(p.relative_to(run_dir) for p in run_dir.glob("*.png"))
    found += sorted(p.relative_to(run_dir) for p in run_dir.glob("tuning/*.png"))
    if (run_dir / "tuning" / "best.json").is_file():
        found.append(Path("tuning/best.json"))
    return found


def publish(run_dir: Path, dest: Path, incomplete: bool = False) -> list[Path]:
    """Copy ``run_dir``'s report files to ``dest`` (replacing an earlier publication's)."""
    for name in ("table.md", "results.json"):
        if not (run_dir / name).is_file():
            raise ValueError(f"{run_dir} has no {name}: not a finished run folder (rebuild the "
                             f"report with python -m benchmarks --report-only --output {run_dir})")
    with open(run_dir / "results.json", encoding="utf-8") as f:
        missing = json.load(f).get("metadata", {}).get("missing_cells") or []
    if missing and not incomplete:
        raise ValueError(f"{run_dir}: {len(missing)} cell(s) missing (e.g. {missing[0]}); finish "
                         "the run, or pass --incomplete to publish it as it is")
    if dest.is_dir():
        for old in report_files(dest):
            (dest / old).unlink(missing_ok=True)
    copied = []
    for rel in report_files(run_dir):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run_dir / rel, dest / rel)
        copied.append(rel)
    return copied


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.publish",
                                description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("name", help="the published folder: benchmarks/results/<NAME>/")
    p.add_argument("--incomplete", action="store_true", help="publish a run with missing cells")
    a = p.parse_args(argv)
    name = Path(a.name)
    if name.is_absolute() or ".." in name.parts or not name.parts:
        print(f"publish: NAME must be a folder name under {RESULTS}, got {a.name!r}",
              file=sys.stderr)
        return 2
    try:
        copied = publish(a.run_dir, RESULTS / a.name, a.incomplete)
    except ValueError as e:
        print(f"publish: {e}", file=sys.stderr)
        return 1
    print(f"[publish] {len(copied)} file(s) {a.run_dir} -> {RESULTS / a.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
