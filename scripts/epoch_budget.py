"""The epoch budget of each protocol, read off a finished validation run (glyphs_validation.yaml).

    python -m scripts.epoch_budget RUN_DIR [--out budget.md]

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


def budget_table(results: list[dict], gain: float, window: int) -> str:
    curves: dict = {}
    for r in results:
        if r.get("curve"):
            curves[(r["protocol"], r["method"])] = {
                e["epoch"]: e["mean_average_precision_at_r"] for e in r["curve"]}
    lines = [f"Criterion: first tested epoch E with MAP@R(E) − MAP@R(E − {window}) < {gain} for "
             f"every plain baseline ({', '.join(PLAIN)}), MAP@R averaged over the validation "
             "forms.", ""]
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
        chosen = (f"**{met[0]}**" if met else
                  f"**{epochs[-1]}** (criterion not met within the {epochs[-1]}-epoch horizon)")
        lines += [f"### {family} ({', '.join(forms)}): budget {chosen}", "",
                  "| epoch | " + " | ".join(f"{m} MAP@R (gain over {window})" for m in methods)
                  + " |", "|---:|" + "---:|" * len(methods)]
        for e in epochs:
            if e % window and e != epochs[-1] and e not in met[:1]:
                continue
            cells = [f"{mean[m][e]:.3f}" + (f" ({mean[m][e] - mean[m][e - window]:+.3f})"
                                            if e - window in epochs else "") for m in methods]
            lines.append(f"| {e} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.epoch_budget")
    p.add_argument("run_dir")
    p.add_argument("--gain", type=float, default=0.01)
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--out", help="also write the table to this file")
    a = p.parse_args(argv)
    with open(os.path.join(a.run_dir, "results.json"), encoding="utf-8") as f:
        results = json.load(f)["results"]
    text = budget_table(results, a.gain, a.window)
    print(text)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write("# Epoch budget of the glyph main job, chosen on validation\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
