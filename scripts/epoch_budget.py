"""The epoch budget of each protocol, read off a finished validation run (glyphs_validation.yaml).

    python -m scripts.epoch_budget RUN_DIR [--out budget.md] [--figure budget.png]

Criterion (stated in the config before the run): the budget of a protocol family is the first
tested epoch E at which every plain baseline's validation MAP@R, averaged over the family's
validation forms, gained less than ``--gain`` (0.01) over the ``--window`` (10) epochs before E.
A family that never meets it gets the horizon (the last tested epoch), said as such.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

FAMILIES = {"zero_shot": "zs_fold", "superclass": "superclass_val"}
PLAIN = ("contrastive", "margin", "proxy_anchor")


def families(results: list[dict], gain: float, window: int) -> list[dict]:
    """Per protocol family with curves: its validation forms, plain methods, tested epochs, the
    plain methods' MAP@R averaged over the forms per epoch, and the budget (``met``: whether the
    criterion chose it, else it is the horizon)."""
    curves: dict = {}
    for r in results:
        if r.get("curve"):
            curves[(r["protocol"], r["method"])] = {
                e["epoch"]: e["mean_average_precision_at_r"] for e in r["curve"]}
    out = []
    for family, prefix in FAMILIES.items():
        forms = sorted({p for p, _ in curves if p.startswith(prefix)})
        methods = [m for m in PLAIN if all((p, m) in curves for p in forms)]
        if not forms or not methods:
            continue
        epochs = sorted(set.intersection(*(set(curves[(p, m)]) for p in forms for m in methods)))
        mean = {m: {e: float(np.mean([curves[(p, m)][e] for p in forms])) for e in epochs}
                for m in methods}
        met = [e for e in epochs if e - window in epochs
               and all(mean[m][e] - mean[m][e - window] < gain for m in methods)]
        out.append({"family": family, "forms": forms, "methods": methods, "epochs": epochs,
                    "mean": mean, "budget": met[0] if met else epochs[-1], "met": bool(met)})
    return out


def budget_table(results: list[dict], gain: float, window: int) -> str:
    lines = [f"Criterion: first tested epoch E with MAP@R(E) − MAP@R(E − {window}) < {gain} for "
             f"every plain baseline ({', '.join(PLAIN)}), MAP@R averaged over the validation "
             "forms.", ""]
    for f in families(results, gain, window):
        epochs, mean, methods, budget = f["epochs"], f["mean"], f["methods"], f["budget"]
        chosen = (f"**{budget}**" if f["met"] else
                  f"**{budget}** (criterion not met within the {budget}-epoch horizon)")
        lines += [f"### {f['family']} ({', '.join(f['forms'])}): budget {chosen}", "",
                  "| epoch | " + " | ".join(f"{m} MAP@R (gain over {window})" for m in methods)
                  + " |", "|---:|" + "---:|" * len(methods)]
        for e in epochs:
            if e % window and e != epochs[-1] and not (f["met"] and e == budget):
                continue
            cells = [f"{mean[m][e]:.3f}" + (f" ({mean[m][e] - mean[m][e - window]:+.3f})"
                                            if e - window in epochs else "") for m in methods]
            lines.append(f"| {e} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def budget_figure(results: list[dict], gain: float, window: int, path: str) -> bool:
    """One panel per protocol family: each plain baseline's validation MAP@R (mean over the
    forms) against epoch, the chosen budget as a dashed line; False when there is no curve."""
    fams = families(results, gain, window)
    if not fams:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(fams), figsize=(5.2 * len(fams), 3.4), squeeze=False)
    for ax, f in zip(axes[0], fams, strict=True):
        for m in f["methods"]:
            ax.plot(f["epochs"], [f["mean"][m][e] for e in f["epochs"]], marker=".", label=m)
        how = "criterion met" if f["met"] else "horizon: criterion not met"
        ax.axvline(f["budget"], color="black", ls="--", lw=1,
                   label=f"budget {f['budget']} ({how})")
        ax.set_title(f"{f['family']}: validation ({', '.join(f['forms'])})", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation MAP@R (mean over forms)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    from benchmarks._shared import save_figure

    save_figure(fig, path)
    plt.close(fig)
    return True


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.epoch_budget")
    p.add_argument("run_dir")
    p.add_argument("--gain", type=float, default=0.01)
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--out", help="also write the table to this file")
    p.add_argument("--figure", help="also draw the validation curves and budgets to this PNG")
    a = p.parse_args(argv)
    path = os.path.join(a.run_dir, "results.json")
    if not os.path.isfile(path):
        print(f"epoch_budget: RUN_DIR {a.run_dir} has no results.json (a finished run folder "
              "of configs/glyphs_validation.yaml is expected)", file=sys.stderr)
        return 2
    with open(path, encoding="utf-8") as f:
        results = json.load(f)["results"]
    text = budget_table(results, a.gain, a.window)
    print(text)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write("# Epoch budget of the glyph main job, chosen on validation\n\n" + text)
    if a.figure and not budget_figure(results, a.gain, a.window, a.figure):
        print("no validation curves: no figure drawn", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
