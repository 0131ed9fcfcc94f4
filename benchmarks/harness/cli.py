"""``python -m benchmarks``: the command line of the harness.

:func:`main` reads top to bottom: parse the options; resolve and check the config; plan the run
(device, protocols, methods; every check that can fail happens here, before the run folder is
touched); start the process (threads, PML's logger and bars); open the run folder; run the
cells; write the report.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shlex
import shutil
import signal
import sys
import time

import torch

from .. import _shared as _io
from . import config as config_mod
from . import datasets, registry, report, train
from .datasets import ProtocolData

EPILOG = """\
examples:
  python -m benchmarks           # the glyph benchmark: 200 kanji x 17 fonts, 11 methods, 3 seeds
  python -m benchmarks --smoke   # every method, 1 seed, 2 iterations (seconds)
  python -m benchmarks --dataset digits                   # sklearn digits, 13 methods (~1 min)
  python -m benchmarks --font-dir ~/Library/Fonts         # glyphs from any folder of fonts
  python -m benchmarks tune --dataset digits              # equal-budget search, then the table
  python -m benchmarks --methods no_learning triplet triplet+coding_rate --seeds 0 1 2 3 4
  python -m benchmarks --dataset cub --data-root ~/data   # local CUB-200-2011, never downloads
  python -m benchmarks --report-only --output DIR         # rebuild the report of a run folder
  python -m benchmarks --help-config                      # every config key, type and default

A killed run restarted with the same command resumes from the last finished epoch of each cell.
Ctrl-C (or SIGTERM) stops it with the command that resumes it; a damaged file in the run folder is
named and recovered from; one run folder is used by one process at a time (<run>/.lock).
"""

#: Where runs go unless ``--output`` says otherwise (the one results root of the benchmarks).
RESULTS_ROOT = os.path.join("benchmarks", "results", "runs")

#: Files that mark a folder as a benchmark run (``--fresh`` deletes only such folders).
RUN_MARKERS = ("config_identity.json", "run.json")

#: The lock file of a run folder (``fcntl.flock``, held while a process uses the folder).
LOCK_NAME = ".lock"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Anti-collapse benchmark on pytorch-metric-learning's trainers and testers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        help="YAML config (default: benchmarks/harness/configs/glyphs.yaml, "
        "or configs/<dataset>.yaml with --dataset)",
    )
    p.add_argument(
        "--dataset", choices=datasets.dataset_names(), help="dataset (real ones need --data-root)"
    )
    p.add_argument("--data-root", help="local root of the real dataset; nothing is downloaded")
    p.add_argument(
        "--font-dir",
        help="glyphs: render from this folder of .ttf/.otf/.ttc files instead of the pinned "
        "Debian font set (= --set dataset.font_dir=DIR)",
    )
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default from config: 0 1 2)")
    p.add_argument("--epochs", type=int, help="training epochs per cell")
    p.add_argument("--methods", nargs="+", help="run only these methods (names from the config)")
    p.add_argument("--protocols", nargs="+", help="run only these protocols")
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
        "--help-config",
        action="store_true",
        help="print every config key (type, default, meaning) and the registered datasets, "
        "protocols and models, then exit",
    )
    p.add_argument(
        "--progress",
        choices=("all", "cells", "none"),
        default=None,
        help="tqdm bars: all (cells, training, evaluation), cells only, or none "
        "(default: all on a terminal, cells otherwise)",
    )
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- config


def resolve_config(args) -> config_mod.Config:
    """The config file (``--config``, else the preset of ``--dataset``, else the default) with
    the command line's overrides, checked against the schema."""
    if args.config:
        path = args.config
    elif args.dataset:
        path = os.path.join(config_mod.CONFIG_DIR, f"{args.dataset}.yaml")
    else:
        path = config_mod.DEFAULT_CONFIG
    raw = config_mod.read_config(path)
    if args.dataset and (raw.get("dataset") or {}).get("name", "digits") != args.dataset:
        raw["dataset"] = {"name": args.dataset}  # another dataset: none of the old options
    if args.data_root:
        raw.setdefault("dataset", {})["root"] = os.path.expanduser(args.data_root)
    if args.font_dir:
        raw.setdefault("dataset", {})["font_dir"] = os.path.expanduser(args.font_dir)
    if args.seeds:
        raw["seeds"] = list(args.seeds)
    training = raw.setdefault("training", {})
    if args.epochs is not None:
        training["epochs"] = args.epochs
    if args.device:
        raw["device"] = args.device
    if args.threads is not None:
        raw["threads"] = args.threads
    if args.smoke:  # before --set, so that an explicit --set wins
        raw["name"] = str(raw.get("name", config_mod.Config.name)) + "-smoke"
        if not args.seeds:
            raw["seeds"] = [0]
        if args.epochs is None:
            training["epochs"] = 1
        training["iterations_per_epoch"] = 2
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set must be KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        config_mod.set_dotted(raw, key, config_mod.parse_value(value))
    return config_mod.parse_config(raw)


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


# ----------------------------------------------------------------------------- plan


@dataclasses.dataclass
class Plan:
    """What a run does, fully checked: the cells are (protocol, method, seed) in this order."""

    cfg: config_mod.Config
    device: torch.device
    protocols: dict[str, ProtocolData]
    methods: list[config_mod.MethodSpec]
    skipped: dict[str, str]

    @property
    def cells(self) -> list[tuple[str, str, int]]:
        seeds = self.cfg.seeds
        return [(p, m.name, s) for p in self.protocols for m in self.methods for s in seeds]

    @property
    def provenance(self) -> dict:
        return {k: v.provenance for k, v in self.protocols.items() if v.provenance}


def _check_buildable(method: config_mod.MethodSpec, cfg, protocol: ProtocolData) -> None:
    """Build the method's loss and miner once, so that a bad argument stops the run before it
    starts rather than in the middle of it."""
    if method.no_learning:
        return
    try:
        train.build_loss_and_miner(cfg, method, protocol.num_train_classes)
    except (TypeError, ValueError) as e:
        raise ValueError(f"method {method.name!r}: {e}") from e


def make_plan(cfg: config_mod.Config, args) -> Plan:
    """Device, protocols (built: their data are read here) and runnable methods; raises before
    anything is written."""
    device = pick_device(cfg.device)
    protocols = datasets.build(cfg.dataset)
    if args.protocols:
        unknown = set(args.protocols) - set(protocols)
        if unknown:
            raise ValueError(f"--protocols: unknown {sorted(unknown)}; known: {sorted(protocols)}")
        protocols = {k: v for k, v in protocols.items() if k in args.protocols}
    methods = cfg.methods
    if args.methods:
        methods = [cfg.method(n) for n in dict.fromkeys(args.methods)]  # a name given twice: once
    skipped, runnable = {}, []
    for m in methods:
        why = None if m.no_learning else registry.check_available(m)
        if why:
            skipped[m.name] = why
            print(f"[benchmarks] skipping method {m.name!r}: {why}", file=sys.stderr)
        else:
            _check_buildable(m, cfg, next(iter(protocols.values())))
            runnable.append(m)
    if not runnable:
        raise ValueError(
            "no method can run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())
        )
    return Plan(cfg, device, protocols, runnable, skipped)


# ----------------------------------------------------------------------------- process + folder


def start_process(cfg: config_mod.Config, progress: str) -> None:
    """Process-wide settings, made once the run is known to be valid: CPU threads (torch and
    faiss's own OpenMP pool), PML's logger and progress bars, one warning filter."""
    import warnings

    from . import pml2

    # PML's trainer formats its tqdm description from a tensor that requires grad
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
        try:
            import faiss

            faiss.omp_set_num_threads(int(cfg.threads))
        except (ImportError, AttributeError):
            pass
    pml2.configure(show_inner_bars=progress == "all")


#: Whether this process has started writing a run folder (for the Ctrl-C line).
_STARTED = False


def lock_run_dir(run_dir: str) -> None:
    """Lock ``run_dir`` for this process (:func:`benchmarks._shared.lock_folder` on
    ``<run_dir>/.lock``): a folder that another process uses is a ``ValueError`` naming it."""
    _io.lock_folder(run_dir, LOCK_NAME, what="run folder")


def unlock_run_dir(run_dir: str) -> None:
    _io.unlock_folder(run_dir)


def check_writable(run_dir: str) -> None:
    """The run folder and the folders a run writes into exist as folders and are writable."""
    for sub in ("", "cells", "records", "work"):
        path = os.path.join(run_dir, sub) if sub else run_dir
        if os.path.exists(path) and not (
            os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)
        ):
            raise ValueError(f"--output {run_dir!r}: {path} is not a writable folder")


def drop_partial_writes(run_dir: str) -> None:
    """Delete the temporary files (``.tmp-*``) of writes that a killed process left half done:
    their complete version was never renamed into place. Called under the lock (no writer)."""
    partial = [os.path.join(d, f) for d, _, files in os.walk(run_dir) for f in files
               if f.startswith(".tmp-")]
    for path in partial:
        os.remove(path)
    if partial:
        train.log(f"removed {len(partial)} partial write(s) (.tmp-*) that a killed run left "
                  f"in {run_dir}")


def copy_extra_files(plan: Plan, run_dir: str) -> None:
    """Copy each protocol's ``extra_files`` (e.g. the glyphs' sample grid) into the run folder."""
    for data in plan.protocols.values():
        for name, src in data.extra_files.items():
            if os.path.isfile(src):
                with open(src, "rb") as f:
                    _io.atomic_write_bytes(os.path.join(run_dir, name), f.read())


def prepare_run_dir(run_dir: str, identity: dict, fresh: bool) -> None:
    """Create (or, with ``fresh``, empty) the run folder, lock it (:func:`lock_run_dir`) and pin
    its configuration.

    ``--fresh`` deletes only a folder that is empty or holds a benchmark run: never an arbitrary
    folder that an ``--output`` typo pointed at. A damaged ``config_identity.json`` is an error
    naming it: it pins the configuration, so it is not guessed.
    """
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ValueError(f"--output {run_dir!r} exists and is not a folder")
    ident_path = os.path.join(run_dir, "config_identity.json")
    entries = set(os.listdir(run_dir)) - {LOCK_NAME} if os.path.isdir(run_dir) else set()
    if fresh and entries and not any(f in entries for f in RUN_MARKERS):
        raise ValueError(
            f"--fresh would delete {run_dir!r}, which holds no benchmark run (no "
            f"{' or '.join(RUN_MARKERS)}); refusing. Pick another --output."
        )
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--output {run_dir!r}: cannot create the folder ({e.strerror})") from e
    check_writable(run_dir)
    lock_run_dir(run_dir)
    global _STARTED
    _STARTED = True
    if fresh:  # under the lock, which stays (deleting it would let a second process in)
        for entry in set(os.listdir(run_dir)) - {LOCK_NAME}:
            path = os.path.join(run_dir, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    drop_partial_writes(run_dir)
    if os.path.exists(ident_path):
        try:
            pinned = _io.read_json(ident_path)
        except _io.DamagedFileError as e:
            raise ValueError(
                f"{e}. It pins the configuration of the run in {run_dir}, so it is not guessed: "
                "restore it from a backup, or pass --fresh (deletes the run) or another --output"
            ) from None
        if pinned != identity:
            raise SystemExit(
                f"{run_dir} holds a run with another configuration or other data; resume it with "
                "the same command, or pass --fresh (deletes it) or another --output"
            )
    else:
        _io.atomic_write_json(ident_path, identity)


class RunLog:
    """``run.json``: the plan, the environment and one entry per session (a resumed run keeps
    its history); rewritten atomically after every computed cell."""

    def __init__(self, run_dir: str, plan: Plan, command: str):
        self.path = os.path.join(run_dir, "run.json")
        sessions = self._earlier_sessions()
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        commit = report.git_commit()
        self.session = {
            "command": command,
            "started_utc": now,
            "wall_seconds": 0.0,  # updated after every cell: a killed session keeps what it did
            "commit": commit,
            "device": str(plan.device),
            "cells_computed": [],
        }
        sessions.append(self.session)
        self.info = {
            "config": plan.cfg.to_dict(),
            "plan": plan.cells,
            "skipped": plan.skipped,
            "protocols": {k: v.description for k, v in plan.protocols.items()},
            "provenance": plan.provenance,
            "command": command,
            "commit": commit,
            "device": str(plan.device),
            "seeds": plan.cfg.seeds,
            "started_utc": sessions[0]["started_utc"],
            "sessions": sessions,
            "environment": report.environment(str(plan.device)),
        }
        self.t0 = time.perf_counter()
        self.write()

    def _earlier_sessions(self) -> list:
        """The sessions of ``run.json``; a damaged one is moved aside and rebuilt (said)."""
        if not os.path.exists(self.path):
            return []
        try:
            info = _io.read_json(self.path)
            if not isinstance(info, dict) or not isinstance(info.get("sessions", []), list):
                raise _io.DamagedFileError(self.path, "not a run record (no list of sessions)")
            return info.get("sessions", [])
        except _io.DamagedFileError as e:
            aside = _io.move_aside(self.path)
            train.log(f"{e} (moved to {aside}); rebuilt from this session: the history of "
                      "earlier sessions is lost, their cells are kept")
            return []

    def cell_done(self, key: str) -> None:
        self.session["cells_computed"].append(key)
        self.session["wall_seconds"] = round(time.perf_counter() - self.t0, 3)
        self.write()

    def close(self) -> None:
        self.session["wall_seconds"] = round(time.perf_counter() - self.t0, 3)
        sessions = self.info["sessions"]
        self.info["wall_seconds"] = round(sum(s.get("wall_seconds") or 0.0 for s in sessions), 1)
        self.write()

    def write(self) -> None:
        _io.atomic_write_json(self.path, self.info)


def run_cells(
    plan: Plan, run_dir: str, log: RunLog, progress: str, settings: dict | None = None
) -> None:
    """Run (or read back) every cell of the plan; ``settings`` maps a method's name to the
    (config, method) it trains with when that differs from the plan's (the tuning step's chosen
    settings)."""
    import tqdm

    settings = settings or {}
    by_name = {m.name: settings.get(m.name, (plan.cfg, m)) for m in plan.methods}
    bar = tqdm.tqdm(plan.cells, desc="cells", disable=progress == "none", dynamic_ncols=True)
    for protocol, name, seed in bar:
        key = f"{protocol}/{name}/seed{seed}"
        bar.set_postfix_str(key)
        done = train.is_committed(run_dir, protocol, name, seed)
        cfg, method = by_name[name]
        res = train.run_cell(cfg, run_dir, plan.protocols[protocol], method, seed, plan.device)
        bar.set_postfix_str(f"{key} MAP@R={res['metrics']['mean_average_precision_at_r']:.3f}")
        if not done:
            log.cell_done(key)


def report_only(args) -> int:
    if not args.output:
        raise SystemExit("--report-only needs --output RUN_DIR")
    run_json = os.path.join(args.output, "run.json")
    if not os.path.isfile(run_json):
        raise ValueError(f"--report-only: {args.output!r} holds no run (no run.json)")
    again = "run the run's command again (without --report-only) to recompute it"
    try:
        info = _io.read_json(run_json)
        if not isinstance(info, dict) or not isinstance(info.get("plan"), list):
            raise _io.DamagedFileError(run_json, "not a run record (no plan)")
        for protocol, method, seed in info["plan"]:
            path = train.cell_paths(args.output, protocol, method, seed)["result"]
            if os.path.exists(path):
                train.read_result(path, protocol, method, seed)
    except _io.DamagedFileError as e:
        raise ValueError(f"--report-only: {e}; {again}") from None
    print(report.build_report(args.output, info, make_plots=not args.no_plots))
    return 0


def list_methods(cfg: config_mod.Config) -> int:
    """Print every method with its description, why it would be skipped, or its error (a
    class name that exists nowhere: exit status 1)."""
    status = 0
    for m in cfg.methods:
        try:
            why = None if m.no_learning else registry.check_available(m)
        except ValueError as e:
            print(f"{m.name:28s} (error: {e})")
            status = 1
            continue
        print(f"{m.name:28s} {'(skipped: ' + why + ')' if why else m.description or ''}")
    return status


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.help_config:
        print(config_mod.help_text())
        return 0
    if args.report_only:
        return report_only(args)
    cfg = resolve_config(args)
    if args.list_methods:
        return list_methods(cfg)
    plan = make_plan(cfg, args)  # every check is done before the output folder is touched
    run_dir = args.output or os.path.join(RESULTS_ROOT, cfg.name)
    progress = args.progress or ("all" if sys.stderr.isatty() else "cells")
    start_process(cfg, progress)
    try:
        prepare_run_dir(run_dir, config_mod.identity(cfg, plan.provenance), fresh=args.fresh)
        copy_extra_files(plan, run_dir)
        argv_shown = sys.argv[1:] if argv is None else argv
        command = " ".join(["python -m benchmarks", *(shlex.quote(a) for a in argv_shown)])
        log = RunLog(run_dir, plan, command)
        run_cells(plan, run_dir, log, progress)
        log.close()
        print(report.build_report(run_dir, log.info, make_plots=not args.no_plots))
    finally:
        unlock_run_dir(run_dir)
    print(
        f"[benchmarks] {len(plan.cells)} cells in {log.session['wall_seconds']} s; report in "
        f"{run_dir}/ (table.md, results.json, spectrum_*.png, metrics_*.png, records/)"
    )
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that it stops as Ctrl-C does."""


def _raise_terminated(signum, frame):
    raise Terminated()


def resume_command(argv: list[str]) -> str:
    """The command that resumes a run started with ``argv`` (``--fresh`` left out: it would
    delete what was done)."""
    return " ".join(["python -m benchmarks", *(shlex.quote(a) for a in argv if a != "--fresh")])


def run(argv=None) -> int:
    """``main`` as the command line runs it: a bad config, option, data root or run folder ends
    with one ``error:`` line instead of a traceback; Ctrl-C (exit status 130) and SIGTERM (143)
    end with one line naming the command that resumes the run. ``python -m benchmarks tune ...``
    is the tuning step (``tune.main``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    previous = signal.signal(signal.SIGTERM, _raise_terminated), signal.getsignal(signal.SIGINT)
    held = set(_io.held_locks())
    try:
        if argv[:1] == ["tune"]:
            from . import tune

            return tune.main(argv[1:])
        return main(argv)
    except KeyboardInterrupt as e:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while the line is written
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        what, status = ("terminated (SIGTERM)", 143) if isinstance(e, Terminated) else (
            "interrupted (Ctrl-C)", 130)
        kept = ("every finished epoch is kept; resume with" if _STARTED
                else "nothing was written; run again with")
        print(f"\npython -m benchmarks: {what}; {kept}: {resume_command(argv)}",
              file=sys.stderr, flush=True)
        sys.exit(status)
    except (ValueError, FileNotFoundError, OSError) as e:
        sys.exit(f"python -m benchmarks: error: {e}")
    finally:
        for folder in set(_io.held_locks()) - held:  # e.g. the run folder of the tuning step
            _io.unlock_folder(folder)
        signal.signal(signal.SIGTERM, previous[0])
        if previous[1] is not None:
            signal.signal(signal.SIGINT, previous[1])
