"""``python -m benchmarks``: the command line of the harness."""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import sys
import time

import torch

from .. import _shared as _io
from . import config as config_mod
from . import registry, report, train

EPILOG = """\
examples:
  python -m benchmarks           # digits, 2 protocols, 13 methods, 3 seeds (< 3 min, 2 CPU cores)
  python -m benchmarks --smoke   # every method, 1 seed, 2 iterations (seconds)
  python -m benchmarks --methods no_learning triplet triplet+ac --seeds 0 1 2 3 4
  python -m benchmarks --dataset cub --data-root ~/data   # local CUB-200-2011, never downloads
  python -m benchmarks --report-only --output DIR         # rebuild the report of a run folder

A killed run restarted with the same command resumes from the last finished epoch of each cell.
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Anti-collapse benchmark on pytorch-metric-learning's trainers and testers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        help="YAML config (default: benchmarks/harness/configs/default.yaml, "
        "or configs/<dataset>.yaml with --dataset)",
    )
    p.add_argument(
        "--dataset", choices=config_mod.DATASETS, help="dataset (real ones need --data-root)"
    )
    p.add_argument("--data-root", help="local root of the real dataset; nothing is downloaded")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default from config: 0 1 2)")
    p.add_argument("--epochs", type=int, help="training epochs per cell")
    p.add_argument("--methods", nargs="+", help="run only these methods (names from the config)")
    p.add_argument("--protocols", nargs="+", help="run only these protocols (digits)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument(
        "--output", help="run folder (default: benchmarks/results/runs/<config name>[-smoke])"
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="1 seed, 1 epoch, 2 iterations: checks the whole pipeline",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set training.lr_trunk=3e-4 (value parsed as YAML)",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="delete the run folder first instead of resuming (only a folder that holds a run)",
    )
    p.add_argument(
        "--report-only", action="store_true", help="rebuild the report of --output without training"
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--list-methods", action="store_true", help="print the methods of the config and exit"
    )
    p.add_argument(
        "--progress",
        choices=("all", "cells", "none"),
        default=None,
        help="tqdm bars: all (cells, training, evaluation), cells only, or none "
        "(default: all on a terminal, cells otherwise)",
    )
    return p.parse_args(argv)


def resolve_config(args) -> dict:
    if args.config:
        path = args.config
    elif args.dataset and args.dataset != "digits":
        path = os.path.join(config_mod.CONFIG_DIR, f"{args.dataset}.yaml")
    else:
        path = config_mod.DEFAULT_CONFIG
    cfg = config_mod.load_config(path)
    if args.dataset:
        cfg["dataset"]["name"] = args.dataset
    if args.data_root:
        cfg["dataset"]["root"] = os.path.expanduser(args.data_root)
    if args.seeds:
        cfg["seeds"] = list(args.seeds)
    if args.epochs is not None:
        cfg["training"]["epochs"] = args.epochs
    if args.device:
        cfg["device"] = args.device
    if args.threads is not None:
        cfg["threads"] = args.threads
    if args.smoke:  # before --set, so that an explicit --set wins
        cfg["name"] = cfg["name"] + "-smoke"
        if not args.seeds:
            cfg["seeds"] = [0]
        if args.epochs is None:
            cfg["training"]["epochs"] = 1
        cfg["training"]["iterations_per_epoch"] = 2
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set must be KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        config_mod.set_dotted(cfg, key, config_mod.parse_value(value))
    config_mod.validate_config(cfg)
    return cfg


def pick_device(name: str) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available")
    return dev


def _check_buildable(method: dict, cfg: dict, protocol) -> None:
    """Build the method's loss and miner once, so that a bad argument stops the run before it
    starts rather than in the middle of it."""
    if method.get("no_learning"):
        return
    context = {
        "num_classes": protocol.num_train_classes,
        "embedding_size": cfg["model"]["embedding_size"],
    }
    try:
        registry.build(method["loss"], context)
        registry.build(method.get("miner"), context)
    except (TypeError, ValueError) as e:
        raise ValueError(f"method {method['name']!r}: {e}") from e


def _prepare_run_dir(run_dir: str, cfg: dict, fresh: bool) -> None:
    """Create (or, with ``fresh``, empty) the run folder and pin its configuration.

    ``--fresh`` deletes only a folder that is empty or holds a benchmark run: never an arbitrary
    folder that an ``--output`` typo pointed at.
    """
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ValueError(f"--output {run_dir!r} exists and is not a folder")
    ident_path = os.path.join(run_dir, "config_identity.json")
    if fresh and os.path.isdir(run_dir) and os.listdir(run_dir):
        if not any(os.path.exists(os.path.join(run_dir, f)) for f in RUN_MARKERS):
            raise ValueError(
                f"--fresh would delete {run_dir!r}, which holds no benchmark run (no "
                f"{' or '.join(RUN_MARKERS)}); refusing. Pick another --output."
            )
        shutil.rmtree(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    ident = config_mod.identity(cfg)
    if os.path.exists(ident_path):
        if _io.read_json(ident_path) != ident:
            raise SystemExit(
                f"{run_dir} holds a run with another configuration; resume it with the same "
                "command, or pass --fresh (deletes it) or another --output"
            )
    else:
        _io.atomic_write_json(ident_path, ident)


#: Where runs go unless ``--output`` says otherwise (the one results root of the benchmarks).
RESULTS_ROOT = os.path.join("benchmarks", "results", "runs")

#: Files that mark a folder as a benchmark run (``--fresh`` deletes only such folders).
RUN_MARKERS = ("config_identity.json", "run.json")


def _quiet_inner_bars(show: bool) -> None:
    """PML's trainer and tester draw their own tqdm bars; make them transient (or hide them)."""
    import functools
    import types

    import tqdm as tqdm_mod
    from pytorch_metric_learning.testers import base_tester
    from pytorch_metric_learning.trainers import base_trainer

    shim = types.SimpleNamespace(
        tqdm=functools.partial(tqdm_mod.tqdm, leave=False, disable=not show)
    )
    base_trainer.tqdm = shim
    base_tester.tqdm = shim


def main(argv=None) -> int:
    args = parse_args(argv)
    import warnings

    # PML's trainer formats its tqdm description from a tensor that requires grad
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True")
    command = " ".join(
        [
            "python -m benchmarks",
            *(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
        ]
    )
    if args.report_only:
        if not args.output:
            raise SystemExit("--report-only needs --output RUN_DIR")
        run_json = os.path.join(args.output, "run.json")
        if not os.path.isfile(run_json):
            raise ValueError(f"--report-only: {args.output!r} holds no run (no run.json)")
        info = _io.read_json(run_json)
        print(report.build_report(args.output, info, make_plots=not args.no_plots))
        return 0

    cfg = resolve_config(args)
    if args.list_methods:
        for m in cfg["methods"]:
            why = None if m.get("no_learning") else registry.check_available(m)
            print(
                f"{m['name']:28s} {'(skipped: ' + why + ')' if why else m.get('description', '')}"
            )
        return 0

    # Everything that can be checked is checked before the output folder is touched.
    device = pick_device(cfg.get("device"))
    from .data import build_protocols

    protocols = build_protocols(cfg)
    if args.protocols:
        unknown = set(args.protocols) - set(protocols)
        if unknown:
            raise ValueError(f"--protocols: unknown {sorted(unknown)}; known: {sorted(protocols)}")
        protocols = {k: v for k, v in protocols.items() if k in args.protocols}
    methods = cfg["methods"]
    if args.methods:
        names = list(dict.fromkeys(args.methods))  # a name given twice runs once
        methods = [config_mod.method_by_name(cfg, n) for n in names]
    skipped = {}
    runnable = []
    for m in methods:
        why = None if m.get("no_learning") else registry.check_available(m)
        if why:
            skipped[m["name"]] = why
            print(f"[benchmarks] skipping method {m['name']!r}: {why}", file=sys.stderr)
        else:
            _check_buildable(m, cfg, next(iter(protocols.values())))
            runnable.append(m)

    if not runnable:
        raise ValueError(
            "no method can run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())
        )

    run_dir = args.output or os.path.join(RESULTS_ROOT, cfg["name"])
    _prepare_run_dir(run_dir, cfg, fresh=args.fresh)

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
        try:  # faiss (kNN, k-means for NMI) has its own OpenMP pool
            import faiss

            faiss.omp_set_num_threads(int(cfg["threads"]))
        except (ImportError, AttributeError):
            pass
    if args.progress is None:
        args.progress = "all" if sys.stderr.isatty() else "cells"
    _quiet_inner_bars(args.progress == "all")

    plan = [(p, m["name"], s) for p in protocols for m in runnable for s in cfg["seeds"]]
    run_json = os.path.join(run_dir, "run.json")
    sessions = _io.read_json(run_json).get("sessions", []) if os.path.exists(run_json) else []
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    commit = report.git_commit()
    session = {
        "command": command,
        "started_utc": now,
        "wall_seconds": 0.0,  # updated after every cell: a killed session keeps what it did
        "commit": commit,
        "device": str(device),
        "cells_computed": [],
    }
    sessions.append(session)
    info = {
        "config": cfg,
        "plan": plan,
        "skipped": skipped,
        "protocols": {k: v.description for k, v in protocols.items()},
        "command": command,
        "commit": commit,
        "device": str(device),
        "seeds": cfg["seeds"],
        "started_utc": sessions[0]["started_utc"],
        "sessions": sessions,  # one entry per invocation: a resumed run keeps its history
        "environment": report.environment(str(device)),
    }
    _io.atomic_write_json(run_json, info)

    import tqdm

    t0 = time.perf_counter()
    by_name = {m["name"]: m for m in runnable}
    bar = tqdm.tqdm(plan, desc="cells", disable=args.progress == "none", dynamic_ncols=True)
    for protocol, name, seed in bar:
        bar.set_postfix_str(f"{protocol}/{name}/seed{seed}")
        done = os.path.exists(train.cell_paths(run_dir, protocol, name, seed)["result"])
        res = train.run_cell(cfg, run_dir, protocols[protocol], by_name[name], seed, device)
        map_r = res["metrics"]["mean_average_precision_at_r"]
        bar.set_postfix_str(f"{protocol}/{name}/seed{seed} MAP@R={map_r:.3f}")
        if not done:
            session["cells_computed"].append(f"{protocol}/{name}/seed{seed}")
            session["wall_seconds"] = round(time.perf_counter() - t0, 3)
            _io.atomic_write_json(run_json, info)
    session["wall_seconds"] = round(time.perf_counter() - t0, 3)
    info["wall_seconds"] = round(sum(s.get("wall_seconds") or 0.0 for s in sessions), 1)
    _io.atomic_write_json(run_json, info)
    text = report.build_report(run_dir, info, make_plots=not args.no_plots)
    print(text)
    print(
        f"[benchmarks] {len(plan)} cells in {sessions[-1]['wall_seconds']} s; report in {run_dir}/ "
        "(table.md, results.json, spectrum_*.png, metrics_*.png, records/)"
    )
    return 0


def run(argv=None) -> int:
    """``main`` as the command line runs it: a bad config, option or data root ends with one
    ``error:`` line instead of a traceback."""
    try:
        return main(argv)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"python -m benchmarks: error: {e}")
