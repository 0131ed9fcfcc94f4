"""Paired effects of the report (benchmarks/harness/effects.py) against scipy and numpy."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.harness import effects

scipy_stats = pytest.importorskip("scipy.stats")


class TestPairedEffect:
    @pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 30, 31, 45, 120])
    def test_t_quantile_matches_scipy(self, df):
        assert effects.t975(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=2e-4)

    def test_interval_matches_scipy_on_the_differences(self):
        rng = np.random.default_rng(0)
        base = rng.normal(0.5, 0.02, 5)
        treated = base + rng.normal(0.03, 0.01, 5)
        e = effects.paired_effect(list(treated), list(base))
        d = treated - base
        low, high = scipy_stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=scipy_stats.sem(d))
        assert e["mean"] == pytest.approx(d.mean(), rel=1e-12)
        assert e["low"] == pytest.approx(low, abs=1e-5)
        assert e["high"] == pytest.approx(high, abs=1e-5)
        assert e["verdict"] == "helps" and e["n"] == 5

    def test_verdicts(self):
        assert effects.paired_effect([0.4, 0.41, 0.39], [0.5, 0.5, 0.5])["verdict"] == "hurts"
        assert effects.paired_effect([0.5, 0.52, 0.48], [0.5, 0.5, 0.5])["verdict"] == "tie"
        one = effects.paired_effect([0.6], [0.5])
        assert one["verdict"] == "n=1" and one["low"] is None

    def test_pairing_is_by_seed_not_by_order(self):
        # the baseline's seeds come in another order and one extra seed: only matched seeds count
        cells = [
            {"protocol": "p", "method": "x", "seed": s, "metrics": {"m": v}}
            for s, v in [(2, 0.3), (0, 0.1), (1, 0.2), (7, 0.9)]
        ] + [
            {"protocol": "p", "method": "x+c", "seed": s, "metrics": {"m": v}}
            for s, v in [(0, 0.15), (1, 0.22), (2, 0.37)]
        ]
        (e,) = effects.pair_effects(cells, [("x", "x+c")], ["m"])
        assert e["seeds"] == [0, 1, 2]
        assert e["mean"] == pytest.approx(np.mean([0.05, 0.02, 0.07]))

    def test_bad_lengths(self):
        with pytest.raises(ValueError, match="equally long"):
            effects.paired_effect([0.1, 0.2], [0.1])

    def test_markdown_and_plot(self, tmp_path):
        cells = [
            {"protocol": "zs", "method": m, "seed": s, "metrics": {"map": v + 0.01 * s}}
            for m, v in [("a", 0.5), ("a+b", 0.6)]
            for s in range(3)
        ]
        eff = effects.pair_effects(cells, [("a", "a+b")], ["map"])
        text = effects.markdown(eff, "map", "MAP@R")
        assert "| a+b | a | +0.100 | [+0.100, +0.100] | 3 | helps |" in text
        assert effects.plot(eff, "map", "MAP@R", str(tmp_path / "e.png"))
        assert (tmp_path / "e.png").stat().st_size > 1000
