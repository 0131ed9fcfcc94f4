"""The speed report: the targets, the Markdown tables, the ratio plot, two runs side by side."""

from __future__ import annotations

import json
from pathlib import Path

from .implementations import ACCURACY_RTOL, IMPLS
from .machine import loadavg


def check_targets(results: list[dict], accuracy: list[dict], training: list[dict]) -> dict:
    """The issue's targets, evaluated on this run (CPU, float32, fwd+bwd for the ratios)."""
    rows = [
        r
        for r in results
        if r["device"] == "cpu"
        and r["precision"] == "float32"
        and r["pass"] == "fwd+bwd"
        and r["impl"] == "naive"
    ]
    wide = [r for r in rows if 4 * r["m"] <= r["d"]]
    acc = [a for a in accuracy if a["impl"] == "ours" and a["precision"] == "float32"]
    trained = [t for t in training if "ratio" in t]
    return {
        "naive_over_ours_ge_5_where_m_le_d_over_4": (
            all(r["ratio_vs_ours"] >= 5 for r in wide) if wide else None
        ),
        "naive_over_ours_ge_1_everywhere": (
            all(r["ratio_vs_ours"] >= 1 for r in rows) if rows else None
        ),
        "float32_matches_float64_reference": all(
            a.get("value_rel_err", 1.0) <= ACCURACY_RTOL
            and a.get("grad_rel_err", 1.0) <= ACCURACY_RTOL
            for a in acc
        ),
        "training_overhead_le_5pct": all(t["ratio"] <= 1.05 for t in trained) if trained else None,
    }


def check_class_target(classes: list[dict]) -> bool | None:
    """``MCR2Loss(num_classes=C)`` within 2× of ``num_classes=None`` at the same size."""
    rows = [c for c in classes if c["num_classes"] is not None and "ratio_vs_none" in c]
    return all(c["ratio_vs_none"] <= 2.0 for c in rows) if rows else None


def config_label(row: dict, md: dict | None = None) -> str:
    """'1 thr, cpu': the configuration a row was timed in (older files: the run's only one)."""
    if "threads" in row:
        return f"{row['threads']} thr, {row['clock']}"
    clock = "cpu" if "thread" in str(md.get("clock", "")) else "wall"
    return f"{md.get('threads')} thr, {clock}"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def markdown(report: dict) -> str:
    md = report["metadata"]
    lines = [
        "# Coding-rate speed",
        "",
        f"Command: `{md['command']}`  ",
        f"Date: {md['date']}, commit `{md['commit']}`, torch {md['versions']['torch']}; "
        "configurations (intra-op threads, clock): "
        + "; ".join(f"{c['threads']} thr, {c['clock']}" for c in md["configs"])
        + " (cpu: thread CPU time, wall: wall clock)  ",
        "Hardware: " + "; ".join(f"{k}: {v}" for k, v in md["device"].items())
        + f"; vendor {md['cpu_vendor']}; BLAS {md['linalg_backend']['blas']}, LAPACK "
        f"{md['linalg_backend']['lapack']} (MKL {md['linalg_backend']['mkl_version']}); "
        f"CPU features {md['cpu_features']}  ",
        f"Load average (1 min) before/after: {md.get('loadavg_before')} / "
        f"{md.get('loadavg_after')}",
        "",
        "Median (IQR) in ms; ratio = baseline median / ours median (higher: ours faster).",
        "",
        "| config | device | precision | m×d | pass | ours | naive logdet | naive/ours "
        "| cholesky autograd | chol/ours |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_key: dict[tuple, dict[str, dict]] = {}
    for r in report["results"]:
        key = (config_label(r, md), r["device"], r["precision"], r["m"], r["d"], r["pass"])
        by_key.setdefault(key, {})[r["impl"]] = r
    for (cfg, dev, prec, m, d, pass_), impls in by_key.items():
        cells = []
        for name in IMPLS:
            r = impls.get(name)
            if r is None:
                cells.append("n/a")
                if name != "ours":
                    cells.append("n/a")
                continue
            cells.append(f"{ms(r['median_s'])} ({ms(r['iqr_s'])})")
            if name != "ours":
                cells.append(f"{r['ratio_vs_ours']:.2f}" if "ratio_vs_ours" in r else "n/a")
        lines.append(
            f"| {cfg} | {dev} | {prec} | {m}×{d} | {pass_} | " + " | ".join(cells) + " |"
        )
    f64 = [(k, v) for k, v in by_key.items() if "ours_float64" in v and "ratio_vs_ours" in (
        v["ours_float64"])]
    if f64:
        lines += [
            "",
            "Ours with `compute_dtype=torch.float64` (`--with-float64`): its time, its cost over "
            "float32 ours, and naive / it:",
            "",
            "| config | device | precision | m×d | pass | ours float64 | / ours | naive / it |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for (cfg, dev, prec, m, d, pass_), impls in f64:
            r64 = impls["ours_float64"]
            naive = impls.get("naive")
            vs_naive = f"{naive['median_s'] / r64['median_s']:.2f}" if naive else "n/a"
            lines.append(
                f"| {cfg} | {dev} | {prec} | {m}×{d} | {pass_} | {ms(r64['median_s'])} | "
                f"{r64['ratio_vs_ours']:.2f} | {vs_naive} |"
            )
    lines += [
        "",
        "Accuracy against the float64 eigenvalue reference (relative; gradient norm-wise):",
        "",
        "| device | precision | m×d | impl | value rel. err | grad rel. err |",
        "|---|---|---|---|---|---|",
    ]
    for a in report["accuracy"]:
        if "error" in a:
            errs = f"{a['error'][:60]} | "
        else:
            errs = f"{a['value_rel_err']:.1e} | {a['grad_rel_err']:.1e}"
        lines.append(
            f"| {a['device']} | {a['precision']} | {a['m']}×{a['d']} | {a['impl']} | {errs} |"
        )
    if report.get("ops"):
        ops = list(dict.fromkeys(o["op"] for o in report["ops"]))
        cfg_shapes = list(dict.fromkeys((config_label(o), o["m"], o["d"]) for o in report["ops"]))
        med = {(config_label(o), o["m"], o["d"], o["op"]): o["median_s"] for o in report["ops"]}
        lines += [
            "",
            "Op level (CPU, float32, median ms): the m > d backward's linear algebra, "
            "k = d, M = I + a·xᵀx (k×k), L its Cholesky factor:",
            "",
            "| op | " + " | ".join(f"{m}×{d} ({c})" for c, m, d in cfg_shapes) + " |",
            "|---|" + "---:|" * len(cfg_shapes),
        ]
        for op in ops:
            cells = [ms(med[(c, m, d, op)]) for c, m, d in cfg_shapes]
            lines.append(f"| `{op}` | " + " | ".join(cells) + " |")
    if report.get("classes"):
        lines += [
            "",
            "MCR2Loss forward + backward, 2 samples per class (absent classes must cost nothing):",
            "",
            "| config | m×d | num_classes | median ms (IQR) | ratio vs num_classes=None |",
            "|---|---|---|---|---|",
        ]
        for c in report["classes"]:
            ratio = f"{c['ratio_vs_none']:.2f}" if "ratio_vs_none" in c else "n/a"
            lines.append(
                f"| {config_label(c)} | {c['m']}×{c['d']} | {c['num_classes']} "
                f"| {ms(c['median_s'])} ({ms(c['iqr_s'])}) | {ratio} |"
            )
    lines += [
        "",
        "Training step (forward, ContrastiveLoss, backward, Adam), median of interleaved steps:",
        "",
        "| model | device | batch × input | without (ms) | PML plumbing only (ms) "
        "| with regularizer (ms) | ratio with/without | paired ratio | plumbing/without "
        "| with/plumbing |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in report["training"]:
        if "skipped" in t:
            lines.append(
                f"| {t['model']} [{config_label(t, md)}] | {t['device']} | "
                f"| skipped: {t['skipped']} | | | | | | |"
            )
        else:
            lines.append(
                f"| {t['model']} [{config_label(t, md)}] | {t['device']} "
                f"| {t['batch']}×{'×'.join(map(str, t['input']))} "
                f"| {ms(t['without_median_s'])} | {ms(t['plumbing_median_s'])} "
                f"| {ms(t['with_median_s'])} | {t['ratio']:.3f} | {t['paired_ratio_median']:.3f} "
                f"| {t['plumbing_ratio']:.3f} | {t['term_over_plumbing_ratio']:.3f} |"
            )
    lines += [
        "",
        "PML plumbing only: the same loss with a PML regularizer that computes nothing "
        "(0·x[0, 0]), i.e. what PML charges for any `embedding_regularizer` before it computes.",
    ]
    targets = {k: v for k, v in report["targets"].items() if k != "by_config"}
    lines += ["", "Targets (all configurations): "
              + ", ".join(f"{k}: {v}" for k, v in targets.items())]
    for cfg, t in report["targets"].get("by_config", {}).items():
        lines.append(f"- {cfg}: " + ", ".join(f"{k}: {v}" for k, v in t.items()))
    lines.append("")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> bool:
    """Bar chart of naive/ours and cholesky-autograd/ours (fwd+bwd) per grid point; False if
    matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    md = report["metadata"]
    panels = sorted(
        {
            (config_label(r, md), r["device"], r["precision"])
            for r in report["results"]
            if r["pass"] == "fwd+bwd"
        },
        key=lambda p: (p[0], p[1], p[2] != "float32", p[2]),  # float32 first on each device
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (cfg, dev, prec) in zip(axes[0], panels, strict=True):
        rows = [
            r
            for r in report["results"]
            if (config_label(r, md), r["device"], r["precision"]) == (cfg, dev, prec)
            and r["pass"] == "fwd+bwd"
        ]
        points = sorted({(r["m"], r["d"]) for r in rows}, key=lambda p: (p[1] / p[0]), reverse=True)
        labels = [f"{m}×{d}" for m, d in points]
        for offset, name in ((-0.2, "naive"), (0.2, "cholesky_autograd")):
            ratio = {
                (r["m"], r["d"]): r.get("ratio_vs_ours", float("nan"))
                for r in rows
                if r["impl"] == name
            }
            ax.bar(
                [i + offset for i in range(len(points))],
                [ratio.get(p, float("nan")) for p in points],
                width=0.4,
                label=f"{name} / ours",
            )
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(5.0, color="r", lw=0.8, ls="--", label="5× (target where m ≤ d/4)")
        ax.set_yscale("log")
        ax.set_xticks(range(len(points)), labels, rotation=30)
        ax.set_ylabel("time ratio (fwd+bwd)")
        ax.set_title(f"{dev}, {prec}, {cfg}")
        ax.legend(fontsize=8)
    fig.suptitle(f"coding rate, commit {report['metadata']['commit']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def compare(path_a: Path, path_b: Path) -> str:
    """Two ``speed.json`` files side by side: per grid point (fwd+bwd), naive/ours and
    cholesky-autograd/ours of every configuration of each file, and each file's machine."""
    reports = []
    for path in (path_a, path_b):
        try:
            report = json.loads(Path(path).read_text())
            report["metadata"], report["results"]  # noqa: B018 — the two keys every file has
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(
                f"--compare: cannot read a speed result from {str(path)!r}: {exc}"
            ) from exc
        reports.append(report)
    cols = []  # (label, {key: {impl: ratio}})
    lines = ["# Speed results side by side", ""]
    for tag, path, report in zip("AB", (path_a, path_b), reports, strict=True):
        md = report["metadata"]
        lines.append(
            f"- {tag}: `{path}` — commit {md.get('commit')}, {md.get('date')}, "
            f"{md.get('device', {}).get('cpu', md.get('cpu_model'))}, vendor "
            f"{md.get('cpu_vendor', 'not recorded')}, BLAS "
            f"{(md.get('linalg_backend') or {}).get('blas', 'not recorded')}"
        )
        by_cfg: dict[str, dict] = {}
        for r in report["results"]:
            if r["pass"] != "fwd+bwd" or "ratio_vs_ours" not in r or r["impl"] == "ours":
                continue
            key = (r["device"], r["precision"], r["m"], r["d"])
            cell = by_cfg.setdefault(config_label(r, md), {}).setdefault(key, {})
            cell[r["impl"]] = r["ratio_vs_ours"]
        cols += [(f"{tag} {cfg}", cells) for cfg, cells in by_cfg.items()]
    keys = list(dict.fromkeys(k for _, cells in cols for k in cells))
    lines += [
        "",
        "fwd+bwd time ratios, baseline / ours (higher: ours faster); naive · cholesky-autograd:",
        "",
        "| device | precision | m×d | " + " | ".join(label for label, _ in cols) + " |",
        "|---|---|---|" + "---|" * len(cols),
    ]

    def fmt(cell: dict | None) -> str:
        if not cell:
            return "—"
        return " · ".join(
            f"{cell[i]:.2f}" if i in cell else "—" for i in ("naive", "cholesky_autograd")
        )

    for key in keys:
        dev, prec, m, d = key
        cells = " | ".join(fmt(c.get(key)) for _, c in cols)
        lines.append(f"| {dev} | {prec} | {m}×{d} | {cells} |")
    return "\n".join(lines) + "\n"


def finish(report, results, accuracy, training, ops, classes, targets_by_config) -> None:
    """Fill ``report`` with what has been measured so far and the targets over it."""
    report["metadata"]["loadavg_after"] = loadavg()
    report["results"], report["accuracy"], report["training"] = results, accuracy, training
    report["ops"], report["classes"] = ops, classes
    combined = {}
    for k in dict.fromkeys(k for t in targets_by_config.values() for k in t):
        known = [t[k] for t in targets_by_config.values() if t.get(k) is not None]
        combined[k] = all(known) if known else None  # met in every configuration measured
    combined["mcr2_num_classes_within_2x_of_none"] = check_class_target(classes)
    combined["by_config"] = dict(targets_by_config)
    report["targets"] = combined
