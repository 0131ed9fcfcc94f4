"""The report's curves: the collapse column against an independent computation, the curves
figure and the spectrum's axis, rebuilt from the cells of a run folder without training."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from scipy import stats

from benchmarks import _shared as _io
from benchmarks.harness import report

pytestmark = pytest.mark.slow  # draws the report's figures

CURVES = {  # (method, seed) -> MAP@R per tested epoch 2, 4, 6
    ("contrastive", 0): [0.50, 0.60, 0.55],
    ("contrastive", 1): [0.52, 0.58, 0.57],
    ("contrastive", 2): [0.40, 0.62, 0.50],
    ("contrastive+coding_rate", 0): [0.50, 0.55, 0.60],
    ("contrastive+coding_rate", 1): [0.50, 0.56, 0.59],
    ("contrastive+coding_rate", 2): [0.49, 0.57, 0.61],
}


def _cell(protocol, method, seed, curve=None, dim=8):
    rng = np.random.RandomState(seed)
    spectrum = sorted(rng.rand(dim).tolist(), reverse=True)
    c = {"protocol": protocol, "method": method, "seed": seed, "spectrum": spectrum,
         "metrics": {"mean_average_precision_at_r": curve[-1] if curve else 0.45,
                     "precision_at_1": 0.9, "effective_rank": 5.0}}
    if curve:
        c["curve"] = [{"epoch": e, "mean_average_precision_at_r": v,
                       "effective_rank": 4.0 + v, "train_effective_rank": 3.0}
                      for e, v in zip((2, 4, 6), curve, strict=True)]
    return c


@pytest.fixture
def run_dir(tmp_path):
    plan = [("p", "no_learning", s) for s in range(3)] + [
        ("p", m, s) for (m, s) in CURVES]
    for protocol, method, seed in plan:
        curve = CURVES.get((method, seed))
        cell = _cell(protocol, method, seed, curve, dim=100 if method == "no_learning" else 8)
        _io.atomic_write_json(
            os.path.join(tmp_path, "cells", protocol, method, f"seed{seed}.json"), cell)
    info = {"plan": [list(p) for p in plan], "config": {
        "name": "t", "training": {"epochs": 6},
        "methods": [{"name": "no_learning", "no_learning": True}, {"name": "contrastive"},
                    {"name": "contrastive+coding_rate", "baseline": "contrastive"}]}}
    return str(tmp_path), info


def _reference_interval(values):
    values = np.asarray(values, dtype=np.float64)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return values.mean(), values.mean() - half, values.mean() + half


class TestCollapseColumn:
    def test_final_minus_peak(self):
        assert report.collapse_of([{"mean_average_precision_at_r": v} for v in (1, 3, 2)]) == -1
        assert report.collapse_of([{"mean_average_precision_at_r": v} for v in (1, 2)]) == 0
        assert report.collapse_of(None) is None

    def test_table_column_against_scipy(self, run_dir):
        folder, info = run_dir
        text = report.build_report(folder, info, make_plots=False)
        assert report.COLLAPSE_LABEL in text
        for method in ("contrastive", "contrastive+coding_rate"):
            drops = [CURVES[(method, s)][-1] - max(CURVES[(method, s)]) for s in range(3)]
            mean, low, high = _reference_interval(drops)
            row = next(line for line in text.splitlines() if line.startswith(f"| {method} "))
            assert f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]" in row
        floor = next(line for line in text.splitlines() if line.startswith("| no_learning"))
        assert "| — |" in floor
        with open(os.path.join(folder, "results.json")) as f:
            summary = json.load(f)["summary"]["p"]["contrastive"]["collapse"]
        assert summary["n"] == 3 and summary["mean"] == pytest.approx((-0.05 - 0.01 - 0.12) / 3)

    def test_no_curve_no_column(self, run_dir, tmp_path):
        folder, info = run_dir
        for method, seed in CURVES:
            p = os.path.join(folder, "cells", "p", method, f"seed{seed}.json")
            cell = _io.read_json(p)
            del cell["curve"]
            _io.atomic_write_json(p, cell)
        assert report.COLLAPSE_LABEL not in report.build_report(folder, info, make_plots=False)


class TestFigures:
    def test_curves_and_spectrum_rebuilt_without_training(self, run_dir, monkeypatch):
        folder, info = run_dir
        from benchmarks.harness import train

        monkeypatch.setattr(train, "run_cell", lambda *a, **k: pytest.fail("trained"))
        report.build_report(folder, info)
        png = os.path.join(folder, "curves_p.png")
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    def test_curve_values_are_the_cells(self, run_dir):
        folder, _ = run_dir
        cells = [_io.read_json(os.path.join(folder, "cells", "p", m, f"seed{s}.json"))
                 for m, s in CURVES]
        epochs, values = report.curves_of(cells, "p", "contrastive", "mean_average_precision_at_r")
        assert epochs.tolist() == [2, 4, 6]
        np.testing.assert_array_equal(values, [CURVES[("contrastive", s)] for s in range(3)])
        assert report.curves_of(cells, "p", "no_learning", "effective_rank") is None

    def test_spectrum_axis_spans_the_learned_dimension(self, run_dir, monkeypatch):
        import matplotlib.pyplot as plt

        folder, info = run_dir
        seen = {}
        real_close = plt.close

        def grab(fig=None):
            if fig is not None and "spectrum" in fig.axes[0].get_title():
                ax = fig.axes[0]
                seen["xlim"] = ax.get_xlim()
                seen["labels"] = [t.get_text() for t in ax.get_legend().get_texts()]
            return real_close(fig)

        monkeypatch.setattr(plt, "close", grab)
        report.build_report(folder, info)
        assert seen["xlim"] == (0.5, 8.5)
        assert "no_learning (first 8 of 100 shown)" in seen["labels"]

    def test_colour_families_follow_the_baseline(self):
        import matplotlib

        colours = report.method_colours(
            ["no_learning", "a", "a+x", "b", "b+y"], {"a+x": "a", "b+y": "b"}, "no_learning")
        assert colours["no_learning"] == "black"
        blues = matplotlib.colormaps[report.FAMILIES[0]]
        oranges = matplotlib.colormaps[report.FAMILIES[1]]
        assert colours["a"] == blues(0.85) and colours["a+x"] == blues(0.45)
        assert colours["b"] == oranges(0.85) and colours["b+y"] == oranges(0.45)
