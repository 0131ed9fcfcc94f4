"""Paired effects of the report (benchmarks/harness/effects.py) against scipy and numpy."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.harness import effects

scipy_stats = pytest.importorskip("scipy.stats")


class TestPairedEffect:
    @pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 30, 31, 45, 120])
    def test_t_quantile_matches_scipy(self, df):
        assert effects.t975(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=1e-11)

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


def _t_two_sided_by_quadrature(t: float, df: int) -> float:
    """P(|T| >= |t|) by integrating Student's t density over [0, |t|] (Simpson, float64): an
    algorithm independent of the continued fraction under test."""
    from math import gamma, pi, sqrt

    c = gamma((df + 1) / 2) / (sqrt(df * pi) * gamma(df / 2))
    x = np.linspace(0.0, abs(t), 20001)
    f = c * (1.0 + x * x / df) ** (-(df + 1) / 2)
    h = x[1] - x[0]
    inner = h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())
    return 1.0 - 2.0 * inner


def _holm_rejections(pvalues, alpha):
    """Holm's procedure as its paper states it: walk the sorted p-values, reject while
    p_(k) <= alpha / (m - k + 1), stop at the first that is not."""
    m = len(pvalues)
    rejected = set()
    for k, i in enumerate(sorted(range(m), key=lambda j: pvalues[j])):
        if pvalues[i] > alpha / (m - k):
            break
        rejected.add(i)
    return rejected


class TestPValuesAndHolm:
    @pytest.mark.parametrize("t,df", [(0.0, 3), (0.3, 1), (2.0, 4), (2.7764, 4), (5.0, 30),
                                      (1.96, 200), (-3.1, 7), (12.0, 2)])
    def test_t_p_value_against_quadrature_and_scipy(self, t, df):
        p = effects.t_two_sided_p(t, df)
        assert p == pytest.approx(_t_two_sided_by_quadrature(t, df), abs=1e-9)
        assert p == pytest.approx(2 * scipy_stats.t.sf(abs(t), df), rel=1e-9, abs=1e-15)

    def test_p_value_agrees_with_the_interval(self):
        # at the interval's edge, t = t975(n-1): p = 0.05; the verdict and p < 0.05 agree
        for df in (1, 4, 9):
            assert effects.t_two_sided_p(effects.t975(df), df) == pytest.approx(0.05, abs=1e-12)
        rng = np.random.default_rng(3)
        for _ in range(200):
            base = rng.normal(0.5, 0.05, 5)
            e = effects.paired_effect(list(base + rng.normal(0.01, 0.02, 5)), list(base))
            assert (e["verdict"] != "tie") == (e["p"] < 0.05)

    def test_betainc_against_scipy(self):
        special = pytest.importorskip("scipy.special")
        for a, b, x in [(0.5, 0.5, 0.3), (2.0, 0.5, 0.9), (15.0, 0.5, 0.99), (1.0, 3.0, 0.01)]:
            assert effects.betainc(a, b, x) == pytest.approx(special.betainc(a, b, x), rel=1e-10)

    def test_holm_rejects_what_the_sequential_procedure_rejects(self):
        rng = np.random.default_rng(0)
        for _ in range(300):
            m = int(rng.integers(1, 12))
            p = list(rng.uniform(0, 0.1, m) ** rng.uniform(0.5, 3))
            adjusted = effects.holm(p)
            assert all(a >= q for a, q in zip(adjusted, p, strict=True))
            for alpha in (0.01, 0.05, 0.1):
                assert {i for i, a in enumerate(adjusted) if a <= alpha} == \
                    _holm_rejections(p, alpha)

    def test_p_is_never_shown_as_a_rounded_0_05(self):
        assert [effects._fmt_p(p) for p in (None, 0.0004, 0.0499, 0.0501, 0.05, 0.0494, 0.3)] \
            == ["—", "<0.001", "0.0499", "0.0501", "0.0500", "0.049", "0.300"]

    def test_holm_by_hand(self):
        assert effects.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])

    def test_adjusted_verdicts_and_the_family(self):
        fam = [
            effects.paired_effect([0.51, 0.52, 0.53, 0.52, 0.51], [0.50, 0.50, 0.50, 0.49, 0.50]),
            effects.paired_effect([0.50, 0.52, 0.49, 0.53, 0.51], [0.50, 0.50, 0.50, 0.50, 0.50]),
            effects.paired_effect([0.6], [0.5]),
        ]
        out = effects.adjust_holm(fam)
        assert [e["family_size"] for e in out] == [2, 2, 2]  # the one-seed pair is not tested
        p0, p1 = fam[0]["p"], fam[1]["p"]
        assert p0 < p1  # pair 0 is the clearer one: Holm multiplies it by 2, pair 1 by 1
        assert out[0]["p_holm"] == pytest.approx(2 * p0)
        assert out[1]["p_holm"] == pytest.approx(min(1.0, max(2 * p0, p1)))
        assert out[0]["verdict"] == out[0]["verdict_holm"] == "helps"
        assert out[2]["p_holm"] is None and out[2]["verdict_holm"] == "n=1"
        assert out[1]["verdict_holm"] == "tie"
        # an effect that passes alone but not in a family of 20 near-identical tests
        borderline = effects.paired_effect([0.52, 0.50, 0.53, 0.51, 0.52], [0.5] * 5)
        assert borderline["verdict"] == "helps" and 0.05 / 20 < borderline["p"] < 0.05
        many = effects.adjust_holm([borderline] * 20)
        assert all(e["verdict_holm"] == "tie" and e["verdict"] == "helps" for e in many)


def test_plot_marks_the_verdicts_holm_does_not_keep(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = []
    real = matplotlib.axes.Axes.plot

    def spy(self, *args, **kwargs):
        drawn.append(kwargs)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    borderline = {**effects.paired_effect([0.52, 0.50, 0.53, 0.51, 0.52], [0.5] * 5),
                  "protocol": "p", "baseline": "a", "treated": "a+b", "metric": "m"}
    fam = effects.adjust_holm([borderline] * 20)  # helps alone, a tie after Holm
    assert effects.plot(fam[:1], "m", "MAP@R", str(tmp_path / "e.png"))
    line, marker = drawn[0], drawn[1]
    assert line["alpha"] == 0.35 and marker["mfc"] == "white"
    drawn.clear()
    assert effects.plot([borderline], "m", "MAP@R", str(tmp_path / "f.png"))  # no Holm: solid
    assert drawn[0]["alpha"] == 1.0 and drawn[1]["mfc"] == "tab:green"
