"""How accurate float32 is: the coding rate over a conditioning sweep, against float64.

Run from the repository root::

    python -m benchmarks.speed --accuracy-sweep              # the speed grid, a few minutes
    python -m benchmarks.speed --accuracy-sweep --smoke      # seconds

Inputs: rows = one shared direction + σ·noise (float64, then rounded to float32), from well
spread (σ = 10: cosine ≈ 0.01 between rows) to nearly collapsed (σ = 0.01: cosine ≈ 0.9999),
at every ε² from 1e-4 to 10 (the scale a = d/(m·ε²) spans five decades). For each grid point and
σ, the worst relative error over the ε² of

- the value and the gradient (norm-wise) of ``coding_rate`` on the float32 input,
- the same with ``compute_dtype=torch.float64`` (float32 in and out, float64 arithmetic), and
- the same of the naive formula (float32 ``torch.logdet`` of the d×d matrix, through autograd),

both against the float64 eigenvalue reference of ``implementations.reference_rate_and_grad``
fed the same float32 input (so the rounding of the input is not counted against either).

Outputs in ``--out``: ``accuracy_sweep.json`` and ``accuracy_sweep.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pml_anticollapse.functional import coding_rate

from .._shared import atomic_write_json, atomic_write_text, cpu_model, git_commit
from .implementations import ACCURACY_RTOL, rate_naive, reference_rate_and_grad, rel_err

SIGMAS = (10.0, 3.0, 1.0, 0.3, 0.1, 0.01)
EPS_SQS = (1e-4, 1e-3, 1e-2, 0.1, 0.5, 1.0, 10.0)
SMOKE = dict(grid=((24, 96), (96, 24)), sigmas=(10.0, 0.1), eps_sqs=(1e-2, 10.0))


def near_collapsed(m: int, d: int, sigma: float, seed: int = 0) -> torch.Tensor:
    """(m, d) float32 rows: a shared random direction + σ·Gaussian noise (built in float64)."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(1, d, generator=gen, dtype=torch.float64)
    return (base + sigma * torch.randn(m, d, generator=gen, dtype=torch.float64)).float()


def relative_errors(fn, z: torch.Tensor, value_ref: torch.Tensor, grad_ref: torch.Tensor):
    """Relative errors of ``fn``'s value and gradient at ``z`` against the references (inf for
    NaN: a failed formula counts as the worst)."""
    x = z.clone().requires_grad_(True)
    value = fn(x)
    (grad,) = torch.autograd.grad(value, x)
    value_err = abs(value.double().item() - value_ref.item()) / abs(value_ref.item())
    grad_err = rel_err(grad, grad_ref)
    # NaN (a failed formula) must count as the worst, not vanish in max()
    return tuple(e if math.isfinite(e) else math.inf for e in (value_err, grad_err))


def mean_cosine(z: torch.Tensor) -> float:
    """Mean cosine similarity between distinct rows (how collapsed the batch is)."""
    x = torch.nn.functional.normalize(z.double(), dim=1)
    m = x.shape[0]
    s = x.sum(0)
    return float((s @ s - m) / (m * (m - 1)))


def run_sweep(
    grid: Sequence[tuple[int, int]], sigmas: Sequence[float], eps_sqs: Sequence[float]
) -> list[dict]:
    """One row per (grid point, σ): the worst errors over ``eps_sqs`` and the ε² where ours is
    worst."""
    rows = []
    with tqdm(total=len(grid) * len(sigmas) * len(eps_sqs), desc="accuracy sweep") as bar:
        for m, d in grid:
            for sigma in sigmas:
                z = near_collapsed(m, d, sigma)
                worst = dict(ours_value=0.0, ours_grad=0.0, naive_value=0.0, naive_grad=0.0,
                             ours64_value=0.0, ours64_grad=0.0)
                worst_eps_sq = None
                for eps_sq in eps_sqs:
                    value_ref, grad_ref = reference_rate_and_grad(z, eps_sq)
                    refs = (z, value_ref, grad_ref)
                    # each lambda is called at once, inside this iteration (eps_sq bound anyway)
                    ov, og = relative_errors(lambda t, e=eps_sq: coding_rate(t, eps_sq=e), *refs)
                    nv, ng = relative_errors(lambda t, e=eps_sq: rate_naive(t, e), *refs)
                    wv, wg = relative_errors(
                        lambda t, e=eps_sq: coding_rate(t, eps_sq=e, compute_dtype=torch.float64),
                        *refs,
                    )
                    if og >= worst["ours_grad"]:
                        worst_eps_sq = eps_sq
                    for key, err in (("ours_value", ov), ("ours_grad", og),
                                     ("naive_value", nv), ("naive_grad", ng),
                                     ("ours64_value", wv), ("ours64_grad", wg)):
                        worst[key] = max(worst[key], err)
                    bar.update()
                rows.append(dict(m=m, d=d, sigma=sigma, mean_cosine=mean_cosine(z),
                                 worst_eps_sq_ours_grad=worst_eps_sq, **worst))
    return rows


def _table(title: str, first: str, grid, sigmas, cell, label) -> list[str]:
    """One σ × grid-point table: ``cell(m, d, sigma)`` and the row label ``label(sigma)``."""
    lines = [title, ""] if title else []
    lines += ["| " + first + " | " + " | ".join(f"{m}×{d}" for m, d in grid) + " |",
              "|---|" + "---:|" * len(grid)]
    for sigma in sigmas:
        lines.append(f"| {label(sigma)} | " + " | ".join(cell(m, d, sigma) for m, d in grid) + " |")
    return lines


def markdown(report: dict) -> str:
    md = report["metadata"]
    rows = report["rows"]
    grid = list(dict.fromkeys((r["m"], r["d"]) for r in rows))
    sigmas = list(dict.fromkeys(r["sigma"] for r in rows))
    by = {(r["m"], r["d"], r["sigma"]): r for r in rows}

    def grad_cell(m, d, sigma):
        r = by[(m, d, sigma)]
        ours = f"{r['ours_grad']:.1e}"
        ours = f"**{ours}**" if r["ours_grad"] <= ACCURACY_RTOL else ours
        return f"{ours} ({r['naive_grad']:.0e})"

    def cosine_label(sigma):
        return f"{sigma:g} ({by[(grid[0][0], grid[0][1], sigma)]['mean_cosine']:.2f})"

    lines = [
        "# float32 accuracy over a conditioning sweep",
        "",
        f"Commit {md['commit']}, {md['date']}, {md['cpu']}, torch {md['torch']}. Worst relative "
        f"error over ε² ∈ {{{', '.join(f'{e:g}' for e in md['eps_sqs'])}}} against the float64 "
        "eigenvalue reference on the same float32 input: gradient of ours (naive float32 "
        f"`logdet` in brackets); **bold** where ours is ≤ {ACCURACY_RTOL:g}.",
        "",
    ]
    lines += _table("", "σ (mean cosine)", grid, sigmas, grad_cell, cosine_label)
    lines += [""] + _table(
        "Values, worst relative error of ours (naive in brackets):", "σ", grid, sigmas,
        lambda m, d, s: f"{by[(m, d, s)]['ours_value']:.1e} ({by[(m, d, s)]['naive_value']:.0e})",
        lambda s: f"{s:g}",
    )
    lines += [""] + _table(
        "`compute_dtype=torch.float64` (float32 in and out): worst relative error of the "
        "gradient / the value:", "σ", grid, sigmas,
        lambda m, d, s: f"{by[(m, d, s)]['ours64_grad']:.1e} / {by[(m, d, s)]['ours64_value']:.1e}",
        lambda s: f"{s:g}",
    )
    return "\n".join(lines) + "\n"


def main(out: Path, smoke: bool, grid: Sequence[tuple[int, int]] | None, argv: Sequence[str],
         default_grid: Sequence[tuple[int, int]]) -> dict:
    import datetime as dt

    if smoke:
        grid, sigmas, eps_sqs = grid or SMOKE["grid"], SMOKE["sigmas"], SMOKE["eps_sqs"]
    else:
        grid, sigmas, eps_sqs = grid or default_grid, SIGMAS, EPS_SQS
    rows = run_sweep(grid, sigmas, eps_sqs)
    report = {
        "metadata": dict(
            commit=git_commit(short=True), date=dt.date.today().isoformat(), cpu=cpu_model(),
            torch=torch.__version__, threads=torch.get_num_threads(), argv=list(argv),
            sigmas=list(sigmas), eps_sqs=list(eps_sqs),
        ),
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "accuracy_sweep.json", report)
    text = markdown(report)
    atomic_write_text(out / "accuracy_sweep.md", text)
    print(text, end="")
    print(f"[speed] wrote {out}/accuracy_sweep.json, accuracy_sweep.md")
    return report
