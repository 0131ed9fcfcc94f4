"""scripts/publish.py: a run folder's report files, and nothing else, into a published folder."""

from __future__ import annotations

import json

import pytest

from scripts import publish


def _run(tmp_path, missing=()):
    run = tmp_path / "run"
    (run / "tuning" / "m").mkdir(parents=True, exist_ok=True)
    (run / "cells" / "p" / "m").mkdir(parents=True, exist_ok=True)
    (run / "table.md").write_text("# t\n")
    (run / "results.json").write_text(json.dumps({"metadata": {"missing_cells": list(missing)}}))
    for name in ("curves_p.png", "effects.png", "tuning/best_so_far.png", "tuning/best.json",
                 "cells/p/m/seed0.json", "cells/p/m/seed0.ckpt", "tuning/m/trials.json",
                 "run.json"):
        (run / name).write_bytes(b"x")
    return run


def test_copies_the_report_files_only(tmp_path):
    dest = tmp_path / "published"
    (dest / "state").mkdir(parents=True)
    (dest / "state" / "kept.json").write_text("{}")
    copied = publish.publish(_run(tmp_path), dest)
    got = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert got == ["curves_p.png", "effects.png", "results.json", "state/kept.json", "table.md",
                   "tuning/best.json", "tuning/best_so_far.png"]
    assert len(copied) == 6


def test_refuses_an_incomplete_run_unless_told(tmp_path):
    run = _run(tmp_path, missing=[["p", "m", 1]])
    with pytest.raises(ValueError, match=r"1 cell\(s\) missing .*--incomplete"):
        publish.publish(run, tmp_path / "d")
    assert not (tmp_path / "d").exists()
    assert publish.publish(run, tmp_path / "d", incomplete=True)


def test_republishing_leaves_no_figure_of_the_earlier_run(tmp_path):
    dest = tmp_path / "published"
    publish.publish(_run(tmp_path), dest)
    (dest / "curves_gone.png").write_bytes(b"old")  # a protocol the new run does not have
    (dest / "state").mkdir()
    (dest / "state" / "kept.json").write_text("{}")
    publish.publish(_run(tmp_path), dest)
    assert not (dest / "curves_gone.png").exists() and (dest / "state" / "kept.json").exists()


def test_a_folder_without_a_report_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(publish, "RESULTS", tmp_path / "results")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no table.md: not a finished run folder"):
        publish.publish(tmp_path / "empty", tmp_path / "d")
    assert publish.main([str(tmp_path / "empty"), "x"]) == 1
    capsys.readouterr()
    for bad in ("../x", "/abs", "."):
        assert publish.main([str(_run(tmp_path)), bad]) == 2
        assert f"publish: NAME must be a folder name under {tmp_path / 'results'}, got " \
            f"{bad!r}" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
    assert publish.main([str(_run(tmp_path)), "x"]) == 0
    assert (tmp_path / "results" / "x" / "table.md").is_file()
