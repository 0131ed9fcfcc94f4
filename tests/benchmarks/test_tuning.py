"""The tuning core (benchmarks/harness/search_space.py): search spaces, class folds, resumable
search."""

from __future__ import annotations

import math
import re

import pytest
import torch

from benchmarks.harness import search_space as tuning


def _sqlite(folder, name: str):
    """An Optuna storage in ``folder/<name>.sqlite3``."""
    return tuning.open_storage(f"sqlite:///{folder / name}.sqlite3")


CONFIG_KEYS = {"training.lr_trunk", "training.epochs", "model.embedding_size"}


def _method(search, **extra):
    m = {
        "name": "triplet+coding_rate",
        "loss": {
            "class": "TripletMarginLoss",
            "args": {"margin": 0.2, "embedding_reg_weight": 0.1},
        },
    }
    m.update(extra)
    m["search"] = search
    return m


class TestSearchSpace:
    def test_parses_every_distribution(self):
        space = tuning.parse_space(
            _method(
                {
                    "training.lr_trunk": {"loguniform": [1e-4, 3e-3]},
                    "loss.args.margin": {"uniform": [0.05, 0.5]},
                    "training.epochs": {"int": [2, 8]},
                    "loss.args.embedding_reg_weight": {"categorical": [0.01, 0.1, 1.0]},
                }
            ),
            CONFIG_KEYS.__contains__,
        )
        assert [p.kind for p in space] == ["loguniform", "uniform", "int", "categorical"]
        assert space[0].low == 1e-4 and space[0].high == 3e-3
        assert space[3].choices == (0.01, 0.1, 1.0)

    @pytest.mark.parametrize(
        "search, message",
        [
            ({"training.lr_trunc": {"loguniform": [1e-4, 1e-3]}}, "unknown key 'training.lr_tr"),
            ({"loss.args.margn": {"uniform": [0.1, 0.2]}}, "unknown key: the method has no"),
            ({"training.lr_trunk": {"loguniform": [1e-2, 1e-3]}}, "lower 0.01 > upper 0.001"),
            ({"training.lr_trunk": {"lognormal": [1e-4, 1e-3]}}, "unknown distribution 'lognor"),
            ({"training.lr_trunk": {"loguniform": [0.0, 1e-3]}}, "loguniform needs lower > 0"),
            ({"training.lr_trunk": {"uniform": [0.1]}}, "uniform needs [lower, upper] numbers"),
            ({"training.epochs": {"int": [1.5, 3]}}, "int needs integer bounds"),
            ({"training.lr_trunk": {"categorical": []}}, "categorical needs a non-empty list"),
            ({"training.lr_trunk": 0.001}, "must be one distribution"),
            (["training.lr_trunk"], "must be a mapping"),
        ],
    )
    def test_bad_space_is_a_clear_error(self, search, message):
        with pytest.raises(tuning.SearchSpaceError, match="method 'triplet\\+coding_rate'") as e:
            tuning.parse_space(_method(search), CONFIG_KEYS.__contains__)
        assert message in str(e.value)

    def test_apply_params_changes_copies_only(self):
        cfg = {"training": {"lr_trunk": 1e-3}}
        method = _method({})
        new_cfg, new_method = tuning.apply_params(
            cfg, method, {"training.lr_trunk": 5e-4, "loss.args.margin": 0.3}
        )
        assert new_cfg["training"]["lr_trunk"] == 5e-4
        assert new_method["loss"]["args"]["margin"] == 0.3
        assert cfg["training"]["lr_trunk"] == 1e-3 and method["loss"]["args"]["margin"] == 0.2


class TestClassFolds:
    def test_folds_are_class_disjoint_and_inside_the_training_classes(self):
        train_labels = [c for c in (3, 5, 7, 11, 13, 17, 19, 23, 29) for _ in range(4)]
        folds = tuning.class_folds(train_labels, 4, seed=0)
        assert len(folds) == 4
        seen = []
        for fit, val in folds:
            assert not set(fit) & set(val)
            assert set(fit) | set(val) == set(train_labels)
            assert len(val) >= 2
            seen += val
        assert sorted(seen) == sorted(set(train_labels))  # each class validated exactly once

    def test_seeded(self):
        labels = list(range(12))
        assert tuning.class_folds(labels, 3, 1) == tuning.class_folds(labels, 3, 1)
        assert tuning.class_folds(labels, 3, 1) != tuning.class_folds(labels, 3, 2)

    def test_few_classes_give_distinct_validation_pairs(self):
        folds = tuning.class_folds([0, 1, 2, 3, 4] * 3, 4, seed=0)  # digits 0-4
        assert len({tuple(v) for _, v in folds}) == 4
        for fit, val in folds:
            assert len(val) == 2 and len(fit) == 3 and not set(fit) & set(val)
            assert set(fit) | set(val) == {0, 1, 2, 3, 4}

    @pytest.mark.parametrize(
        "n, k, message",
        [(6, 1, ">= 2"), (6, True, ">= 2"), (3, 2, "at least 4"), (4, 7, "7 distinct")],
    )
    def test_bad_fold_count(self, n, k, message):
        with pytest.raises(ValueError, match=message):
            tuning.class_folds(list(range(n)), k, 0)


def _objective(calls):
    def f(number, params):
        calls.append((number, params))
        x = math.log10(params["training.lr_trunk"])
        return -((x + 3.0) ** 2) - (params["loss.args.margin"] - 0.3) ** 2

    return f


SPACE = [
    tuning.Param("training.lr_trunk", "loguniform", 1e-5, 1e-1),
    tuning.Param("loss.args.margin", "uniform", 0.0, 1.0),
]


class TestResumableSearch:
    def _trials(self, study):
        return [(t.params, t.value) for t in tuning.completed_trials(study)]

    def test_killed_search_resumes_with_the_same_trials(self, tmp_path):
        ref_calls = []
        ref = tuning.run_search(
            _sqlite(tmp_path, "ref"), "m", SPACE, 14, 0,
            _objective(ref_calls),
        )
        # the same search, killed inside trial 11 (after TPE's 10 random start-up trials)
        storage = _sqlite(tmp_path, "killed")
        calls = []
        inner = _objective(calls)

        def dies_at_11(number, params):
            if number == 11:
                raise KeyboardInterrupt
            return inner(number, params)

        with pytest.raises(KeyboardInterrupt):
            tuning.run_search(storage, "m", SPACE, 14, 0, dies_at_11)
        resumed = tuning.run_search(
            _sqlite(tmp_path, "killed"), "m", SPACE, 14, 0, inner
        )
        assert self._trials(resumed) == self._trials(ref)
        assert [n for n, _ in calls] == list(range(14))  # no trial lost, none repeated
        assert len({tuple(p.items()) for p, _ in self._trials(ref)}) == 14

    def test_a_trial_killed_inside_ask_is_asked_again(self, tmp_path):
        """A process killed inside ``study.ask`` leaves a RUNNING trial without (all) its
        parameters: it is failed and the same trial asked again, not trained at defaults."""
        import optuna

        ref = tuning.run_search(
            _sqlite(tmp_path, "ref"), "m", SPACE, 12, 0, _objective([])
        )
        storage = _sqlite(tmp_path, "k")
        calls = []
        tuning.run_search(storage, "m", SPACE, 11, 0, _objective(calls))  # 11 trials done
        study = optuna.load_study(study_name="m", storage=storage)
        half = study.ask()  # a 12th trial, RUNNING with one of its two parameters stored
        half.suggest_float("training.lr_trunk", 1e-5, 1e-1, log=True)
        resumed = tuning.run_search(storage, "m", SPACE, 12, 0, _objective(calls))
        done = tuning.completed_trials(resumed)
        assert [(t.params, t.value) for t in done] == [
            (t.params, t.value) for t in tuning.completed_trials(ref)
        ]
        assert [n for n, _ in calls] == list(range(12))
        assert all(len(p) == 2 for _, p in calls)  # never trained with missing settings

    def test_other_seed_other_trials(self, tmp_path):
        a = tuning.run_search(
            _sqlite(tmp_path, "a"), "m", SPACE, 3, 0, _objective([])
        )
        b = tuning.run_search(
            _sqlite(tmp_path, "b"), "m", SPACE, 3, 1, _objective([])
        )
        assert [t.params for t in a.get_trials()] != [t.params for t in b.get_trials()]

    def test_tpe_beats_its_start_up_phase(self, tmp_path):
        """After the random start-up trials TPE concentrates near the optimum (lr 1e-3, margin
        0.3): the best of 30 trials is closer than the best of the first 10."""
        study = tuning.run_search(
            _sqlite(tmp_path, "s"), "m", SPACE, 30, 0, _objective([])
        )
        values = [t.value for t in study.get_trials()]
        assert max(values) > max(values[:10])


def test_best_so_far_is_a_running_maximum():
    assert tuning.best_so_far([0.1, float("nan"), 0.05, 0.3, 0.2]) == [0.1, 0.1, 0.1, 0.3, 0.3]
    out = tuning.best_so_far([float("nan"), 0.2])
    assert math.isnan(out[0]) and out[1] == 0.2


class TestFoldData:
    def test_folds_hold_training_images_only_with_remapped_labels(self):
        from benchmarks.harness import config, datasets
        from benchmarks.harness import search as tune

        cfg = config.load_config(config.DIGITS_CONFIG)
        data = datasets.build(cfg.dataset)["zero_shot"]  # train digits 0-4, test 5-9
        train_x = data.train.x
        for fold in tune.fold_protocols(data, 4, seed=0):
            fit, val = fold.provenance["fold"]["fit"], fold.provenance["fold"]["validate"]
            assert set(fit) | set(val) <= {0, 1, 2, 3, 4} and not set(fit) & set(val)
            # every fold image is a training image (none of digits 5-9), by content
            for ds in (fold.train, fold.query):
                idx = ds.indices
                assert torch.equal(torch.stack([ds[i][0] for i in range(len(ds))]), train_x[idx])
            assert sorted(set(fold.train.labels.tolist())) == list(range(len(fit)))
            assert set(fold.query.labels.tolist()) == set(val)
            assert fold.num_train_classes == len(fit) and fold.reference is None


@pytest.mark.slow  # runs python -m benchmarks tune
class TestTuneCommandLine:
    def _cfg(self, tmp_path, search):
        import yaml

        p = tmp_path / "cfg.yaml"
        p.write_text(yaml.safe_dump({
            "name": "t",
            "seeds": [0],
            "training": {"epochs": 1, "iterations_per_epoch": 2, "batch_size": 20,
                         "m_per_class": 4},
            "methods": [
                {"name": "floor", "no_learning": True},
                {"name": "triplet", "loss": {"class": "TripletMarginLoss",
                                             "args": {"margin": 0.2}},
                 "search": search},
            ],
        }))
        return p

    @pytest.mark.parametrize(
        "search, message",
        [
            ({"training.lr_trunc": {"loguniform": [1e-4, 1e-3]}}, "unknown key"),
            ({"dataset.split_seed": {"int": [0, 3]}}, "unknown key 'dataset.split_seed'"),
            ({"loss.args.margin": {"uniform": [0.5, 0.1]}}, "lower 0.5 > upper 0.1"),
            ({"loss.args.margin": {"beta": [0.1, 0.5]}}, "unknown distribution 'beta'"),
            ({"training.m_per_class": {"int": [4, 7]}}, "search.training.m_per_class=7"),
        ],
    )
    def test_a_bad_space_is_an_error_before_anything_runs(self, tmp_path, search, message):
        from benchmarks.harness import cli

        out = tmp_path / "run"
        with pytest.raises(ValueError, match=re.escape(message)):
            cli.tune_main(["--config", str(self._cfg(tmp_path, search)), "--output", str(out),
                       "--trials", "2", "--folds", "2", "--progress", "none"])
        assert not out.exists()

    def test_smoke_search_through_the_cli(self, tmp_path):
        import json

        from tests.benchmarks._util import run_cli

        out = tmp_path / "run"
        cfg = self._cfg(tmp_path, {"loss.args.margin": {"uniform": [0.05, 0.5]}})
        proc = run_cli("tune", "--config", str(cfg), "--output", str(out), "--trials", "2",
                       "--folds", "2", "--progress", "none", "--no-plots")
        assert proc.returncode == 0, proc.stderr[-2000:]
        results = json.loads((out / "results.json").read_text())
        best = results["metadata"]["tuning"]["best"]["triplet"]
        trials = json.loads((out / "tuning" / "triplet" / "trials.json").read_text())
        assert len(trials) == 2 and best["value"] == max(t["value"] for t in trials.values())
        table = (out / "table.md").read_text()
        assert "Chosen settings (2 trials x 2 validation folds per method" in table
        # no test class was used: the folds hold the protocol's training digits only
        (folds,) = json.loads((out / "tuning" / "folds.json").read_text()).values()
        for name in ("fold0", "fold1"):
            assert set(folds[name]["fit"]) | set(folds[name]["validate"]) <= {0, 1, 2, 3, 4}


    def test_one_search_for_several_protocols_is_refused(self, tmp_path):
        """With ``tuning.per_protocol: false`` one protocol's validation folds would hold items
        another protocol tests on (one data set): an error naming the key, before any work."""
        import yaml

        from benchmarks.harness import cli

        cfg = self._cfg(tmp_path, {"loss.args.margin": {"uniform": [0.05, 0.5]}})
        raw = yaml.safe_load(cfg.read_text())
        raw["dataset"] = {"name": "digits", "protocols": {
            "zs": {"type": "zero_shot", "train_classes": [0, 1, 2, 3, 4],
                   "test_classes": [5, 6, 7, 8, 9]},
            "sc": {"type": "superclass", "groups": [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]],
                   "test_fraction": 0.5},
        }}
        cfg.write_text(yaml.safe_dump(raw))
        out = tmp_path / "run"
        with pytest.raises(ValueError, match=r"tuning.per_protocol is false .* 2 protocols "
                                             r"\(sc, zs\).*--protocols sc"):
            cli.tune_main(["--config", str(cfg), "--output", str(out), "--trials", "2",
                           "--folds", "2", "--progress", "none"])
        assert not out.exists()
        # one protocol is fine
        assert cli.tune_main(["--config", str(cfg), "--output", str(out), "--trials", "2",
                              "--folds", "2", "--progress", "none", "--no-plots",
                              "--protocols", "zs"]) == 0

    def test_every_protocol_searched_on_its_own(self, tmp_path):
        """``tuning.per_protocol``: one search per protocol and method, on that protocol's own
        folds; each protocol's test cells are trained with the settings chosen for it."""
        import json

        import yaml

        from benchmarks.harness import cli

        cfg = self._cfg(tmp_path, {"training.epochs": {"int": [1, 4]}})
        raw = yaml.safe_load(cfg.read_text())
        raw["tuning"] = {"per_protocol": True}
        low, high = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
        raw["dataset"] = {"name": "digits", "protocols": {
            "low": {"type": "zero_shot", "train_classes": low, "test_classes": high},
            "high": {"type": "zero_shot", "train_classes": high, "test_classes": low},
        }}
        cfg.write_text(yaml.safe_dump(raw))
        out = tmp_path / "run"
        assert cli.tune_main(["--config", str(cfg), "--output", str(out), "--trials", "3",
                              "--folds", "2", "--progress", "none", "--no-plots"]) == 0
        results = json.loads((out / "results.json").read_text())
        best = results["metadata"]["tuning"]["best"]
        assert set(best) == {"low/triplet", "high/triplet"}
        folds = json.loads((out / "tuning" / "folds.json").read_text())
        assert set(folds) == {"low", "high"}
        for cell in results["results"]:
            if cell["method"] == "triplet":
                chosen = best[f"{cell['protocol']}/triplet"]["params"]["training.epochs"]
                assert cell["epochs"] == chosen
        for protocol in ("low", "high"):
            trials = json.loads((out / "tuning" / protocol / "triplet" / "trials.json")
                                .read_text())
            assert len(trials) == 3


@pytest.mark.slow  # kills and resumes a search
class TestTuneKilledAndResumed:
    def test_sigkill_mid_search_then_resume_gives_the_uninterrupted_trials(self, tmp_path):
        """SIGKILL a real `python -m benchmarks tune` once its second trial's first fold has
        been committed, restart it with the same command: the trials (settings and fold values)
        equal those of an uninterrupted run, none lost or repeated."""
        import json
        import signal
        import subprocess
        import time

        from tests.benchmarks._util import REPO, cli_command, cli_env, run_cli

        cfg = TestTuneCommandLine()._cfg(tmp_path, {"loss.args.margin": {"uniform": [0.05, 0.5]}})

        def args(out):
            return ["tune", "--config", str(cfg), "--output", str(out), "--trials", "3",
                    "--folds", "2", "--progress", "none", "--no-plots", "--search-only"]

        ref = run_cli(*args(tmp_path / "ref"))
        assert ref.returncode == 0, ref.stderr[-2000:]
        killed = tmp_path / "killed"
        p = subprocess.Popen(cli_command(*args(killed)), cwd=REPO, env=cli_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        marker = killed / "tuning" / "triplet" / "trial001" / "cells" / "fold0"
        t0 = time.time()
        while not marker.exists() and p.poll() is None and time.time() - t0 < 120:
            time.sleep(0.01)
        assert p.poll() is None, "the search ended before it could be killed"
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        again = run_cli(*args(killed))
        assert again.returncode == 0, again.stderr[-2000:]

        def trials(out):
            return json.loads((out / "tuning" / "triplet" / "trials.json").read_text())

        a, b = trials(tmp_path / "ref"), trials(killed)
        assert sorted(a) == sorted(b) == ["0", "1", "2"]
        for k in a:
            assert a[k]["params"] == b[k]["params"]
            assert a[k]["fold_map_at_r"] == b[k]["fold_map_at_r"]
