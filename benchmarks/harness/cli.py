"""``python -m benchmarks [tune]``: the command line. It parses, resolves the config and
dispatches to the runner (:mod:`runner`) or the search (:mod:`search`); a bad option, config, data
root or run folder ends with one ``error:`` line, and Ctrl-C or SIGTERM with one line naming the
command that resumes the run.

Under torchrun every rank runs this same command line; rank 0 alone prints the report and the
resume line (or none, when ``python -m benchmarks.launch`` started the ranks: it prints one line
for all of them).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys

from .. import _shared as _io
from . import config as config_mod
from . import datasets, ranks, runner

EPILOG = """\
examples:
  python -m benchmarks           # the glyph benchmark, one process
  bash scripts/benchmark.sh      # the same on every core (torchrun; set-up included)
  python -m benchmarks --smoke   # every method, 1 seed, 2 iterations (seconds)
  python -m benchmarks --dataset digits                   # sklearn digits, 13 methods (~1 min)
  python -m benchmarks --font-dir ~/Library/Fonts         # glyphs from any folder of fonts
  python -m benchmarks tune --dataset digits --protocols zero_shot   # search, then the table
  python -m benchmarks --methods no_learning triplet triplet+coding_rate --seeds 0 1 2 3 4
  python -m benchmarks --dataset cub --data-root ~/data   # local CUB-200-2011, never downloads
  python -m benchmarks --report-only --output DIR         # rebuild the report of a run folder
  python -m benchmarks --help-config                      # every config key, type and default
  torchrun --standalone --nproc-per-node 4 -m benchmarks  # 4 processes share the cells

A killed run restarted with the same command resumes from the last finished epoch of each cell.
Ctrl-C (or SIGTERM) stops it with the command that resumes it; a damaged file in the run folder is
named and recovered from; one run folder is used by one run at a time (<run>/.lock).
"""

#: Set by ``python -m benchmarks.launch`` for the ranks it starts: it prints the one line that
#: names the failed rank and the command that resumes, so the ranks print none of their own.
LAUNCHER_ENV = "PMLAC_LAUNCHER"


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
    p.add_argument(
        "--threads",
        type=_io.positive_int,
        help="torch CPU threads per process (default: the config's threads, else the usable "
        "CPUs / processes on this machine)",
    )
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



TUNE_EPILOG = """\
examples:
  python -m benchmarks tune --dataset digits --protocols zero_shot --trials 30 --folds 4
  python -m benchmarks tune --smoke                   # 2 trials x 2 folds per method (seconds)
  python -m benchmarks tune --config benchmarks/harness/configs/glyphs.yaml --trials 8 --folds 3

Every other option of `python -m benchmarks` (--config, --dataset, --methods, --seeds, --set,
--output, --device, --threads, --progress, --no-plots) works here too.
"""


def parse_tune_args(argv) -> tuple[argparse.Namespace, argparse.Namespace]:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks tune",
        description="Equal-budget hyperparameter search on validation folds of the training "
        "classes, then the test table with the chosen settings.",
        epilog=TUNE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--trials", type=_shared_positive_int, help="trials per method (default 30)")
    p.add_argument("--folds", type=_shared_positive_int, help="validation folds (default 4)")
    p.add_argument("--fold-seed", type=_seed, default=0,
                   help="seed of the class folds (a protocol with its own validation forms, "
                   "e.g. the glyphs', uses its split_seed instead)")
    p.add_argument("--search-seed", type=_seed, default=0, help="seed of the TPE sampler")
    p.add_argument("--tune-seed", type=_seed, default=0, help="training seed inside a fold")
    p.add_argument(
        "--tune-protocol",
        help="the protocol searched on when tuning.per_protocol is false (default: first); a "
        "run of several protocols needs tuning.per_protocol: true, or --protocols NAME"
    )
    p.add_argument(
        "--allow-untuned",
        action="store_true",
        help="keep methods without a search space at their config settings instead of refusing",
    )
    p.add_argument(
        "--search-only", action="store_true", help="stop after the search (no test table)"
    )
    p.add_argument(
        "--storage",
        help="where the Optuna studies live (default: <run>/tuning/study.sqlite3): any Optuna "
        "RDB URL (postgresql://user@host/db, mysql://..., sqlite:///path) or journal:PATH "
        "(an Optuna journal file); the folds' cells stay in the run folder",
    )
    own, rest = p.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        p.print_help()
        raise SystemExit(0)
    args = parse_args(rest)
    for flag in ("list_methods", "help_config", "report_only"):
        if getattr(args, flag):
            raise ValueError(
                f"tune: --{flag.replace('_', '-')} is an option of `python -m benchmarks`, not of "
                "the search (run it without `tune`)"
            )
    if args.smoke:
        own.trials = own.trials or 2
        own.folds = own.folds or 2
    if own.folds is not None and own.folds < 2:
        raise ValueError(f"--folds must be >= 2, got {own.folds}")
    return own, args


def _shared_positive_int(text: str) -> int:
    return int(_io.positive_int(text))


def _seed(text: str) -> int:
    value = int(_io.non_negative_int(text))
    if value >= 2**32:
        raise argparse.ArgumentTypeError(f"expected a seed in [0, 2**32), got {text!r}")
    return value


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
        training.pop("protocol_epochs", None)
    if args.device:
        raw["device"] = args.device
    if args.smoke:  # before --set, so that an explicit --set wins
        raw["name"] = str(raw.get("name", config_mod.Config.name)) + "-smoke"
        if not args.seeds:
            raw["seeds"] = [0]
        if args.epochs is None:
            training["epochs"] = 1
            training.pop("protocol_epochs", None)
        training["iterations_per_epoch"] = 2
    sets_budget = any(item.split("=", 1)[0] == "training.protocol_epochs" for item in args.set)
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set must be KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        if key == "training.epochs" and not sets_budget:
            training.pop("protocol_epochs", None)  # like --epochs: every protocol's budget
        config_mod.set_dotted(raw, key, config_mod.parse_value(value))
    return config_mod.parse_config(raw)


# ----------------------------------------------------------------------------- commands


#: Set by ``python -m benchmarks.launch`` for its ranks: the command the user typed, which the
#: run records in place of the rank's own ``python -m benchmarks ...``.
COMMAND_ENV = "PMLAC_COMMAND"


def _shown_command(prefix: str, argv) -> str:
    if os.environ.get(COMMAND_ENV):
        return os.environ[COMMAND_ENV]
    argv_shown = sys.argv[1:] if argv is None else argv
    return " ".join([prefix, *(shlex.quote(a) for a in argv_shown)])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.help_config:
        print(config_mod.help_text())
        return 0
    if args.report_only:
        return runner.report_only(args.output, make_plots=not args.no_plots)
    cfg = resolve_config(args)
    if args.list_methods:
        return runner.list_methods(cfg)
    return runner.run_benchmark(cfg, args, _shown_command("python -m benchmarks", argv))


def tune_main(argv=None) -> int:
    from . import search

    own, args = parse_tune_args(argv)
    cfg = resolve_config(args)
    return search.run_tune(cfg, own, args, _shown_command("python -m benchmarks tune", argv))


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that it stops as Ctrl-C does."""


def _raise_terminated(signum, frame):
    raise Terminated()


def resume_command(argv: list[str], where: ranks.Ranks | None = None) -> str:
    """The command that resumes a run started with ``argv`` (``--fresh`` left out: it would
    delete what was done); under torchrun, the torchrun command of this machine."""
    args = " ".join(shlex.quote(a) for a in argv if a != "--fresh")
    if where is None or where.world_size == 1:
        return f"python -m benchmarks {args}".rstrip()
    launch = f"torchrun --standalone --nproc-per-node {where.local_world_size} -m benchmarks"
    if where.local_world_size != where.world_size:
        return f"the same torchrun command on every machine ({launch} {args})".rstrip()
    return f"{launch} {args}".rstrip()


def run(argv=None) -> int:
    """``main`` as the command line runs it: a bad config, option, data root or run folder ends
    with one ``error:`` line instead of a traceback; Ctrl-C (exit status 130) and SIGTERM (143)
    end with one line naming the command that resumes the run (rank 0 only, under torchrun).
    ``python -m benchmarks tune ...`` is the tuning step."""
    argv = sys.argv[1:] if argv is None else list(argv)
    previous = signal.signal(signal.SIGTERM, _raise_terminated), signal.getsignal(signal.SIGINT)
    held = set(_io.held_locks())
    try:
        where = ranks.from_env()
    except ValueError as e:
        sys.exit(f"python -m benchmarks: error: {e}")
    who = f" (rank {where.rank})" if where.distributed else ""
    quiet = not where.main or os.environ.get(LAUNCHER_ENV) == "1"
    try:
        if argv[:1] == ["tune"]:
            return tune_main(argv[1:])
        return main(argv)
    except KeyboardInterrupt as e:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while the line is written
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        what, status = ("terminated (SIGTERM)", 143) if isinstance(e, Terminated) else (
            "interrupted (Ctrl-C)", 130)
        if not quiet:
            kept = ("every finished epoch is kept; resume with" if runner.STARTED
                    else "nothing was written; run again with")
            if where.distributed:
                what += " — torchrun stops every rank when one fails; its report names it"
            print(f"\npython -m benchmarks: {what}; {kept}: {resume_command(argv, where)}",
                  file=sys.stderr, flush=True)
        sys.exit(status)
    except (ValueError, FileNotFoundError, OSError) as e:
        sys.exit(f"python -m benchmarks: error{who}: {e}")
    finally:
        for folder in set(_io.held_locks()) - held:  # e.g. the run folder of the tuning step
            _io.unlock_folder(folder)
        signal.signal(signal.SIGTERM, previous[0])
        if previous[1] is not None:
            signal.signal(signal.SIGINT, previous[1])
