"""Paired effects: does adding a method to a loss help, hurt or tie, over matched seeds?

For a pair (baseline ``X``, treated ``X + method``) in one protocol, the effect on a metric is
the mean over the seeds both rows ran of d_s = metric(treated, s) − metric(baseline, s), with
the two-sided 95 % Student-t interval mean ± t(0.975, n−1)·sd(d)/√n. Matching by seed removes
what the two runs share (the seed's data order, initialisation of shared parts), so the
interval is that of the *difference*, not of two overlapping means. An interval that excludes 0
is reported as "helps" or "hurts", otherwise "tie"; with one seed there is no interval ("n=1").

Each effect also carries its paired t-test's two-sided p-value (the interval excludes 0 exactly
when p < 0.05: both come from the same t distribution). A table of many pairs is a family of
tests: :func:`holm` adjusts their p-values by Holm's step-down procedure (S. Holm, "A simple
sequentially rejective multiple test procedure", Scand. J. Statist. 6, 1979), which controls the
family-wise error rate at 5 % under any dependence between the tests, and gives the verdict that
survives the adjustment beside the plain one.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc needs 0 <= x <= 1, got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom: I_{df/(df+t²)}(df/2, 1/2)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


@functools.cache
def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom: the t with
    :func:`t_two_sided_p` (t, df) = 0.05, by bisection to machine precision (so an interval built
    on it excludes 0 exactly when p < 0.05)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    low, high = 0.0, 100.0  # p(100, 1) = 0.0064 < 0.05
    for _ in range(200):
        mid = 0.5 * (low + high)
        if t_two_sided_p(mid, df) > 0.05:
            low = mid
        else:
            high = mid
        if high - low <= 1e-13 * high:
            break
    return 0.5 * (low + high)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: sort ascending, multiply the k-th
    smallest (k = 1..m) by m − k + 1, carry the running maximum, cap at 1."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def adjust_holm(effects: list[dict], alpha: float = 0.05) -> list[dict]:
    """Copies of ``effects`` (one family) with ``p_holm``, ``verdict_holm`` and ``family_size``:
    a pair helps or hurts after the adjustment when its Holm p-value is below ``alpha``.
    Effects without a p-value (one seed) stay out of the family and keep the verdict "n=1"."""
    tested = [i for i, e in enumerate(effects) if e.get("p") is not None]
    adjusted = holm([effects[i]["p"] for i in tested])
    out = [dict(e, p_holm=None, verdict_holm=e["verdict"], family_size=len(tested))
           for e in effects]
    for i, p in zip(tested, adjusted, strict=True):
        e = out[i]
        e["p_holm"] = p
        e["verdict_holm"] = ("tie" if p >= alpha else "helps" if e["mean"] > 0 else "hurts")
    return out


def mean_interval(values: Sequence[float]) -> dict:
    """The mean of ``values`` with its 95 % t-interval over them (``low``/``high`` None for one
    value): mean ± t975(n-1) · sd / √n, sd the sample standard deviation."""
    if not values:
        raise ValueError("mean_interval needs a non-empty list, got []")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return {"mean": mean, "low": None, "high": None, "n": 1}
    sd = math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def paired_effect(treated: Sequence[float], baseline: Sequence[float]) -> dict:
    """Mean paired difference with its 95 % interval (``low``/``high`` None for one pair)."""
    if len(treated) != len(baseline) or not treated:
        raise ValueError(
            f"paired_effect needs two equally long, non-empty lists, got {len(treated)} and "
            f"{len(baseline)}"
        )
    d = [a - b for a, b in zip(treated, baseline, strict=True)]
    n = len(d)
    mean = sum(d) / n
    if n == 1:
        return {"mean": mean, "low": None, "high": None, "n": 1, "verdict": "n=1", "p": None}
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    verdict = "helps" if low > 0 else "hurts" if high < 0 else "tie"
    if sd > 0:
        p = t_two_sided_p(mean / (sd / math.sqrt(n)), n - 1)
    else:  # every seed gave the same difference: certain, unless that difference is 0
        p = 1.0 if mean == 0 else 0.0
    return {"mean": mean, "low": low, "high": high, "n": n, "verdict": verdict, "p": p}


def pair_effects(
    cells: Iterable[dict], pairs: Sequence[tuple[str, str]], metrics: Sequence[str]
) -> list[dict]:
    """Every (protocol, baseline, treated, metric) effect over the seeds both rows have."""
    by = {}
    for c in cells:
        by.setdefault((c["protocol"], c["method"]), {})[c["seed"]] = c["metrics"]
    protocols = list(dict.fromkeys(p for p, _ in by))
    out = []
    for protocol in protocols:
        for base, treated in pairs:
            a, b = by.get((protocol, treated)), by.get((protocol, base))
            if not a or not b:
                continue
            seeds = sorted(set(a) & set(b))
            if not seeds:
                continue
            for metric in metrics:
                if not all(metric in a[s] and metric in b[s] for s in seeds):
                    continue
                eff = paired_effect([a[s][metric] for s in seeds], [b[s][metric] for s in seeds])
                out.append(
                    {"protocol": protocol, "baseline": base, "treated": treated,
                     "metric": metric, "seeds": seeds, **eff}
                )
    return out


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:+.3f}"


def _fmt_p(p: float | None) -> str:
    """``<0.001``, else three decimals; four where three would round onto 0.05 (so that a
    p of 0.0499 is not shown as the 0.050 it is not)."""
    if p is None:
        return "—"
    if p < 0.001:
        return "<0.001"
    return f"{p:.4f}" if f"{p:.3f}" == "0.050" else f"{p:.3f}"


def markdown(effects: list[dict], metric: str, label: str, note: str = "") -> str:
    """One table per protocol: treated vs baseline, mean difference [95 % interval], verdict;
    with the p-value, Holm-adjusted p-value and Holm verdict where :func:`adjust_holm` ran.
    ``note``: a paragraph under the heading (e.g. what the Holm family is)."""
    rows = [e for e in effects if e["metric"] == metric]
    if not rows:
        return ""
    holm_cols = any("p_holm" in e for e in rows)
    out = [
        f"### Paired effects on {label} (treated − baseline, mean over matched seeds "
        "[95 % t-interval])",
        "",
    ]
    if note:
        out += [note, ""]
    head = f"| treated | baseline | Δ {label} | 95 % interval | seeds | verdict |"
    rule = "|---|---|---:|---|---:|---|"
    if holm_cols:
        head += " p | Holm p | Holm verdict |"
        rule += "---:|---:|---|"
    for protocol in dict.fromkeys(e["protocol"] for e in rows):
        out += [f"**{protocol}**", "", head, rule]
        for e in (r for r in rows if r["protocol"] == protocol):
            ci = "—" if e["low"] is None else f"[{_fmt(e['low'])}, {_fmt(e['high'])}]"
            line = (f"| {e['treated']} | {e['baseline']} | {_fmt(e['mean'])} | {ci} | {e['n']} | "
                    f"{e['verdict']} |")
            if holm_cols:
                line += (f" {_fmt_p(e.get('p'))} | {_fmt_p(e.get('p_holm'))} | "
                         f"{e.get('verdict_holm', e['verdict'])} |")
            out.append(line)
        out.append("")
    return "\n".join(out)


def plot(effects: list[dict], metric: str, label: str, path: str) -> bool:
    """A forest plot per protocol: each pair's mean difference and 95 % interval against 0;
    green helps, red hurts, grey ties; a verdict that Holm's adjustment does not keep is drawn
    pale with an open marker."""
    rows = [e for e in effects if e["metric"] == metric]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = list(dict.fromkeys(e["protocol"] for e in rows))
    height = max(2.2, 0.42 * max(sum(e["protocol"] == p for e in rows) for p in protocols) + 1.2)
    fig, axes = plt.subplots(1, len(protocols), figsize=(7.5 * len(protocols), height),
                             squeeze=False)
    for ax, protocol in zip(axes[0], protocols, strict=False):
        sub = [e for e in rows if e["protocol"] == protocol]
        ys = list(range(len(sub)))[::-1]
        for y, e in zip(ys, sub, strict=True):
            color = {"helps": "tab:green", "hurts": "tab:red"}.get(e["verdict"], "tab:gray")
            # a verdict that does not survive Holm's adjustment: pale line, open marker
            lost = "verdict_holm" in e and e["verdict_holm"] != e["verdict"]
            if e["low"] is not None:
                ax.plot([e["low"], e["high"]], [y, y], color=color, lw=2,
                        alpha=0.35 if lost else 1.0)
            ax.plot([e["mean"]], [y], "o", color=color, mfc="white" if lost else color)
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_yticks(ys)
        ax.set_yticklabels([f"{e['treated']} vs {e['baseline']}" for e in sub], fontsize=8)
        xlabel = f"Δ {label} (95 % interval over matched seeds)"
        size = max((e.get("family_size") or 0 for e in sub), default=0)
        if size:
            xlabel += (f"\nopen marker: helps/hurts before, not after Holm's adjustment "
                       f"({size} comparisons)")
        ax.set_xlabel(xlabel)
        ax.set_title(protocol)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    from .._shared import save_figure

    save_figure(fig, path, bbox_inches="tight")
    plt.close(fig)
    return True
