"""Paired effects: does adding a method to a loss help, hurt or tie, over matched seeds?

For a pair (baseline ``X``, treated ``X + method``) in one protocol, the effect on a metric is
the mean over the seeds both rows ran of d_s = metric(treated, s) − metric(baseline, s), with
the two-sided 95 % Student-t interval mean ± t(0.975, n−1)·sd(d)/√n. Matching by seed removes
what the two runs share (the seed's data order, initialisation of shared parts), so the
interval is that of the *difference*, not of two overlapping means. An interval that excludes 0
is reported as "helps" or "hurts", otherwise "tie"; with one seed there is no interval ("n=1").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

#: t(0.975, df) for df = 1..30 (two-sided 95 %); larger df use the Cornish-Fisher expansion.
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
_Z975 = 1.959964


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


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
        return {"mean": mean, "low": None, "high": None, "n": 1, "verdict": "n=1"}
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    verdict = "helps" if low > 0 else "hurts" if high < 0 else "tie"
    return {"mean": mean, "low": low, "high": high, "n": n, "verdict": verdict}


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


def markdown(effects: list[dict], metric: str, label: str) -> str:
    """One table per protocol: treated vs baseline, mean difference [95 % interval], verdict."""
    rows = [e for e in effects if e["metric"] == metric]
    if not rows:
        return ""
    out = [
        f"### Paired effects on {label} (treated − baseline, mean over matched seeds "
        "[95 % t-interval])",
        "",
    ]
    for protocol in dict.fromkeys(e["protocol"] for e in rows):
        out += [f"**{protocol}**", "", f"| treated | baseline | Δ {label} | 95 % interval | "
                "seeds | verdict |", "|---|---|---:|---|---:|---|"]
        for e in (r for r in rows if r["protocol"] == protocol):
            ci = "—" if e["low"] is None else f"[{_fmt(e['low'])}, {_fmt(e['high'])}]"
            out.append(
                f"| {e['treated']} | {e['baseline']} | {_fmt(e['mean'])} | {ci} | {e['n']} | "
                f"{e['verdict']} |"
            )
        out.append("")
    return "\n".join(out)


def plot(effects: list[dict], metric: str, label: str, path: str) -> bool:
    """A forest plot per protocol: each pair's mean difference and 95 % interval against 0."""
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
            if e["low"] is not None:
                ax.plot([e["low"], e["high"]], [y, y], color=color, lw=2)
            ax.plot([e["mean"]], [y], "o", color=color)
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_yticks(ys)
        ax.set_yticklabels([f"{e['treated']} vs {e['baseline']}" for e in sub], fontsize=8)
        ax.set_xlabel(f"Δ {label} (95 % interval over matched seeds)")
        ax.set_title(protocol)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    from .._shared import save_figure

    save_figure(fig, path, bbox_inches="tight")
    plt.close(fig)
    return True
