"""Speed of the coding rate against the formulas the anchor code uses, and its training overhead.

Run from the repository root::

    python -m benchmarks.speed                       # full grid, CPU (and CUDA when present)
    python -m benchmarks.speed --threads 1 --timer cpu  # CPU only, robust on a shared machine
    python -m benchmarks.speed --smoke --out /tmp/s  # a few seconds; what CI runs
    python -m benchmarks.speed --threads 1,2 --timer cpu,wall  # both configurations, one run
    python -m benchmarks.speed --ops-only --threads 1 --timer cpu  # the op-level table only
    python -m benchmarks.speed --compare A/speed.json B/speed.json  # two machines side by side
    python -m benchmarks.speed --accuracy-sweep      # float32 against float64, spread → collapsed

Three implementations of the same quantity, R(Z) = ½·logdet(I + d/(m·ε²)·ZZᵀ) of the
L2-normalised rows of an (m, d) batch (ε² = 0.5), timed in the same run:

- ``ours``: :func:`pml_anticollapse.functional.coding_rate` (Cholesky of the smaller Gram matrix,
  hand-written backward pass);
- ``naive``: ½·``torch.logdet`` of the d×d matrix I_d + a·ZᵀZ through autograd, the formula as
  the MCR² reference code, the official ACL code and lightly's ``tcr_loss`` write it;
- ``cholesky_autograd``: ½·logdet from ``torch.linalg.cholesky`` of the smaller Gram matrix, with
  autograd differentiating through the factorisation.

Method: each case is timed with
``torch.utils.benchmark.Timer.blocked_autorange`` (CUDA synchronised by the timer), in
``--rounds`` rounds that interleave the three implementations so that a change in machine load
hits them alike; the per-block times of all rounds are pooled into a median and an IQR. On a
shared machine, ``--threads 1 --timer cpu`` times with the thread's CPU clock
(``time.thread_time``) instead of the wall clock: with one intra-op thread all the work runs on
the calling thread, so other processes competing for the cores no longer inflate the figures
(with several threads, OpenMP barriers turn contention into wall time, mostly in the large
LAPACK calls of the naive baseline, which flatters the ratios). Passes:
``fwd`` (the graph is recorded, as in training) and ``fwd+bwd`` (``torch.autograd.grad``).
Precisions: float32, and bf16 autocast on CPU / fp16 autocast on CUDA (the input stays float32;
``ours`` switches autocast off for its linear algebra, the baselines run as written, so their Gram
product is computed in half precision). Before timing, every case is checked against a float64
eigenvalue reference (value and gradient, relative, norm-wise).

Training-step overhead: one optimisation step (forward, PML ``ContrastiveLoss``, backward, Adam)
of the same model on the same batch without and with ``CodingRateRegularizer`` as the loss's
``embedding_regularizer``, steps interleaved (rotating which goes first), ratio of the medians.
A third arm runs the same step with a PML regularizer that computes nothing, to separate PML's
own per-regularizer cost (module calls, reducer, an extra sub-loss) from the term's.
The digits MLP always; a ResNet-18-shaped network on random 3×224×224 input, batch 64, when
CUDA is present (on the CPU only if asked, at a reduced size: ``--resnet-cpu-size 32``).

Op level (``OPS_SHAPES``): the m > d backward's linear algebra op by op — ``cholesky_solve``
against the n right-hand sides of X against the explicit k×k inverse + one GEMM — so that a
machine's table shows whether its LAPACK's triangular solves are slow (MKL on AMD EPYC: 4–10×
a GEMM of the same size). Absent classes: ``MCR2Loss`` forward + backward at 180×512 with
``num_classes`` None, 11318 (SOP-sized) and 10⁷.

Configurations: ``--threads 1,2 --timer cpu,wall`` measures every section once per (threads,
clock) pair in the same run; every row names its configuration. The metadata records the CPU
model and vendor, the BLAS/LAPACK torch runs on (``torch.__config__``) and the configurations.

Outputs in ``--out``: ``speed.json`` (``{"metadata": ..., "results": [...], "accuracy": [...],
"training": [...], "ops": [...], "classes": [...], "targets": ...}``, rewritten after each
configuration), ``speed.md`` (the tables) and ``speed_ratios.png``.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from .._shared import non_negative_int, positive_float, positive_int
from .implementations import CUDA_EXTRA, FLOAT64_FNS, GRID, OPS_SHAPES, RATE_FNS, SMOKE_GRID
from .machine import loadavg, metadata
from .report import check_targets, compare, finish, markdown, plot
from .timing import CLASS_CASES, TIMERS, bench_classes, bench_device, bench_ops
from .training import bench_training


def parse_grid(text: str) -> list[tuple[int, int]]:
    grid = []
    for item in text.split(","):
        try:
            m, d = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"--grid expects MxD[,MxD...], got {text!r}") from None
        if m < 1 or d < 1:
            raise argparse.ArgumentTypeError(f"--grid sizes must be positive, got {item!r}")
        grid.append((m, d))
    return grid


def int_list(text: str) -> list[int]:
    """'1,2' → [1, 2], each a positive integer."""
    return [positive_int(v) for v in text.split(",")]


def timer_list(text: str) -> list[str]:
    """'cpu,wall' → ['cpu', 'wall'], each a key of ``TIMERS``."""
    out = [v.strip() for v in text.split(",")]
    for v in out:
        if v not in TIMERS:
            raise argparse.ArgumentTypeError(
                f"expected {' or '.join(TIMERS)} (comma-separated), got {text!r}"
            )
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.speed", description=__doc__.split("\n")[0]
    )
    p.add_argument("--smoke", action="store_true", help="tiny grid, short timings (seconds)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/runs/speed"), help="folder")
    p.add_argument("--devices", default=None, help="cpu,cuda (default: cpu, + cuda if present)")
    p.add_argument("--grid", type=parse_grid, default=None, help="e.g. 90x512,1024x64")
    p.add_argument(
        "--threads",
        type=int_list,
        default=[torch.get_num_threads()],
        help="intra-op threads; a list (1,2) measures each in the same run, paired with --timer",
    )
    p.add_argument(
        "--rounds", type=positive_int, default=None, help="interleaved rounds (3; smoke: 1)"
    )
    p.add_argument(
        "--timer",
        type=timer_list,
        default=["wall"],
        help="wall clock or thread CPU time (cpu, needs 1 thread); a list pairs with --threads "
        "(e.g. --threads 1,2 --timer cpu,wall)",
    )
    p.add_argument(
        "--min-run-time", type=positive_float, default=None, help="seconds per autorange (0.1)"
    )
    p.add_argument(
        "--precisions",
        default=None,
        help="comma list of float32, bf16-autocast (CPU) / fp16-autocast (CUDA); default both",
    )
    p.add_argument("--skip-training", action="store_true", help="skip the training-step overhead")
    p.add_argument("--skip-ops", action="store_true", help="skip the op-level table")
    p.add_argument("--skip-classes", action="store_true", help="skip the MCR2Loss num_classes rows")
    p.add_argument(
        "--ops-only", action="store_true", help="only the op-level table (seconds), then exit"
    )
    p.add_argument(
        "--with-float64",
        action="store_true",
        help="also time ours with compute_dtype=torch.float64 (its cost over float32 ours)",
    )
    p.add_argument(
        "--accuracy-sweep",
        action="store_true",
        help="only the float32 accuracy sweep (rows from spread to nearly collapsed, ε² from "
        "1e-4 to 10, ours and naive against float64; minutes, --smoke: seconds), then exit",
    )
    p.add_argument(
        "--resnet-cpu-size",
        type=non_negative_int,
        default=0,
        help="also time the ResNet on CPU at this size (0: not on CPU)",
    )
    p.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("A.json", "B.json"),
        default=None,
        help="print two result files side by side (ratios per grid point) and exit",
    )
    args = p.parse_args(argv)
    if args.compare is not None:
        return args
    if len(args.timer) == 1:
        args.timer = args.timer * len(args.threads)
    elif len(args.threads) == 1:
        args.threads = args.threads * len(args.timer)
    if len(args.timer) != len(args.threads):
        p.error(f"argument --timer: expected 1 or {len(args.threads)} clocks to pair with "
                f"--threads {args.threads}, got {len(args.timer)}")
    # fail now, not after minutes of timing when the results are written
    existing = next(q for q in (args.out, *args.out.parents) if q.exists())
    if not existing.is_dir():
        if existing == args.out:
            p.error(f"argument --out: expected a directory, got {str(args.out)!r}, "
                    "which exists and is not a directory")
        p.error(f"argument --out: expected a directory, got {str(args.out)!r}, which cannot "
                f"be created: {str(existing)!r} exists and is not a directory")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.compare is not None:
        text = compare(*args.compare)
        print(text, end="")
        return {"compare": text}
    if args.accuracy_sweep:
        from .sweep import main as sweep_main

        torch.set_num_threads(args.threads[0])
        return sweep_main(args.out, args.smoke, args.grid, argv, GRID)
    devices = (
        [d.strip() for d in args.devices.split(",")]
        if args.devices is not None
        else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    for dev in devices:
        if dev not in ("cpu", "cuda"):
            raise SystemExit(f"--devices must list cpu and/or cuda, got {dev!r}")
        if dev == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--devices asks for cuda but no CUDA device is available")
    configs = list(zip(args.threads, args.timer, strict=True))
    for threads, clock in configs:
        if clock == "cpu" and (threads != 1 or "cuda" in devices):
            raise SystemExit("--timer cpu needs --threads 1 and the CPU only (--devices cpu)")
    precisions = None
    if args.precisions is not None:
        precisions = [v.strip() for v in args.precisions.split(",")]
        known = {"float32", "bf16-autocast", "fp16-autocast"}
        if not set(precisions) <= known:
            raise SystemExit(f"--precisions must list {', '.join(sorted(known))}, got "
                             f"{args.precisions!r}")
    rounds = args.rounds if args.rounds is not None else (1 if args.smoke else 3)
    min_run_time = (
        args.min_run_time if args.min_run_time is not None else (0.01 if args.smoke else 0.1)
    )
    args.out.mkdir(parents=True, exist_ok=True)

    report = {"metadata": metadata(devices, configs, argv)}
    report["metadata"]["loadavg_before"] = loadavg()
    results, accuracy, training, ops, classes = [], [], [], [], []
    targets_by_config = {}
    for i, (threads, clock) in enumerate(configs):
        torch.set_num_threads(threads)
        cfg = f"{threads} thr, {clock}"
        if "cpu" in devices and not args.skip_ops:
            ops += bench_ops(
                OPS_SHAPES if not args.smoke else ((160, 16),), rounds, min_run_time, threads,
                clock,
            )
        if args.ops_only:
            continue
        cfg_results, cfg_training = [], []
        for dev in devices:
            grid = args.grid if args.grid is not None else (SMOKE_GRID if args.smoke else GRID)
            if dev == "cuda" and not args.smoke and args.grid is None:
                grid = tuple(grid) + CUDA_EXTRA
            print(f"[speed] {dev} ({cfg}): {len(grid)} grid points, {rounds} round(s)", flush=True)
            r, a = bench_device(
                dev, grid, rounds, min_run_time, threads, clock, precisions=precisions,
                fns=FLOAT64_FNS if args.with_float64 else RATE_FNS,
            )
            cfg_results += r
            if i == 0:  # the same numbers in every configuration: checked once
                accuracy += a
            if not args.skip_training:
                for t in bench_training(dev, args.smoke, args.resnet_cpu_size, clock):
                    cfg_training.append(dict(t, threads=threads, clock=clock))
        if "cpu" in devices and not args.skip_classes:
            cases = CLASS_CASES if not args.smoke else ((24, 32, None), (24, 32, 10**7))
            classes += bench_classes(cases, rounds, min_run_time, threads, clock)
        targets_by_config[cfg] = check_targets(cfg_results, accuracy, cfg_training)
        results += cfg_results
        training += cfg_training
        if i + 1 < len(configs):  # a run stopped later keeps what it has measured
            finish(report, results, accuracy, training, ops, classes, targets_by_config)
            (args.out / "speed.json").write_text(json.dumps(report, indent=2))
    finish(report, results, accuracy, training, ops, classes, targets_by_config)

    (args.out / "speed.json").write_text(json.dumps(report, indent=2))
    (args.out / "speed.md").write_text(markdown(report))
    has_png = bool(results) and plot(report, args.out / "speed_ratios.png")
    png = ", speed_ratios.png" if has_png else ""
    print(f"[speed] wrote {args.out}/speed.json, speed.md{png}")
    print("[speed] targets: " + json.dumps(report["targets"]))
    return report


if __name__ == "__main__":
    main()
