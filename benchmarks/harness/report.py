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


def aggregate(cells: list[dict]) -> dict:
    """{protocol: {method: {metric: (mean, std, n)}}}; std is the sample std (ddof=1; 0 for n=1)."""
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
            row["seeds"] = sorted(c["seed"] for c in cs)
            agg[protocol][method] = row
    return agg


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


def effects_section(declared: list[dict], vs_floor: list[dict], floor: str | None) -> str:
    label = METRIC_LABELS[EFFECT_METRIC]
    text = effects_mod.markdown(declared, EFFECT_METRIC, label)
    if vs_floor:
        text += "\n" + effects_mod.markdown(vs_floor, EFFECT_METRIC, label).replace(
            f"### Paired effects on {label}", f"### Against the `{floor}` row: {label}", 1
        )
    return text


def tuned_section(tuning: dict | None) -> str:
    """The settings a ``tune`` run chose per method, with its budget (empty for a plain run)."""
    if not tuning or not tuning.get("best") and not tuning.get("untuned"):
        return ""
    lines = [
        f"### Chosen settings ({tuning['trials']} trials x {tuning['folds']} class-disjoint "
        f"folds of the training classes of `{tuning.get('protocol')}` per method; objective: "
        "mean validation MAP@R; test classes never seen while tuning)",
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
        header = ["method", *[METRIC_LABELS[m] for m in TABLE_METRICS], "seeds"]
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
            lines.append("| " + " | ".join([name, *cells, str(len(row["seeds"]))]) + " |")
        lines.append("")
    if floor_name is not None and any(r.get(floor_name) for r in agg.values()):
        lines.append(
            f"▲ = mean MAP@R above the `{floor_name}` row (raw inputs, L2-normalised) "
            "of the same protocol."
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
) -> list[str]:
    """Per protocol: the spectrum of each method (mean over seeds), the metrics with error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for protocol, rows in agg.items():
        methods = [m for m in method_order if m in rows]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        colors = plt.get_cmap("tab20")
        for i, method in enumerate(methods):
            specs = [
                np.asarray(c["spectrum"])
                for c in cells
                if c["protocol"] == protocol and c["method"] == method
            ]
            n = min(len(s) for s in specs)
            s = np.mean([x[:n] for x in specs], axis=0)
            ax.semilogy(
                np.arange(1, n + 1),
                s / s.sum(),
                label=method,
                lw=2 if method == floor_name else 1,
                ls="--" if method == floor_name else "-",
                color=colors(i % 20),
            )
        ax.set_ylim(bottom=1e-4)  # below that: numerically zero directions (constant pixels)
        ax.set_xlabel("index")
        ax.set_ylabel("normalised singular value")
        ax.set_title(f"{protocol}: singular-value spectrum of test embeddings")
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
    return written


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
        f"epochs: {run_info['config']['training']['epochs']}\n"
    )
    header += _provenance(sessions)
    if missing:
        header += f"\n**incomplete run: {len(missing)} of {len(plan)} cells missing**\n"
    declared_pairs, floor_pairs = comparison_pairs(run_info)
    declared = effects_mod.pair_effects(cells, declared_pairs, [EFFECT_METRIC, "effective_rank"])
    vs_floor = effects_mod.pair_effects(cells, floor_pairs, [EFFECT_METRIC])
    text = header + "\n" + table
    parts = [effects_section(declared, vs_floor, floor_name), tuned_section(run_info.get("tuning"))]
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
        "results": cells,
    }
    _io.atomic_write_json(os.path.join(run_dir, "results.json"), results)
    if make_plots and cells:
        plot(agg, cells, method_order, run_dir, floor_name)
        label = METRIC_LABELS[EFFECT_METRIC]
        effects_mod.plot(declared, EFFECT_METRIC, label, os.path.join(run_dir, "effects.png"))
    return text
