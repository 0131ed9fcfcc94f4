"""Bad input stops the harness with a message, before it touches the output folder; ``--fresh``
never deletes a folder that is not a run; resumed runs keep their provenance."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks.harness import cli, config, report
from tests.benchmarks._util import run_cli

TINY = (
    "name: cli-test\nseeds: [0]\nthreads: 1\n"
    "dataset: {name: digits, protocols: {zs: {type: zero_shot,\n"
    "  train_classes: [0, 1], test_classes: [2, 3]}}}\n"
    "training: {epochs: 1, batch_size: 16, m_per_class: 8, iterations_per_epoch: 1}\n"
    "methods:\n"
    "  - {name: no_learning, no_learning: true}\n"
    "  - {name: triplet, loss: {class: TripletMarginLoss, args: {margin: 0.2}}}\n"
)


@pytest.fixture
def cfg_path(tmp_path):
    p = tmp_path / "cfg.yaml"
    p.write_text(TINY)
    return p


def _main(cfg_path, out, *extra):
    args = ["--config", str(cfg_path), "--output", str(out), "--progress", "none", "--no-plots"]
    return cli.main([*args, *extra])


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--device", "foo"], "device must be auto, cpu, cuda or cuda:N, got 'foo'"),
        (["--set", "threads=-1"], "threads must be a positive integer, got -1"),
        (["--set", "training.protocol_epochs={zs: -1}"],
         "training.protocol_epochs.zs must be a non-negative integer, got -1"),
        (["--set", "training.protocol_epochs={sc: 3}"],
         "training.protocol_epochs.sc: no protocol named 'sc'; known: ['zs']"),
        (["--set", "training=5"], "training must be a mapping, got 5"),
        (["--set", "name=2024"], "name must be a non-empty string, got 2024"),
        (["--set", "dataset.split_seed=abc"], "dataset.split_seed must be an integer, got 'abc'"),
        (["--set", "training.amp=maybe"], "training.amp must be true or false, got 'maybe'"),
        (["--set", "training.epoch=3"], "unknown config key 'training.epoch'; did you mean "
                                        "training.epochs"),
        (["--set", "training.iterations_per_epoch=abc"],
         "training.iterations_per_epoch must be a positive integer, got 'abc'"),
        (["--set", "dataset.protocols.zs=5"], "dataset.protocols.zs must be a mapping, got 5"),
        (["--methods", "tripplet"], "no method named 'tripplet'"),
        (["--set", "methods=[{name: x, loss: {class: TripletMarginLoss, args: {bogus: 1}}}]"],
         "method 'x': cannot build TripletMarginLoss"),
        (["--set", "model.name=resnet5"], "model.name must be one of"),
        (["--set", "dataset.protocols.zs.test_classes=[1, 2]"],
         "dataset.protocols.zs: train_classes and test_classes must be disjoint"),
        (["--data-root", "/data"], "unknown config key 'dataset.root'"),
        (["--set", "model.weights=/no/such/file.pth"],
         "model.weights must be an existing local file, got '/no/such/file.pth'"),
    ],
)
def test_bad_input_is_named_and_leaves_no_folder(cfg_path, tmp_path, extra, match):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=match.replace("[", r"\[").replace("(", r"\(")):
        _main(cfg_path, out, *extra)
    assert not out.exists()


def test_a_bad_thread_count_on_the_command_line_is_a_usage_error(cfg_path, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        _main(cfg_path, tmp_path / "run", "--threads", "-1")
    assert stop.value.code == 2
    assert "argument --threads: expected a positive integer, got '-1'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_missing_data_root_does_not_lock_the_output_folder(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cli.main(["--dataset", "cub", "--data-root", str(tmp_path / "nope"), "--smoke",
                  "--output", str(out), "--progress", "none", "--no-plots"])
    assert not out.exists()


def test_fresh_refuses_a_folder_that_is_not_a_run(cfg_path, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("important")
    with pytest.raises(ValueError, match="holds no benchmark run"):
        _main(cfg_path, out, "--fresh", "--methods", "no_learning")
    assert (out / "thesis.tex").read_text() == "important"


def test_a_typo_with_fresh_does_not_delete_a_finished_run(cfg_path, tmp_path):
    out = tmp_path / "run"
    assert _main(cfg_path, out, "--methods", "no_learning") == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(ValueError, match="no method named 'tripplet'"):
        _main(cfg_path, out, "--fresh", "--methods", "tripplet")
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_output_that_is_a_file_and_report_only_without_a_run(cfg_path, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        _main(cfg_path, f, "--methods", "no_learning")
    with pytest.raises(ValueError, match="holds no run"):
        cli.main(["--report-only", "--output", str(tmp_path / "nothing")])


def test_each_protocol_trains_its_own_epoch_budget(cfg_path, tmp_path):
    out = tmp_path / "run"
    assert _main(cfg_path, out, "--methods", "triplet", "--set",
                 "training.protocol_epochs={zs: 2}") == 0
    (cell,) = json.loads((out / "results.json").read_text())["results"]
    assert cell["epochs"] == 2  # the protocol's budget, not training.epochs (1)
    assert "epochs: zs 2 (others 1)" in (out / "table.md").read_text()
    again = tmp_path / "again"
    assert _main(cfg_path, again, "--methods", "triplet", "--epochs", "1", "--set",
                 "training.protocol_epochs={zs: 2}") == 0  # an explicit --set wins
    assert _main(cfg_path, tmp_path / "cli", "--methods", "triplet", "--epochs", "3") == 0
    (cell,) = json.loads((tmp_path / "cli" / "results.json").read_text())["results"]
    assert cell["epochs"] == 3
    budget = cfg_path.read_text().replace("training: {epochs: 1,",
                                          "training: {protocol_epochs: {zs: 2}, epochs: 1,")
    cfg_path.write_text(budget)
    assert _main(cfg_path, tmp_path / "set", "--methods", "triplet",
                 "--set", "training.epochs=3") == 0  # --set training.epochs: every protocol's
    (cell,) = json.loads((tmp_path / "set" / "results.json").read_text())["results"]
    assert cell["epochs"] == 3


def test_a_method_named_twice_runs_once(cfg_path, tmp_path):
    out = tmp_path / "run"
    assert _main(cfg_path, out, "--methods", "triplet", "triplet", "--seeds", "0") == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["results"]) == 1
    assert results["summary"]["zs"]["triplet"]["seeds"] == [0]


def test_smoke_defaults_yield_to_set(cfg_path):
    args = cli.parse_args(["--config", str(cfg_path), "--smoke", "--set", "seeds=[5]",
                           "--set", "training.epochs=3"])
    cfg = cli.resolve_config(args)
    assert cfg.seeds == [5] and cfg.training.epochs == 3
    assert cfg.training.iterations_per_epoch == 2  # the smoke default that was not set


def test_tilde_is_expanded_in_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "w.pth").write_bytes(b"")
    cfg = config.parse_config({"model": {"weights": "~/w.pth"},
                               "dataset": {"name": "cub", "root": "~/data"},
                               "methods": [{"name": "no_learning", "no_learning": True}]})
    assert cfg.model.weights == str(tmp_path / "w.pth")
    assert cfg.dataset.options.root == str(tmp_path / "data")


def test_sessions_record_their_cells_commit_device_and_time(cfg_path, tmp_path):
    out = tmp_path / "run"
    assert _main(cfg_path, out, "--methods", "no_learning") == 0
    assert _main(cfg_path, out) == 0  # resumed with one more method
    sessions = json.loads((out / "run.json").read_text())["sessions"]
    assert [s["cells_computed"] for s in sessions] == [
        ["zs/no_learning/seed0"], ["zs/triplet/seed0"]
    ]
    assert all(s["wall_seconds"] > 0 and s["device"] == "cpu" and "commit" in s for s in sessions)
    table = (out / "table.md").read_text()
    assert "--methods" not in table.splitlines()[2]  # the header shows the last command
    assert "mixed provenance" not in table  # same commit, same device


def test_mixed_provenance_is_flagged():
    sessions = [
        {"started_utc": "t0", "commit": "aaa", "device": "cpu", "command": "c0",
         "cells_computed": ["zs/x/seed0"]},
        {"started_utc": "t1", "commit": "bbb", "device": "cpu", "command": "c1",
         "cells_computed": ["zs/x/seed1", "zs/x/seed2"]},
        {"started_utc": "t2", "commit": "ccc", "device": "cpu", "command": "c2",
         "cells_computed": []},  # computed nothing: not a source of results
    ]
    text = report._provenance(sessions)
    assert "mixed provenance" in text
    assert "1 cell(s), commit aaa" in text and "2 cell(s), commit bbb" in text
    assert "ccc" not in text
    assert report._provenance(sessions[:1]) == ""


def test_the_above_floor_marker_compares_displayed_values():
    def row(v):
        return {"mean_average_precision_at_r": {"mean": v, "std": 0.0, "n": 1}, "seeds": [0]}

    agg = {"zs": {"no_learning": row(0.60556), "same": row(0.60570), "above": row(0.6066)}}
    table = report.markdown_table(agg, {}, {}, ["no_learning", "same", "above"], "no_learning")
    assert "| same |" in table and "| above ▲ |" in table


def test_cpu_model_is_named():
    assert report.environment("cpu")["hardware"]["cpu"] not in ("", "x86_64") or not os.path.exists(
        "/proc/cpuinfo"
    )


@pytest.mark.slow  # starts python -m benchmarks
def test_main_module_prints_errors_without_a_traceback(tmp_path):
    proc = run_cli(
        "--dataset", "digits", "--device", "foo", "--smoke", "--output", str(tmp_path / "r")
    )
    assert proc.returncode != 0
    assert "python -m benchmarks: error: device must be" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def module_missing_a_dependency(tmp_path, monkeypatch):
    """A module that exists but cannot be imported here (it needs a package not installed)."""
    (tmp_path / "needs_absent_dep.py").write_text(
        "import absent_dependency_of_the_test  # noqa\nclass GhostLoss:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "needs_absent_dep.GhostLoss"


def test_a_run_where_no_method_can_run_is_an_error(cfg_path, tmp_path, module_missing_a_dependency):
    out = tmp_path / "run"
    spec = f"methods=[{{name: ghost, loss: {{class: {module_missing_a_dependency}}}}}]"
    with pytest.raises(ValueError, match="no method can run: ghost: class "
                       "'needs_absent_dep.GhostLoss': cannot import 'needs_absent_dep'"):
        _main(cfg_path, out, "--set", spec)
    assert not out.exists()


class TestUnknownClassName:
    @pytest.mark.parametrize(
        "name, match",
        [
            ("TripletMarginLos", "class 'TripletMarginLos' is in none of .*; did you mean "
                                 "'TripletMarginLoss'"),
            ("CodingRateRegulariser", ".*; did you mean 'CodingRateRegularizer'"),
            ("pml_anticollapse.losses.MCR2Los", ".*: 'pml_anticollapse.losses' has no attribute "
                                                "'MCR2Los'; did you mean 'MCR2Loss'"),
            ("pml_anticolapse.losses.MCR2Loss", ".*: there is no module 'pml_anticolapse.losses'; "
                                                "did you mean 'pml_anticollapse.losses'"),
        ],
    )
    def test_a_misspelt_class_is_an_error_with_did_you_mean(self, cfg_path, tmp_path, name,
                                                            match):
        out = tmp_path / "run"
        spec = f"methods=[{{name: typo, loss: {{class: {name}}}}}, " \
               "{name: no_learning, no_learning: true}]"
        for extra in ([], ["--methods", "typo"]):
            with pytest.raises(ValueError, match=f"method 'typo': {match}"):
                _main(cfg_path, out, "--set", spec, *extra)
        assert not out.exists()

    @pytest.mark.slow  # starts python -m benchmarks
    def test_through_the_command_line_it_is_an_error_not_a_skip(self, tmp_path):
        proc = run_cli("--dataset", "digits", "--smoke", "--output", str(tmp_path / "r"), "--set",
                       "methods=[{name: t, loss: {class: TripletMarginLos}}]")
        assert proc.returncode == 1
        assert "did you mean 'TripletMarginLoss'" in proc.stderr
        assert "skipping" not in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "r").exists()

    def test_a_class_whose_module_cannot_be_imported_here_is_skipped(
        self, cfg_path, tmp_path, module_missing_a_dependency, capsys
    ):
        out = tmp_path / "run"
        spec = (f"methods=[{{name: ghost, loss: {{class: {module_missing_a_dependency}}}}}, "
                "{name: no_learning, no_learning: true}]")
        assert _main(cfg_path, out, "--set", spec) == 0
        assert "skipping method 'ghost'" in capsys.readouterr().err
        skipped = json.loads((out / "results.json").read_text())["metadata"]["skipped"]
        assert "absent_dependency_of_the_test" in skipped["ghost"]

    def test_list_methods_flags_the_unknown_name(self, capsys):
        argv = ["--list-methods", "--set", "methods=[{name: floor, no_learning: true}, "
                "{name: typo, loss: {class: TripletMarginLos}}]"]
        assert cli.main(argv) == 1
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == ["floor"]
        assert lines[1].startswith("typo") and "(error: method 'typo': class" in lines[1]


def test_tune_is_dispatched_to_the_tuning_step(capsys):
    with pytest.raises(SystemExit) as e:
        cli.run(["tune", "--help"])
    assert e.value.code == 0
    assert "usage: python -m benchmarks tune" in capsys.readouterr().out


def test_report_and_figures_rebuilt_from_a_finished_run_without_training(cfg_path, tmp_path,
                                                                          monkeypatch):
    out = tmp_path / "run"
    args = ["--config", str(cfg_path), "--output", str(out), "--progress", "none",
            "--set", "training.epochs=2", "--set", "evaluation.interval=1"]
    assert cli.main(args) == 0
    table = (out / "table.md").read_text()
    results = json.loads((out / "results.json").read_text())["results"]
    assert any(r.get("curve") for r in results)
    figures = ["curves_zs.png", "metrics_zs.png", "spectrum_zs.png"]
    for name in figures:
        (out / name).unlink()
    (out / "table.md").unlink()

    from benchmarks.harness import train

    def no_training(*a, **k):
        raise AssertionError("--report-only trained a cell")

    monkeypatch.setattr(train, "run_cell", no_training)
    assert cli.main(["--report-only", "--output", str(out)]) == 0
    assert (out / "table.md").read_text() == table
    for name in figures:
        assert (out / name).stat().st_size > 0, name


def test_a_resume_with_another_thread_count_is_said(cfg_path, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["--config", str(cfg_path), "--output", str(out), "--progress", "none", "--no-plots"]
    assert cli.main([*base, "--threads", "1", "--seeds", "0"]) == 0
    capsys.readouterr()
    assert cli.main([*base, "--threads", "2", "--seeds", "0", "1"]) == 0
    said = capsys.readouterr()
    text = said.out + said.err
    assert "earlier sessions of this run computed cells with 1 thread(s) on cpu" in text
    assert "this session uses 2 thread(s) per rank on cpu" in text
    results = json.loads((out / "results.json").read_text())["results"]
    assert {(r["seed"], r["run"]["threads"]) for r in results if r["method"] == "triplet"} == {
        (0, 1), (1, 2)}  # each cell records its own
