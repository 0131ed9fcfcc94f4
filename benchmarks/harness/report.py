"""The report of a run, rebuilt from the run folder alone: Markdown table, results.json, PNG plots.

``python -m benchmarks --report-only --output RUN_DIR`` rebuilds it without training.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys

import numpy as np

from .. import _shared as _io
from .._shared import cpu_model, git_commit  # noqa: F401  (git_commit: re-exported for the CLI)
from . import effects as effects_mod
from .evaluate import METRIC_LABELS

#: The metric of the paired effects (the primary metric of the harness).
EFFECT_METRIC = "mean_average_precision_at_r"

TABLE_METRICS = (
    "precision_at_1",
    "r_precision",
    "mean_average_precision_at_r",
    "NMI",
    "effective_rank",
)


def load_cells(run_dir: str, plan: list[tuple[str, str, int]]) -> list[dict]:
    """The finished cells of ``plan`` (protocol, method, seed), in plan order."""
    out = []
    for protocol, method, seed in plan:
        p = os.path.join(run_dir, "cells", protocol, method, f"seed{seed}.json")
        if os.path.exists(p):
            out.append(_io.read_json(p))
    return out


def collapse_of(curve: list[dict], metric: str = EFFECT_METRIC) -> float | None:
    """Final minus peak ``metric`` along a cell's curve (<= 0: how much of its best it lost by the
    last epoch; 0 when the last test is the best); None without a curve."""
    values = [e[metric] for e in curve or [] if metric in e]
    return values[-1] - max(values) if values else None


def aggregate(cells: list[dict]) -> dict:
    """{protocol: {method: {metric: (mean, std, n)}}}; std is the sample std (ddof=1; 0 for n=1).

    Cells with a curve (``evaluation.interval``) add ``collapse``: :func:`collapse_of` MAP@R,
    mean over seeds with its 95 % t-interval (``effects.mean_interval``)."""
    grouped: dict = {}
    for c in cells:
        grouped.setdefault(c["protocol"], {}).setdefault(c["method"], []).append(c)
    agg: dict = {}
    for protocol, methods in grouped.items():
        agg[protocol] = {}
        for method, cs in methods.items():
            row = {}
            for m in TABLE_METRICS:
                vals = np.array(
                    [c["metrics"][m] for c in cs if m in c["metrics"]], dtype=np.float64
                )
                if len(vals):
                    std = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
                    row[m] = {"mean": float(vals.mean()), "std": std, "n": len(vals)}
            drops = [d for d in (collapse_of(c.get("curve")) for c in cs) if d is not None]
            if drops:
                row["collapse"] = effects_mod.mean_interval(drops)
            row["seeds"] = sorted(c["seed"] for c in cs)
            agg[protocol][method] = row
    return agg


def _fmt_collapse(v: dict | None) -> str:
    if v is None:
        return "—"
    if v["low"] is None:
        return f"{v['mean']:+.3f} (n=1)"
    return f"{v['mean']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}]"


#: The collapse column's header (the table adds it when a cell has a curve).
COLLAPSE_LABEL = "MAP@R final − peak"


def _fmt(v: dict | None, metric: str) -> str:
    if v is None:
        return "—"
    if metric == "effective_rank":
        return f"{v['mean']:.1f} ± {v['std']:.1f}"
    return f"{v['mean']:.3f} ± {v['std']:.3f}"


def floor_method(run_info: dict) -> str | None:
    """The name of the first method flagged ``no_learning: true`` in the run's config (the floor
    row that ▲ compares against), or None."""
    for m in run_info.get("config", {}).get("methods", []):
        if m.get("no_learning"):
            return m["name"]
    return None


def comparison_pairs(run_info: dict) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(declared pairs ``baseline -> method`` of the config, every learned row vs the floor)."""
    methods = run_info.get("config", {}).get("methods", [])
    floor = floor_method(run_info)
    declared = [(m["baseline"], m["name"]) for m in methods if m.get("baseline")]
    vs_floor = [(floor, m["name"]) for m in methods if floor and not m.get("no_learning")]
    return declared, vs_floor


def plain_methods(run_info: dict) -> list[str]:
    """The plain losses of the config: rows that another row names as its ``baseline`` and that
    have no baseline of their own (e.g. ``contrastive`` for ``contrastive+coding_rate``)."""
    methods = run_info.get("config", {}).get("methods", [])
    named = {m.get("baseline") for m in methods}
    return [m["name"] for m in methods
            if m["name"] in named and not m.get("baseline") and not m.get("no_learning")]


def searched_plain(run_info: dict, protocol: str) -> list[tuple[str, float]]:
    """(name, best validation MAP@R) of each plain loss searched on ``protocol``'s validation
    data (``tuning.best``: ``<protocol>/<name>`` per protocol, or ``<name>`` when the one search
    ran on ``protocol``); a plain loss left untuned is not among them."""
    tuning = run_info.get("tuning") or {}
    best = tuning.get("best") or {}
    out = []
    for name in plain_methods(run_info):
        b = best.get(f"{protocol}/{name}")
        if b is None and tuning.get("protocol") == protocol:
            b = best.get(name)
        if b is not None:
            out.append((name, b["value"]))
    return out


def best_plain(run_info: dict, protocol: str) -> tuple[str, float] | None:
    """The plain loss with the best *validation* MAP@R among :func:`searched_plain`, never a
    test score; None for an untuned run or a protocol its search did not run on."""
    scored = searched_plain(run_info, protocol)
    return max(scored, key=lambda nv: nv[1]) if scored else None


def plain_choice(run_info: dict, protocols) -> dict:
    """{protocol: {"name", "value", "candidates"}}: each protocol's :func:`best_plain` and the
    searched plain losses it was chosen among (protocols without a choice are left out)."""
    out = {}
    for protocol in protocols:
        chosen = best_plain(run_info, protocol)
        if chosen is not None:
            out[protocol] = {"name": chosen[0], "value": chosen[1],
                             "candidates": [n for n, _ in searched_plain(run_info, protocol)]}
    return out


def vs_best_plain(cells: list[dict], run_info: dict, choice: dict) -> list[dict]:
    """Every learned row that is not a plain loss against its protocol's chosen plain loss
    (``choice``: :func:`plain_choice`)."""
    methods = run_info.get("config", {}).get("methods", [])
    plain = set(plain_methods(run_info))
    out = []
    for protocol, chosen in choice.items():
        pairs = [(chosen["name"], m["name"]) for m in methods
                 if m["name"] not in plain and not m.get("no_learning")]
        out += effects_mod.pair_effects([c for c in cells if c["protocol"] == protocol], pairs,
                                        [EFFECT_METRIC])
    return out


def holm_family(declared: list[dict], vs_best: list[dict]) -> tuple[list[dict], list[dict]]:
    """Holm-adjust the MAP@R effects of the declared pairs and of every method against the best
    plain loss as one family (all protocols together; a comparison that both lists hold, e.g.
    ``X + method`` against ``X`` when ``X`` is the best plain loss, counts once); other metrics
    are left unadjusted."""
    family = [e for e in declared if e["metric"] == EFFECT_METRIC] + vs_best
    if not family:
        return declared, vs_best
    key = lambda e: (e["protocol"], e["baseline"], e["treated"])  # noqa: E731
    distinct = list({key(e): e for e in family}.values())
    adjusted = {key(e): e for e in effects_mod.adjust_holm(distinct)}
    declared = [adjusted[key(e)] if e["metric"] == EFFECT_METRIC else e for e in declared]
    return declared, [adjusted[key(e)] for e in vs_best]


def effects_section(declared: list[dict], vs_floor: list[dict], floor: str | None,
                    vs_best: list[dict] | None = None, choice: dict | None = None) -> str:
    label = METRIC_LABELS[EFFECT_METRIC]
    note = ""
    holm = [e for e in declared + (vs_best or []) if e.get("family_size")]
    if holm:
        against_best = (" and of every method against the best plain loss (next table)"
                        if vs_best else "")
        note = (f"p: the paired t-test's two-sided p-value. Holm's adjustment runs over one "
                f"family of {holm[0]['family_size']} comparisons: every paired effect on {label} "
                f"of the config's pairs{against_best}, all protocols together, each distinct "
                "comparison once; \"Holm verdict\" is the verdict that survives it at 5 % "
                "family-wise error.")
    text = effects_mod.markdown(declared, EFFECT_METRIC, label, note)
    if vs_best:
        which = "; ".join(
            f"{p}: `{c['name']}` (validation {label} {c['value']:.3f}, among "
            + ", ".join(f"`{n}`" for n in c["candidates"]) + ")"
            for p, c in (choice or {}).items())
        text += "\n" + effects_mod.markdown(
            vs_best, EFFECT_METRIC, label,
            "Should I add the method, or just use a better plain loss? Each method against the "
            "plain loss with the best validation score of its protocol's search (chosen on "
            f"validation, not on the test): {which}.",
        ).replace(f"### Paired effects on {label}", f"### Against the best plain loss: {label}", 1)
    if vs_floor:
        text += "\n" + effects_mod.markdown(vs_floor, EFFECT_METRIC, label).replace(
            f"### Paired effects on {label}", f"### Against the `{floor}` row: {label}", 1
        )
    return text


def tuned_section(tuning: dict | None) -> str:
    """The settings a ``tune`` run chose per method, with its budget (empty for a plain run)."""
    if not tuning or not tuning.get("best") and not tuning.get("untuned"):
        return ""
    protocol = tuning.get("protocol")
    where = (protocol if protocol == "every protocol on its own"
             else f"`{protocol}`, its settings used for every protocol")
    lines = [
        f"### Chosen settings ({tuning['trials']} trials x {tuning['folds']} validation folds "
        f"per method, searched on {where}; folds: the protocol's validation forms or "
        "class-disjoint folds of its training classes; objective: mean validation MAP@R; test "
        "data never seen while tuning)",
        "",
        "Each method's test cells were trained with its chosen settings (the rest as in the "
        "config; `results.json`: `metadata.tuning.best`).",
        "",
        "| method | validation MAP@R | best trial | settings |",
        "|---|---:|---:|---|",
    ]
    for name, b in (tuning.get("best") or {}).items():
        settings = ", ".join(
            f"`{k}`={v:.3g}" if isinstance(v, float) else f"`{k}`={v}"
            for k, v in b["params"].items()
        )
        lines.append(f"| {name} | {b['value']:.3f} | {b['best_trial']} | {settings} |")
    for name in tuning.get("untuned") or []:
        lines.append(f"| {name} | — | — | untuned (config settings) |")
    return "\n".join(lines) + "\n"


def _epochs_text(training: dict) -> str:
    """``60`` or ``zero_shot 60, superclass 50`` (``training.protocol_epochs``)."""
    per = training.get("protocol_epochs") or {}
    if not per:
        return str(training["epochs"])
    return ", ".join(f"{k} {v}" for k, v in per.items()) + f" (others {training['epochs']})"


def markdown_table(
    agg: dict,
    protocols_desc: dict,
    skipped: dict,
    method_order: list[str],
    floor_name: str | None = None,
) -> str:
    """The table per protocol; ▲ marks rows whose mean MAP@R is above the ``floor_name`` row."""
    lines = []
    for protocol, rows in agg.items():
        lines.append(f"### {protocol}")
        if protocol in protocols_desc:
            lines.append("")
            lines.append(protocols_desc[protocol])
        lines.append("")
        with_collapse = any("collapse" in r for r in rows.values())
        header = ["method", *[METRIC_LABELS[m] for m in TABLE_METRICS],
                  *([COLLAPSE_LABEL] if with_collapse else []), "seeds"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        floor = rows.get(floor_name, {}).get("mean_average_precision_at_r")
        for method in [m for m in method_order if m in rows]:
            row = rows[method]
            name = method
            if (
                floor is not None
                and method != floor_name
                and "mean_average_precision_at_r" in row
                # as displayed: a row that prints the same value as the floor is not above it
                and round(row["mean_average_precision_at_r"]["mean"], 3) > round(floor["mean"], 3)
            ):
                name += " ▲"
            cells = [_fmt(row.get(m), m) for m in TABLE_METRICS]
            if with_collapse:
                cells.append(_fmt_collapse(row.get("collapse")))
            lines.append("| " + " | ".join([name, *cells, str(len(row["seeds"]))]) + " |")
        lines.append("")
    if floor_name is not None and any(r.get(floor_name) for r in agg.values()):
        lines.append(
            f"▲ = mean MAP@R above the `{floor_name}` row (raw inputs, L2-normalised) "
            "of the same protocol."
        )
        lines.append("")
    if any("collapse" in r for rows in agg.values() for r in rows.values()):
        lines.append(
            f"{COLLAPSE_LABEL}: the last epoch's MAP@R minus the best along the curve of the "
            "tests during training (`evaluation.interval`), mean over seeds [95 % t-interval]; "
            "0 = still at its best. The table's other columns are the last epoch's."
        )
        lines.append("")
    if skipped:
        lines.append("Skipped methods:")
        for name, why in skipped.items():
            lines.append(f"- `{name}`: {why}")
        lines.append("")
    return "\n".join(lines)


def _provenance(sessions: list[dict]) -> str:
    """A warning when the cells of a resumed run were computed at several commits or on several
    devices, with which session computed how many; "" otherwise."""
    worked = [s for s in sessions if s.get("cells_computed")]
    commits = {s.get("commit") for s in worked}
    devices = {s.get("device") for s in worked}
    if len(commits) <= 1 and len(devices) <= 1:
        return ""
    lines = ["", "**mixed provenance: the cells were computed in several sessions:**", ""]
    for s in worked:
        lines.append(
            f"- {s.get('started_utc')}: {len(s['cells_computed'])} cell(s), commit "
            f"{s.get('commit')}, device {s.get('device')}: `{s.get('command')}`"
        )
    return "\n".join(lines) + "\n"


def environment(device: str) -> dict:
    import pytorch_metric_learning
    import torch

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pytorch_metric_learning": pytorch_metric_learning.__version__,
    }
    for mod in ("pml_anticollapse", "faiss", "sklearn", "record_keeper", "numpy"):
        try:
            versions[mod] = getattr(__import__(mod), "__version__", "unknown")
        except ImportError:
            versions[mod] = None
    info = {
        "device": device,
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return {"versions": versions, "hardware": info}


def plot(
    agg: dict,
    cells: list[dict],
    method_order: list[str],
    out_dir: str,
    floor_name: str | None = None,
    baselines: dict | None = None,
) -> list[str]:
    """Per protocol: the spectrum of each method (mean over seeds), the metrics with error bars,
    and the curves of the tests during training when the cells have them. ``baselines``:
    {method: its config's ``baseline``}, which picks the colour families."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    colours = method_colours(method_order, baselines or {}, floor_name)
    for protocol, rows in agg.items():
        methods = [m for m in method_order if m in rows]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        spectra = {}
        for method in methods:
            specs = [
                np.asarray(c["spectrum"])
                for c in cells
                if c["protocol"] == protocol and c["method"] == method
            ]
            n = min(len(s) for s in specs)
            s = np.mean([x[:n] for x in specs], axis=0)
            spectra[method] = s / s.sum()  # normalised over the whole spectrum
        # the x-axis spans the learned embeddings' dimension; the raw inputs' longer spectrum
        # (one value per pixel) is cut there, and its label says so
        learned = [len(v) for k, v in spectra.items() if k != floor_name]
        shown = max(learned) if learned else max(len(v) for v in spectra.values())
        for method, p in spectra.items():
            label = method
            if len(p) > shown:
                label += f" (first {shown} of {len(p)} shown)"
            ax.semilogy(
                np.arange(1, min(len(p), shown) + 1),
                p[:shown],
                label=label,
                lw=2 if method == floor_name else 1.3,
                ls="--" if method == floor_name else "-",
                color=colours.get(method, "black"),
            )
        ax.set_xlim(0.5, shown + 0.5)
        ax.set_ylim(bottom=1e-4)  # below that: numerically zero directions (constant pixels)
        ax.set_xlabel("index of the singular value")
        ax.set_ylabel("singular value / sum of all (mean over seeds)")
        ax.set_title(f"{protocol}: singular-value spectrum of the test embeddings")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        p = os.path.join(out_dir, f"spectrum_{protocol}.png")
        _save_fig(fig, p)
        plt.close(fig)
        written.append(p)

        metrics = [m for m in TABLE_METRICS if m != "effective_rank"]
        fig, ax = plt.subplots(figsize=(max(7, 0.7 * len(methods) + 2), 4.5))
        width = 0.8 / len(metrics)
        x = np.arange(len(methods))
        for i, m in enumerate(metrics):
            means = [rows[k].get(m, {}).get("mean", np.nan) for k in methods]
            stds = [rows[k].get(m, {}).get("std", 0.0) for k in methods]
            ax.bar(
                x + (i - (len(metrics) - 1) / 2) * width,
                means,
                width,
                yerr=stds,
                capsize=2,
                label=METRIC_LABELS[m],
            )
        ax.set_xticks(x)
        ax.set_xticklabels(methods, rotation=45, ha="right", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{protocol}: metrics (mean ± std over seeds)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = os.path.join(out_dir, f"metrics_{protocol}.png")
        _save_fig(fig, p)
        plt.close(fig)
        written.append(p)

        p = plot_curves(protocol, rows, cells, methods, colours, out_dir, floor_name)
        if p:
            written.append(p)
    return written


#: Colour families of the curves figure: a baseline (and a method that is nobody's variant)
#: gets one, its variants darker and lighter shades of it.
FAMILIES = ("Blues", "Oranges", "Greens", "Reds", "Purples", "YlOrBr", "PuRd", "Greys", "BuGn",
            "RdPu")


def method_colours(method_order: list[str], baselines: dict, floor_name: str | None) -> dict:
    """{method: colour}: each family (a method with no ``baseline`` and the methods naming it as
    theirs) shades one matplotlib sequential colour map; the floor row is black."""
    import matplotlib

    heads = [m for m in method_order if m != floor_name and not baselines.get(m)]
    for m in method_order:  # a baseline that is not itself a row still heads its family
        b = baselines.get(m)
        if b and b not in heads:
            heads.append(b)
    out = {floor_name: "black"} if floor_name else {}
    for i, head in enumerate(heads):
        cmap = matplotlib.colormaps[FAMILIES[i % len(FAMILIES)]]
        members = [head] + [m for m in method_order if baselines.get(m) == head]
        shades = np.linspace(0.85, 0.45, len(members)) if len(members) > 1 else [0.75]
        for m, shade in zip(members, shades, strict=True):
            out[m] = cmap(float(shade))
    return out


def curves_of(cells: list[dict], protocol: str, method: str, key: str):
    """(epochs, values: seeds × epochs) of ``key`` along the curves of one row, over the epochs
    every seed tested (None when no cell of the row has a curve)."""
    curves = [c["curve"] for c in cells
              if c["protocol"] == protocol and c["method"] == method and c.get("curve")]
    if not curves:
        return None
    epochs = sorted(set.intersection(*({e["epoch"] for e in cv if key in e} for cv in curves)))
    values = np.array([[next(e[key] for e in cv if e["epoch"] == ep) for ep in epochs]
                       for cv in curves], dtype=np.float64)
    return np.asarray(epochs), values


def plot_curves(protocol: str, rows: dict, cells: list[dict], methods: list[str],
                colours: dict, out_dir: str, floor_name: str | None) -> str | None:
    """``curves_<protocol>.png``: MAP@R and the query embeddings' effective rank against the
    epoch, one line per method (mean over seeds, band min–max over seeds), the floor row's MAP@R
    as a dashed horizontal line. None (no file) when no cell of the protocol has a curve."""
    import matplotlib.pyplot as plt

    panels = (("mean_average_precision_at_r", "MAP@R (test)"),
              ("effective_rank", "effective rank of the test embeddings"))
    drawn = [m for m in methods if curves_of(cells, protocol, m, panels[0][0]) is not None]
    if not drawn:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, (key, ylabel) in zip(axes, panels, strict=True):
        for method in drawn:
            got = curves_of(cells, protocol, method, key)
            if got is None or not len(got[0]):
                continue
            epochs, values = got
            colour = colours.get(method)
            ax.plot(epochs, values.mean(axis=0), color=colour, lw=1.6, marker="o", ms=3,
                    label=f"{method} (n={values.shape[0]})")
            if values.shape[0] > 1:
                ax.fill_between(epochs, values.min(axis=0), values.max(axis=0), color=colour,
                                alpha=0.18, lw=0)
        floor = rows.get(floor_name, {}).get(key) if floor_name else None
        if floor is not None and key == EFFECT_METRIC:
            ax.axhline(floor["mean"], color="black", ls="--", lw=1.2,
                       label=f"{floor_name} (no training)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].set_title("MAP@R: line = mean over seeds, band = min–max", fontsize=10)
    axes[1].set_title("effective rank (query): mean over seeds, band = min–max", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.suptitle(f"{protocol}: tests during training")
    fig.tight_layout()
    p = os.path.join(out_dir, f"curves_{protocol}.png")
    _io.save_figure(fig, p, bbox_inches="tight")
    plt.close(fig)
    return p


def _save_fig(fig, path: str) -> None:
    _io.save_figure(fig, path)


def build_report(run_dir: str, run_info: dict, make_plots: bool = True) -> str:
    """Write table.md, results.json and the plots of ``run_dir``; return the Markdown table."""
    plan = [tuple(x) for x in run_info["plan"]]
    cells = load_cells(run_dir, plan)
    method_order = []
    for _, m, _ in plan:
        if m not in method_order:
            method_order.append(m)
    agg = aggregate(cells)
    floor_name = floor_method(run_info)
    table = markdown_table(
        agg, run_info.get("protocols", {}), run_info.get("skipped", {}), method_order, floor_name
    )
    missing = [
        list(p)
        for p in plan
        if not os.path.exists(os.path.join(run_dir, "cells", p[0], p[1], f"seed{p[2]}.json"))
    ]
    sessions = run_info.get("sessions") or [{"command": run_info.get("command", "")}]
    hw = run_info.get("environment", {}).get("hardware", {})
    header = (
        f"# Benchmark: {run_info['config'].get('name')}\n\n"
        f"command: `{sessions[-1]['command']}`  \n"
        f"started: {run_info.get('started_utc')}; wall time: {run_info.get('wall_seconds')} s "
        f"over {len(sessions)} session(s)  \n"
        f"commit: {run_info.get('commit')}; device: {run_info.get('device')} "
        f"({hw.get('cpu', '?')}, {hw.get('cpu_count')} CPUs, {hw.get('torch_threads')} torch "
        f"threads); seeds: {run_info.get('seeds')}; "
        f"epochs: {_epochs_text(run_info['config']['training'])}\n"
    )
    header += _provenance(sessions)
    if missing:
        header += f"\n**incomplete run: {len(missing)} of {len(plan)} cells missing**\n"
    declared_pairs, floor_pairs = comparison_pairs(run_info)
    declared = effects_mod.pair_effects(cells, declared_pairs, [EFFECT_METRIC, "effective_rank"])
    vs_floor = effects_mod.pair_effects(cells, floor_pairs, [EFFECT_METRIC])
    choice = plain_choice(run_info, dict.fromkeys(c["protocol"] for c in cells))
    vs_best = vs_best_plain(cells, run_info, choice)
    declared, vs_best = holm_family(declared, vs_best)  # one family, Holm-adjusted
    text = header + "\n" + table
    parts = [effects_section(declared, vs_floor, floor_name, vs_best, choice),
             tuned_section(run_info.get("tuning"))]
    for part in filter(None, parts):
        text += "\n" + part.rstrip("\n") + "\n"
    _io.atomic_write_text(os.path.join(run_dir, "table.md"), text)
    results = {
        "metadata": {
            "commit": run_info.get("commit"),
            "command": run_info.get("command"),
            "started_utc": run_info.get("started_utc"),
            "sessions": run_info.get("sessions"),
            "report_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
            "device": run_info.get("device"),
            "seeds": run_info.get("seeds"),
            "wall_seconds": run_info.get("wall_seconds"),
            **run_info.get("environment", {}),
            "config": run_info["config"],
            "skipped": run_info.get("skipped", {}),
            "provenance": run_info.get("provenance", {}),
            "missing_cells": missing,
            "tuning": run_info.get("tuning"),
            "argv": sys.argv,
        },
        "summary": agg,
        "paired_effects": declared,
        "effects_vs_floor": vs_floor,
        "effects_vs_best_plain": vs_best,
        "best_plain": choice,
        "results": cells,
    }
    _io.atomic_write_json(os.path.join(run_dir, "results.json"), results)
    if make_plots and cells:
        baselines = {m["name"]: m.get("baseline")
                     for m in run_info.get("config", {}).get("methods", [])}
        plot(agg, cells, method_order, run_dir, floor_name, baselines)
        label = METRIC_LABELS[EFFECT_METRIC]
        effects_mod.plot(declared, EFFECT_METRIC, label, os.path.join(run_dir, "effects.png"))
    return text
