"""The harness end to end (smoke run through ``python -m benchmarks``) and its parts."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from benchmarks.harness import class_lookup, cli, config, datasets, ranks, report, train
from benchmarks.harness.datasets import digits as digits_data
from tests.benchmarks._util import retrieval_reference, run_cli, sqlite_dump


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "run"
    proc = run_cli("--dataset", "digits", "--smoke", "--output", str(out), "--progress", "none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


@pytest.mark.slow  # a smoke run of the digits grid (module fixture)
class TestSmokeRun:
    def test_every_method_of_the_default_grid_has_a_row(self, smoke_run):
        out, proc = smoke_run
        table = (out / "table.md").read_text()
        assert table in proc.stdout  # printed and saved
        cfg = config.load_config(config.DIGITS_CONFIG)
        results = json.loads((out / "results.json").read_text())
        skipped = results["metadata"]["skipped"]
        for protocol in ("zero_shot", "superclass"):
            for m in cfg.methods:
                if m.name in skipped:
                    assert f"`{m.name}`" in table
                    continue
                assert m.name in results["summary"][protocol]
        assert "| no_learning |" in table
        for label in ("P@1", "R-Prec", "MAP@R", "NMI", "eff. rank"):
            assert label in table

    def test_no_learning_row_equals_brute_force_reference(self, smoke_run):
        out, _ = smoke_run
        cell = json.loads((out / "cells" / "zero_shot" / "no_learning" / "seed0.json").read_text())
        x, y = digits_data.load_digits_arrays()
        keep = y >= 5
        p1, map_r = retrieval_reference(x[keep], y[keep])
        assert cell["metrics"]["precision_at_1"] == pytest.approx(p1, abs=1e-6)
        assert cell["metrics"]["mean_average_precision_at_r"] == pytest.approx(map_r, abs=1e-6)
        # raw pixels on the unseen digits 5-9 (no_learning row of benchmarks/results/digits-default)
        assert map_r == pytest.approx(0.606, abs=5e-4)

    def test_results_json_metadata(self, smoke_run):
        out, _ = smoke_run
        results = json.loads((out / "results.json").read_text())
        meta = results["metadata"]
        for key in ("commit", "versions", "device", "seeds", "config", "hardware"):
            assert key in meta
        assert meta["seeds"] == [0]
        assert meta["versions"]["pytorch_metric_learning"]
        assert meta["config"]["training"]["iterations_per_epoch"] == 2
        assert meta["missing_cells"] == []
        n_methods = len(config.load_config(config.DIGITS_CONFIG).methods) - len(meta["skipped"])
        assert len(results["results"]) == 2 * n_methods

    def test_plots_are_png(self, smoke_run):
        out, _ = smoke_run
        for protocol in ("zero_shot", "superclass"):
            for kind in ("spectrum", "metrics"):
                assert (out / f"{kind}_{protocol}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def test_records_csv_and_sqlite(self, smoke_run):
        out, _ = smoke_run
        rec = out / "records" / "zero_shot" / "triplet" / "seed0"
        tables = sqlite_dump(str(rec / "logs.db"))
        assert "loss_histories" in tables
        acc = [t for t in tables if t.startswith("accuracies")]
        assert acc, sorted(tables)
        assert (rec / "loss_histories.csv").exists()
        assert not (out / "work").exists()  # finished cells leave no working folder

    def test_report_rebuilds_from_the_run_folder(self, smoke_run):
        out, _ = smoke_run
        before = (out / "table.md").read_text()
        (out / "table.md").unlink()
        proc = run_cli("--report-only", "--output", str(out), "--no-plots")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert (out / "table.md").read_text() == before

    def test_rerun_with_same_command_does_no_work(self, smoke_run):
        out, _ = smoke_run
        cells = sorted((out / "cells").rglob("*.json"))
        before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in cells}
        proc = run_cli(
            "--dataset", "digits", "--smoke", "--output", str(out), "--progress", "none",
            "--no-plots",
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        # no cell recomputed: the session computed none, and every cell file is untouched
        sessions = json.loads((out / "run.json").read_text())["sessions"]
        assert len(sessions) >= 2 and sessions[-1]["cells_computed"] == []
        assert sorted((out / "cells").rglob("*.json")) == cells
        assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in cells} == before

    def test_other_config_in_same_folder_is_refused(self, smoke_run):
        out, _ = smoke_run
        proc = run_cli(
            "--dataset", "digits", "--smoke", "--epochs", "2", "--output", str(out),
            "--progress", "none",
        )
        assert proc.returncode != 0
        assert "another configuration" in proc.stderr


def _default_with(key: str, value) -> dict:
    raw = config.read_config(config.DIGITS_CONFIG)
    config.set_dotted(raw, key, value)
    return raw


class TestConfig:
    def test_default_config_loads(self):
        cfg = config.load_config(config.DIGITS_CONFIG)
        assert cfg.dataset.name == "digits"
        assert set(cfg.dataset.protocols) == {"zero_shot", "superclass"}
        assert cfg.methods[0].name == "no_learning" and cfg.methods[0].no_learning

    @pytest.mark.parametrize(
        "key, value, match",
        [
            ("seeds", [0, 0], "seeds must not repeat"),
            ("seeds", [], "seeds must be a non-empty list"),
            (
                "training.batch_size",
                50,
                "training.batch_size must be a multiple of training.m_per_class",
            ),
            ("training.epochs", -1, "training.epochs must be a non-negative integer, got -1"),
            ("training.batch_size", 0, "training.batch_size must be a positive integer, got 0"),
            ("dataset.name", "mnist", "dataset.name must be one of"),
            (
                "dataset.protocols.zero_shot.type",
                "fewshot",
                r"dataset.protocols.zero_shot.type must be one of \['superclass', 'zero_shot'\]",
            ),
            ("model.name", "resnet5", r"model.name must be one of \['digits_mlp'"),
            ("dataset.protocols.zero_shot.test_classes", [1, 5],
             r"dataset.protocols.zero_shot: train_classes and test_classes must be disjoint"),
            ("dataset.protocols.superclass.bogus", 1,
             "unknown config key 'dataset.protocols.superclass.bogus'"),
            ("dataset.image_size", 32, "unknown config key 'dataset.image_size'"),
            ("methods", [{"name": "x"}], "method 'x' must give a 'loss'"),
            ("evaluation.metrics", ["precision_at_2", "mean_average_precision_at_r"],
             r"evaluation.metrics must be names among \[.*\], got \['precision_at_2'\]"),
            ("evaluation.metrics", ["NMI"],
             "evaluation.metrics must include mean_average_precision_at_r"),
        ],
    )
    def test_invalid_values_are_named(self, key, value, match):
        with pytest.raises(ValueError, match=match):
            config.parse_config(_default_with(key, value))

    def test_defaults_are_filled_from_the_schema(self):
        cfg = config.parse_config({"methods": [{"name": "n", "no_learning": True}]})
        assert cfg.training.batch_size == 64 and cfg.model.name == "digits_mlp"
        assert cfg.evaluation.metrics[0] == "precision_at_1"
        assert set(cfg.dataset.protocols) == {"zero_shot"}
        zs = cfg.dataset.protocols["zero_shot"]
        assert (zs.train_classes, zs.test_classes) == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])

    def test_dict_round_trip(self):
        cfg = config.load_config(config.DIGITS_CONFIG)
        again = config.parse_config(cfg.to_dict())
        assert again.to_dict() == cfg.to_dict()

    def test_help_config_lists_every_key(self, capsys):
        assert cli.main(["--help-config"]) == 0
        text = capsys.readouterr().out
        for key in ("training.lr_trunk", "evaluation.metrics", "model.weights",
                    "dataset.split_seed", "dataset.protocols.<name>.groups", "methods[].miner"):
            assert key in text, key
        for name in ("digits_residual_mlp", "resnet50", "dataset.name: cub"):
            assert name in text

    def test_cli_overrides(self):
        args = cli.parse_args(
            [
                "--seeds",
                "3",
                "4",
                "--epochs",
                "2",
                "--set",
                "training.lr_trunk=0.5",
                "--device",
                "cpu",
            ]
        )
        cfg = cli.resolve_config(args)
        assert cfg.seeds == [3, 4]
        assert cfg.training.epochs == 2
        assert cfg.training.lr_trunk == 0.5
        assert cfg.device == "cpu"

    def test_smoke_overrides(self):
        cfg = cli.resolve_config(cli.parse_args(["--smoke"]))
        assert cfg.seeds == [0] and cfg.training.epochs == 1
        assert cfg.training.iterations_per_epoch == 2
        assert cfg.name.endswith("-smoke")

    def test_list_methods_names_every_method_and_why_one_is_skipped(self, capsys):
        argv = ["--list-methods", "--set",
                "methods=[{name: floor, no_learning: true, description: raw}, "
                "{name: ghost, loss: {class: GhostLoss}}]"]
        assert cli.main(argv) == 1  # a class name that exists nowhere is an error, not a skip
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == ["floor", "raw"]
        assert lines[1].startswith("ghost")
        assert "(error: method 'ghost': class 'GhostLoss' is in none" in lines[1]

    def test_set_needs_key_value(self):
        with pytest.raises(ValueError, match="--set must be KEY=VALUE"):
            cli.resolve_config(cli.parse_args(["--set", "training.epochs"]))

    def test_identity_ignores_selection_keys_and_holds_provenance(self):
        a = config.load_config(config.DIGITS_CONFIG)
        raw = config.read_config(config.DIGITS_CONFIG)
        b = config.parse_config({**raw, "seeds": [7], "device": "cuda"})
        assert config.identity(a) == config.identity(b)
        c = config.parse_config(_default_with("training.epochs", 99))
        assert config.identity(a) != config.identity(c)
        assert config.identity(a, {"zs": {"fonts": "x"}}) != config.identity(a)


class TestRegistry:
    def test_bare_names_resolve_in_either_package(self):
        from pytorch_metric_learning import losses

        import pml_anticollapse.losses as plugin_losses

        assert class_lookup.resolve("MCR2Loss") is plugin_losses.MCR2Loss
        assert class_lookup.resolve("ContrastiveLoss") is losses.ContrastiveLoss
        assert (
            class_lookup.resolve("pytorch_metric_learning.miners.MultiSimilarityMiner").__name__
            == "MultiSimilarityMiner"
        )

    def test_a_bare_name_of_both_packages_is_an_error_naming_both(self):
        from pytorch_metric_learning import losses

        import pml_anticollapse.losses as plugin_losses

        with pytest.raises(ValueError, match=r"class 'RankedListLoss' is ambiguous: it names "
                           r"pml_anticollapse\.losses\.RankedListLoss and "
                           r"pytorch_metric_learning\.losses\.RankedListLoss"):
            class_lookup.resolve("RankedListLoss")
        assert class_lookup.resolve("pml_anticollapse.losses.RankedListLoss") is (
            plugin_losses.RankedListLoss
        )
        assert class_lookup.resolve("pytorch_metric_learning.losses.RankedListLoss") is (
            losses.RankedListLoss
        )

    def test_the_ambiguity_stops_the_cli_before_the_folder(self, tmp_path):
        out = tmp_path / "run"
        with pytest.raises(ValueError, match="'RankedListLoss' is ambiguous"):
            cli.main(["--dataset", "digits", "--smoke", "--output", str(out), "--progress", "none",
                      "--set",
                      "methods=[{name: rll, loss: {class: RankedListLoss}}]"])
        assert not out.exists()

    def test_missing_class(self):
        with pytest.raises(class_lookup.MissingClassError, match="NoSuchLoss"):
            class_lookup.resolve("NoSuchLoss")
        with pytest.raises(class_lookup.MissingClassError, match="no attribute 'Nope'"):
            class_lookup.resolve("pml_anticollapse.miners.Nope")
        method = config.MethodSpec(
            name="x",
            loss={"class": "TripletMarginLoss"},
            miner={"class": "pml_anticollapse.miners.Nope"},
        )
        with pytest.raises(ValueError, match="method 'x': .*has no attribute 'Nope'"):
            class_lookup.check_available(method)  # exists nowhere: an error, never a skip
        ok = config.MethodSpec(name="y", loss={"class": "TripletMarginLoss"})
        assert class_lookup.check_available(ok) is None

    def test_nested_build_fills_context(self):
        spec = {
            "class": "AntiCollapseLoss",
            "args": {
                "loss": {"class": "ProxyAnchorLoss", "args": {"margin": 0.2}},
                "target": "proxies",
            },
        }
        loss = class_lookup.build(spec, {"num_classes": 7, "embedding_size": 16})
        assert loss.loss.proxies.shape == (7, 16)
        assert loss.loss.margin == 0.2
        reg = class_lookup.build(
            {
                "class": "TripletMarginLoss",
                "args": {
                    "embedding_regularizer": {
                        "class": "CodingRateRegularizer",
                        "args": {"eps_sq": 0.25},
                    },
                    "embedding_reg_weight": 0.5,
                },
            }
        )
        assert reg.embedding_regularizer.eps_sq == 0.25
        assert reg.embedding_reg_weight == 0.5

    def test_bad_spec(self):
        with pytest.raises(ValueError, match="unknown keys"):
            class_lookup.build({"class": "TripletMarginLoss", "kwargs": {}})
        with pytest.raises(TypeError, match="cannot build TripletMarginLoss"):
            class_lookup.build({"class": "TripletMarginLoss", "args": {"no_such_arg": 1}})

    def test_missing_class_method_is_skipped_not_fatal(self, tmp_path, monkeypatch):
        # a class whose module exists but cannot be imported here (a dependency is missing)
        (tmp_path / "needs_absent_dep.py").write_text(
            "import absent_dependency_of_the_test  # noqa\nclass GhostLoss:\n    pass\n"
        )
        monkeypatch.syspath_prepend(str(tmp_path))
        cfg_path = tmp_path / "cfg.yaml"
        cfg_path.write_text(
            "name: skip-test\nseeds: [0]\nthreads: 1\n"
            "dataset: {name: digits, protocols: {zs: {type: zero_shot,\n"
            "  train_classes: [0, 1], test_classes: [2, 3]}}}\n"
            "methods:\n"
            "  - {name: no_learning, no_learning: true}\n"
            "  - {name: ghost, loss: {class: needs_absent_dep.GhostLoss}}\n"
        )
        out = tmp_path / "run"
        assert (
            cli.main(
                [
                    "--config",
                    str(cfg_path),
                    "--output",
                    str(out),
                    "--progress",
                    "none",
                    "--no-plots",
                ]
            )
            == 0
        )
        table = (out / "table.md").read_text()
        assert "`ghost`: class 'needs_absent_dep.GhostLoss': cannot import" in table
        assert "| no_learning |" in table


def _protocol(spec: dict, **dataset_options):
    section = datasets.parse_section(
        {"name": "digits", **dataset_options, "protocols": {"p": spec}}
    )
    return datasets.build(section)["p"]


class TestDigitsProtocols:
    def test_zero_shot_is_class_disjoint(self):
        p = _protocol({"type": "zero_shot", "train_classes": [0, 1, 2], "test_classes": [7, 9]})
        _, y = digits_data.load_digits_arrays()
        assert len(p.train) == int(np.isin(y, [0, 1, 2]).sum())
        assert sorted(p.train.labels.unique().tolist()) == [0, 1, 2]
        assert sorted(p.query.labels.unique().tolist()) == [7, 9]
        assert p.reference is None
        assert p.num_train_classes == 3

    def test_superclass_labels_and_split(self):
        groups = [[0, 6, 8, 9], [1, 4, 7], [2, 3, 5]]
        p = _protocol({"type": "superclass", "groups": groups, "test_fraction": 0.25})
        x, y = digits_data.load_digits_arrays()
        coarse = {c: g for g, m in enumerate(groups) for c in m}
        # each held-out image keeps its fine digit; each training image its coarse group
        assert sorted(p.query.labels.unique().tolist()) == list(range(10))
        assert sorted(p.train.labels.unique().tolist()) == [0, 1, 2]
        for c in range(10):
            n = int((y == c).sum())
            assert int((p.query.labels == c).sum()) == round(0.25 * n)
        # the training images of digit c carry label coarse[c]: match rows back to the data
        rows = {tuple(r): int(t) for r, t in zip(x, y, strict=True)}
        for xi, li in zip(p.train.x[:200], p.train.labels[:200], strict=True):
            assert coarse[rows[tuple(xi.numpy())]] == int(li)
        assert len(p.train) + len(p.query) == len(y)

    @pytest.mark.parametrize(
        "spec, match",
        [
            (
                {"type": "zero_shot", "train_classes": [0, 1], "test_classes": [1, 2]},
                "dataset.protocols.p: train_classes and test_classes must be disjoint",
            ),
            (
                {"type": "zero_shot", "train_classes": [0, 11], "test_classes": [2]},
                "dataset.protocols.p.train_classes must be a non-empty list of digits 0-9",
            ),
            ({"type": "superclass", "groups": [[0, 1], [1, 2]]},
             "dataset.protocols.p.groups: digit 1 is in two groups"),
            (
                {"type": "superclass", "groups": [[0, 1], [2]], "test_fraction": 1.5},
                r"dataset.protocols.p.test_fraction must be in \(0, 1\), got 1.5",
            ),
            ({"type": "superclass", "groups": [[0, 1], [2]], "test_fraction": "half"},
             "dataset.protocols.p.test_fraction must be a number, got 'half'"),
        ],
    )
    def test_bad_protocols(self, spec, match):
        with pytest.raises(ValueError, match=match):
            _protocol(spec)


@dataclasses.dataclass
class ToyHalves(datasets.ProtocolBase):
    """Test-only protocol: query = even-indexed images of the test digits, reference = the
    odd-indexed ones (distinct sets); train on the other digits."""

    test_classes: list = dataclasses.field(default_factory=lambda: [5, 6, 7, 8, 9])

    def build(self, dataset, name):
        x, y = digits_data.load_digits_arrays()
        tr = ~np.isin(y, self.test_classes)
        idx = np.flatnonzero(~tr)
        q, r = idx[0::2], idx[1::2]

        def pairs(i):
            return datasets.TensorPairs(torch.from_numpy(x[i]), torch.from_numpy(y[i]))

        return datasets.ProtocolData(
            name, pairs(np.flatnonzero(tr)), pairs(q), 10 - len(self.test_classes), "vector",
            "toy: even images query the odd ones", reference=pairs(r),
            provenance={"toy": "halves-v1"},
        )


@pytest.fixture
def toy_protocol():
    """``ToyHalves`` registered as digits protocol type "toy_halves" for one test."""
    datasets.register_protocol("digits", "toy_halves")(ToyHalves)
    yield
    datasets._PROTOCOLS["digits"].pop("toy_halves")


@pytest.mark.usefixtures("toy_protocol")
class TestProtocolRegistry:
    """A protocol added through the registry alone (the class above + one config entry), with
    distinct query and reference sets, against a brute-force float64 kNN."""

    def test_toy_protocol_runs_and_matches_brute_force(self, tmp_path):
        cfg_path = tmp_path / "cfg.yaml"
        cfg_path.write_text(
            "name: toy\nseeds: [0]\nthreads: 1\n"
            "dataset: {name: digits, protocols: {halves: {type: toy_halves}}}\n"
            "methods:\n  - {name: raw, no_learning: true}\n"
        )
        out = tmp_path / "run"
        assert cli.main(["--config", str(cfg_path), "--output", str(out), "--progress", "none",
                         "--no-plots"]) == 0
        cell = json.loads((out / "cells" / "halves" / "raw" / "seed0.json").read_text())
        x, y = digits_data.load_digits_arrays()
        idx = np.flatnonzero(np.isin(y, [5, 6, 7, 8, 9]))
        q, r = idx[0::2], idx[1::2]
        p1, map_r = retrieval_reference(x[q], y[q], x[r], y[r])
        assert cell["metrics"]["precision_at_1"] == pytest.approx(p1, abs=1e-6)
        assert cell["metrics"]["mean_average_precision_at_r"] == pytest.approx(map_r, abs=1e-6)
        # not what leave-one-out on the query set alone gives: the reference set was used
        _, loo = retrieval_reference(x[q], y[q])
        assert abs(loo - map_r) > 1e-3
        assert cell["num_test"] == len(q) and cell["num_reference"] == len(r)
        assert cell["provenance"] == {"toy": "halves-v1"}
        results = json.loads((out / "results.json").read_text())
        assert results["metadata"]["provenance"] == {"halves": {"toy": "halves-v1"}}
        ident = json.loads((out / "config_identity.json").read_text())
        assert ident["provenance"] == {"halves": {"toy": "halves-v1"}}
        # the floor row is found by its flag, whatever its name
        assert "| raw |" in (out / "table.md").read_text()
        assert "above the `raw` row" in (out / "table.md").read_text()

    def test_an_unknown_option_of_the_toy_protocol_is_named(self):
        with pytest.raises(ValueError, match="unknown config key 'dataset.protocols.h.bogus'"):
            datasets.parse_section(
                {"name": "digits", "protocols": {"h": {"type": "toy_halves", "bogus": 1}}}
            )


class TestSamplerAndReport:
    @pytest.mark.parametrize(
        "m, bs, c, expected", [(12, 60, 5, 12), (12, 60, 2, 30), (12, 60, 3, 20), (8, 64, 3, 32)]
    )
    def test_effective_m_per_class(self, m, bs, c, expected):
        got = train.effective_m_per_class(m, bs, c)
        assert got == expected
        assert bs % got == 0 and got * c >= bs

    def test_aggregate_mean_and_sample_std(self):
        rng = np.random.default_rng(0)
        vals = rng.random(4)
        cells = [
            {"protocol": "p", "method": "m", "seed": i, "metrics": {"precision_at_1": float(v)}}
            for i, v in enumerate(vals)
        ]
        agg = report.aggregate(cells)["p"]["m"]
        assert agg["precision_at_1"]["mean"] == pytest.approx(vals.mean())
        assert agg["precision_at_1"]["std"] == pytest.approx(np.std(vals, ddof=1))
        assert agg["seeds"] == [0, 1, 2, 3]

    def test_atomic_write_leaves_no_temp(self, tmp_path):
        from benchmarks import _shared as _io

        p = tmp_path / "a.json"
        _io.atomic_write_json(str(p), {"x": 1})
        _io.atomic_write_json(str(p), {"x": 2})
        assert json.loads(p.read_text()) == {"x": 2}
        assert os.listdir(tmp_path) == ["a.json"]

    @pytest.mark.parametrize("cuda", [False, True])
    def test_device_pick(self, cuda, monkeypatch):
        # both branches on every host: CUDA's presence is what pick_device asks torch
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 2 if cuda else 0)
        assert ranks.pick_device("cpu", ranks.Ranks()) == torch.device("cpu")
        auto = torch.device("cuda", 0) if cuda else torch.device("cpu")
        assert ranks.pick_device("auto", ranks.Ranks()) == auto
        if cuda:
            assert ranks.pick_device("cuda:1", ranks.Ranks()) == torch.device("cuda", 1)
            # under torchrun each rank takes its local GPU; more ranks than GPUs is an error
            second = ranks.Ranks(rank=1, local_rank=1, world_size=2, local_world_size=2)
            assert ranks.pick_device("cuda", second) == torch.device("cuda", 1)
            third = ranks.Ranks(rank=2, local_rank=2, world_size=3, local_world_size=3)
            with pytest.raises(ValueError, match="3 ranks on this machine but 2 CUDA device"):
                ranks.pick_device("auto", third)
        else:
            with pytest.raises(ValueError, match="device 'cuda' asked for, but CUDA is not"):
                ranks.pick_device("cuda", ranks.Ranks())
        with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N"):
            ranks.pick_device("gpu0", ranks.Ranks())

    def test_the_floor_row_is_found_by_its_flag(self):
        def row(v):
            return {"mean_average_precision_at_r": {"mean": v, "std": 0.0, "n": 1}, "seeds": [0]}

        agg = {"zs": {"pixels": row(0.5), "a": row(0.6), "b": row(0.4)}}
        info = {"config": {"methods": [{"name": "a"}, {"name": "pixels", "no_learning": True}]}}
        floor = report.floor_method(info)
        assert floor == "pixels"
        table = report.markdown_table(agg, {}, {}, ["pixels", "a", "b"], floor)
        assert "| a ▲ |" in table and "| b |" in table and "| pixels |" in table
        assert "above the `pixels` row" in table
        no_floor = report.markdown_table(agg, {}, {}, ["pixels", "a", "b"], None)
        assert "▲" not in no_floor


class TestNumbers:
    def test_exponent_without_dot_is_a_float(self):
        cfg = cli.resolve_config(cli.parse_args(["--set", "training.lr_trunk=3e-4"]))
        assert cfg.training.lr_trunk == pytest.approx(3e-4)
        cfg = config.parse_config(_default_with("training.lr_loss", "1e-2"))
        assert cfg.training.lr_loss == pytest.approx(1e-2)

    def test_bad_learning_rate(self):
        with pytest.raises(ValueError, match="training.lr_trunk must be a non-negative number"):
            config.parse_config(_default_with("training.lr_trunk", "fast"))
        with pytest.raises(ValueError, match="training.lr_trunk must be a non-negative number"):
            config.parse_config(_default_with("training.lr_trunk", -1.0))


class TestShiftAugmentation:
    def test_shift_matches_numpy_roll_with_zero_fill(self):
        x, y = digits_data.load_digits_arrays()
        ds = digits_data.ShiftedDigits(
            torch.from_numpy(x[:50]), torch.from_numpy(y[:50]), max_shift=2
        )
        seen = set()
        torch.manual_seed(0)
        for i in range(50):
            gen_state = torch.get_rng_state()
            out, label = ds[i]
            torch.set_rng_state(gen_state)
            dy, dx = torch.randint(-2, 3, (2,)).tolist()
            ds[i]  # keep the generator in step with the draw above
            img = x[i].reshape(8, 8)
            ref = np.roll(np.roll(img, dy, axis=0), dx, axis=1)
            if dy > 0:
                ref[:dy] = 0
            elif dy < 0:
                ref[dy:] = 0
            if dx > 0:
                ref[:, :dx] = 0
            elif dx < 0:
                ref[:, dx:] = 0
            np.testing.assert_array_equal(out.numpy().reshape(8, 8), ref)
            assert int(label) == int(y[i])
            seen.add((dy, dx))
        assert len(seen) > 5

    def test_bad_shift(self):
        x, y = digits_data.load_digits_arrays()
        with pytest.raises(ValueError, match="dataset.augment_shift must be an integer"):
            digits_data.ShiftedDigits(torch.from_numpy(x[:5]), torch.from_numpy(y[:5]), max_shift=8)


class TestConfigReference:
    """The config schema's reference is generated into the docs (docs/benchmark/configs.md) when
    the site is built, from the same text as ``--help-config``; the README no longer holds it."""

    def test_the_docs_page_asks_for_the_generated_schema(self):
        from tests.benchmarks._util import REPO

        with open(os.path.join(REPO, "docs", "benchmark", "configs.md"), encoding="utf-8") as f:
            assert "<!-- generated: config-schema -->" in f.read()

    def test_the_generated_reference_is_the_help_text(self):
        from scripts import docs_pages

        text = docs_pages.expand("<!-- generated: config-schema -->", "benchmark/configs.md")
        assert text == config.schema_markdown()
        assert config.help_text() in text and text.startswith("```text\n")
        for key in ("training.lr_trunk", "methods[].baseline", "evaluation.interval"):
            assert key in text

    def test_the_readme_holds_no_config_reference(self):
        from tests.benchmarks._util import REPO

        with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
            text = f.read()
        assert "config-schema" not in text and "Config keys (YAML" not in text
