"""The report's family of comparisons: every method against the best plain loss (chosen on the
search's validation score, never the test) and Holm's adjustment over the whole family."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from benchmarks import _shared as _io
from benchmarks.harness import report

MAP = "mean_average_precision_at_r"
#: test MAP@R per (protocol, method), seeds 0-4 add 0.01 * seed; plain "a" tests best, but
#: plain "b" has the better validation score, so "b" must be the comparison
TEST = {"a": 0.50, "b": 0.45, "a+x": 0.55, "ours": 0.47}
VALIDATION = {"p/a": 0.30, "p/b": 0.40, "p/a+x": 0.35, "p/ours": 0.33,
              "q/a": 0.50, "q/b": 0.20, "q/a+x": 0.35, "q/ours": 0.33}


@pytest.fixture
def run_dir(tmp_path):
    rng = np.random.RandomState(0)
    plan = [(p, m, s) for p in ("p", "q") for m in ("no_learning", *TEST) for s in range(5)]
    for protocol, method, seed in plan:
        value = TEST.get(method, 0.3) + 0.01 * seed + 0.005 * rng.randn()
        _io.atomic_write_json(
            os.path.join(tmp_path, "cells", protocol, method, f"seed{seed}.json"),
            {"protocol": protocol, "method": method, "seed": seed, "metrics": {MAP: value}})
    info = {"plan": [list(p) for p in plan], "config": {
        "name": "t", "training": {"epochs": 6},
        "methods": [{"name": "no_learning", "no_learning": True}, {"name": "a"}, {"name": "b"},
                    {"name": "a+x", "baseline": "a"}, {"name": "ours", "baseline": "b"}]},
        "tuning": {"best": {k: {"value": v, "best_trial": 0, "params": {}}
                            for k, v in VALIDATION.items()},
                   "untuned": ["no_learning"], "trials": 8, "folds": 2,
                   "protocol": "every protocol on its own"}}
    return str(tmp_path), info


def _cells(folder):
    with open(os.path.join(folder, "results.json")) as f:
        return json.load(f)


def test_best_plain_is_chosen_on_validation(run_dir):
    _, info = run_dir
    assert report.plain_methods(info) == ["a", "b"]
    assert report.best_plain(info, "p") == ("b", 0.40)  # "a" tests higher: not looked at
    assert report.best_plain(info, "q") == ("a", 0.50)
    assert report.best_plain({"config": info["config"]}, "p") is None  # untuned: no choice
    # one search (per_protocol false) on "q": its scores choose for "q" only, never for "p"
    one = {**info, "tuning": {"protocol": "q", "best": {
        "a": {"value": 0.1}, "b": {"value": 0.2}}}}
    assert report.best_plain(one, "q") == ("b", 0.2)
    assert report.best_plain(one, "p") is None
    # a plain loss that was not searched is not a candidate
    del info["tuning"]["best"]["p/b"]
    assert report.searched_plain(info, "p") == [("a", 0.30)]


def test_every_method_against_the_best_plain_loss_with_holm(run_dir):
    folder, info = run_dir
    text = report.build_report(folder, info, make_plots=False)
    res = _cells(folder)
    vs = {(e["protocol"], e["treated"]): e for e in res["effects_vs_best_plain"]}
    assert set(vs) == {("p", "a+x"), ("p", "ours"), ("q", "a+x"), ("q", "ours")}
    assert res["best_plain"] == {"p": {"name": "b", "value": 0.40, "candidates": ["a", "b"]},
                                 "q": {"name": "a", "value": 0.50, "candidates": ["a", "b"]}}
    assert {e["baseline"] for k, e in vs.items() if k[0] == "p"} == {"b"}
    assert {e["baseline"] for k, e in vs.items() if k[0] == "q"} == {"a"}
    # the family: 2 declared pairs x 2 protocols + 4 against the best plain loss, of which two
    # are declared pairs already (p: ours vs b; q: a+x vs a): 6 distinct comparisons
    listed = [e for e in res["paired_effects"] if e["metric"] == MAP] + res["effects_vs_best_plain"]
    family = list({(e["protocol"], e["baseline"], e["treated"]): e for e in listed}.values())
    assert len(listed) == 8 and len(family) == 6
    assert all(e["family_size"] == 6 for e in listed)
    # Holm against the sequential procedure run here on the same p-values
    ps = [e["p"] for e in family]
    order = sorted(range(6), key=lambda i: ps[i])
    expect, running = [0.0] * 6, 0.0
    for k, i in enumerate(order):
        running = max(running, (6 - k) * ps[i])
        expect[i] = min(1.0, running)
    assert [e["p_holm"] for e in family] == pytest.approx(expect)
    # the effect itself: treated minus the chosen plain loss, matched by seed
    cells = {(c["protocol"], c["method"], c["seed"]): c["metrics"][MAP] for c in res["results"]}
    d = [cells[("p", "ours", s)] - cells[("p", "b", s)] for s in range(5)]
    assert vs[("p", "ours")]["mean"] == pytest.approx(float(np.mean(d)))
    assert "### Against the best plain loss" in text
    assert "p: `b` (validation MAP@R 0.400, among `a`, `b`)" in text
    assert "family of 6 comparisons" in text and "Holm verdict" in text
    # effective-rank effects are outside the family
    assert all("p_holm" not in e for e in res["paired_effects"] if e["metric"] != MAP)


def test_untuned_run_adjusts_the_declared_pairs_only(run_dir):
    folder, info = run_dir
    del info["tuning"]
    text = report.build_report(folder, info, make_plots=False)
    res = _cells(folder)
    assert res["effects_vs_best_plain"] == [] and res["best_plain"] == {}
    assert all(e["family_size"] == 4 for e in res["paired_effects"])
    assert "Against the best plain loss" not in text
    ps = [e["p"] for e in res["paired_effects"]]
    for alpha in (0.001, 0.01, 0.05):  # Holm's sequential rejections, walked here
        rejected, m = set(), len(ps)
        for k, i in enumerate(sorted(range(m), key=lambda j: ps[j])):
            if ps[i] > alpha / (m - k):
                break
            rejected.add(i)
        assert rejected == {i for i, e in enumerate(res["paired_effects"])
                            if e["p_holm"] <= alpha}
