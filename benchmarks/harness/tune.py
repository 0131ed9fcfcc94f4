"""``python -m benchmarks tune``: equal-budget search on validation folds, then the test table.

Two steps, both resumable (a killed run restarted with the same command goes on):

1. **Search** (``<run>/tuning/``). For every method with a ``search`` space: ``--trials`` trials
   (the same number for every method) of Optuna's seeded TPE (see :mod:`tuning`); a trial's
   objective is the mean MAP@R over ``--folds`` class-disjoint folds carved from the *training*
   classes of the tuning protocol (``--tune-protocol``, default: the first one). Each fold
   trains on the fold's fit classes and retrieves its validation classes among themselves; the
   test set of the protocol is never read. Written: the Optuna study (``study.sqlite3``), one
   folder per trial and fold (the harness's resumable cells), ``trials.json`` per method,
   ``best.json`` and ``best_so_far.png``.
2. **Test** (``<run>/``). Each method trained with its best settings on all training classes of
   every protocol over the config's seeds, then tested, as ``python -m benchmarks`` does; the
   table (``table.md``) and ``results.json`` carry the chosen settings and the budget.

A learned method without a search space is refused unless ``--allow-untuned`` keeps it at its
config settings (marked "untuned" in the table); the floor row is never tuned. Searchable keys
are those of ``training.*`` and ``model.*`` (and the method's ``loss.*`` / ``miner.*``): the
data and the device are built once per run. ``results.json``'s ``metadata.config`` is the base
config; each method's chosen settings are in ``metadata.tuning.best``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

import numpy as np
import torch

from .. import _shared as _io
from . import cli, report, train, tuning
from . import config as config_mod
from .datasets import ProtocolData

EPILOG = """\
examples:
  python -m benchmarks tune --dataset digits --trials 30 --folds 4
  python -m benchmarks tune --smoke                   # 2 trials x 2 folds per method (seconds)
  python -m benchmarks tune --config benchmarks/harness/configs/glyphs.yaml --trials 8 --folds 3

Every other option of `python -m benchmarks` (--config, --dataset, --methods, --seeds, --set,
--output, --device, --threads, --progress, --no-plots) works here too.
"""


def parse_args(argv) -> tuple[argparse.Namespace, argparse.Namespace]:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks tune",
        description="Equal-budget hyperparameter search on validation folds of the training "
        "classes, then the test table with the chosen settings.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--trials", type=_shared_positive_int, help="trials per method (default 30)")
    p.add_argument("--folds", type=_shared_positive_int, help="validation folds (default 4)")
    p.add_argument("--fold-seed", type=_seed, default=0, help="seed of the class folds")
    p.add_argument("--search-seed", type=_seed, default=0, help="seed of the TPE sampler")
    p.add_argument("--tune-seed", type=_seed, default=0, help="training seed inside a fold")
    p.add_argument(
        "--tune-protocol", help="protocol whose training classes are folded (default: first)"
    )
    p.add_argument(
        "--allow-untuned",
        action="store_true",
        help="keep methods without a search space at their config settings instead of refusing",
    )
    p.add_argument(
        "--search-only", action="store_true", help="stop after the search (no test table)"
    )
    own, rest = p.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        p.print_help()
        raise SystemExit(0)
    args = cli.parse_args(rest)
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


# ----------------------------------------------------------------------------- fold data


class LabelledSubset(torch.utils.data.Dataset):
    """Items ``indices`` of ``base`` with their labels mapped to 0..C-1 (``labels`` attribute,
    as PML's samplers and testers expect)."""

    def __init__(self, base, indices: np.ndarray, labels: np.ndarray):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        x, _ = self.base[int(self.indices[i])]
        return x, self.labels[i]


def _labels_of(dataset) -> np.ndarray:
    return np.asarray(torch.as_tensor(dataset.labels).cpu().numpy())


def eval_view(dataset):
    """``dataset`` without its training augmentation when it offers one
    (``without_augmentation()``), else ``dataset`` itself."""
    make = getattr(dataset, "without_augmentation", None)
    return make() if callable(make) else dataset


def fold_protocols(data: ProtocolData, k: int, seed: int) -> list[ProtocolData]:
    """The K validation folds of ``data``'s training set (its query/reference sets unused)."""
    labels = _labels_of(data.train)
    plain = eval_view(data.train)
    out = []
    for i, (fit, val) in enumerate(tuning.class_folds(labels, k, seed)):
        fit_idx = np.flatnonzero(np.isin(labels, fit))
        val_idx = np.flatnonzero(np.isin(labels, val))
        remap = {c: j for j, c in enumerate(fit)}
        train = LabelledSubset(data.train, fit_idx, [remap[int(c)] for c in labels[fit_idx]])
        query = LabelledSubset(plain, val_idx, labels[val_idx])
        out.append(
            ProtocolData(
                name=f"fold{i}",
                train=train,
                query=query,
                num_train_classes=len(fit),
                input_kind=data.input_kind,
                description=f"fold {i} of {data.name}: fit {len(fit)} training classes, "
                f"validate on {len(val)} others",
                provenance={**data.provenance, "fold": {"fit": fit, "validate": val}},
            )
        )
    return out


# ----------------------------------------------------------------------------- search


#: Config sections a search may change: what a cell is trained with. The data, the device and
#: the folds are built once per run, so a key elsewhere would be searched without effect.
SEARCHABLE = ("training", "model")


def config_key_exists(cfg: config_mod.Config):
    tree = cfg.to_dict()

    def exists(key: str) -> bool:
        return key.split(".", 1)[0] in SEARCHABLE and tuning._has_path(tree, key)

    return exists


def apply(cfg: config_mod.Config, method: config_mod.MethodSpec, params: dict):
    """The config and method with ``params`` set, checked by the schema."""
    raw_cfg, raw_method = tuning.apply_params(cfg.to_dict(), _method_dict(method), params)
    raw_cfg["methods"] = [raw_method if m["name"] == method.name else m for m in raw_cfg["methods"]]
    new = config_mod.parse_config(raw_cfg)
    return new, new.method(method.name)


def _method_dict(method: config_mod.MethodSpec) -> dict:
    import dataclasses

    return {f.name: getattr(method, f.name) for f in dataclasses.fields(method)}


def search_method(cfg, method, space, folds, own, tune_dir, device, bar) -> dict:
    """Run (or finish) the search of one method; return its summary for ``best.json``."""
    path = os.path.join(tune_dir, method.name, "trials.json")
    records = {}
    if os.path.exists(path):  # a damaged record is set aside: the study and the cells remain
        try:
            records = _io.read_json(path)
        except _io.DamagedFileError as e:
            _io.move_aside(path)
            print(f"[benchmarks tune] {e}; moved aside (the earlier trials' fold values are lost "
                  "from it; the study keeps their means)", file=sys.stderr)

    def objective(number: int, params: dict) -> float:
        t0 = time.perf_counter()
        cfg_t, method_t = apply(cfg, method, params)
        trial_dir = os.path.join(tune_dir, method.name, f"trial{number:03d}")
        values = []
        for fold in folds:
            res = train.run_cell(cfg_t, trial_dir, fold, method_t, own.tune_seed, device)
            values.append(float(res["metrics"]["mean_average_precision_at_r"]))
            bar.update(1)
        value = float(np.mean(values))
        records[str(number)] = {
            "number": number,
            "params": params,
            "fold_map_at_r": values,
            "value": value,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        _io.atomic_write_json(path, records)
        best = max(r["value"] for r in records.values())
        bar.set_postfix_str(f"{method.name} trial {number} {value:.3f} (best {best:.3f})")
        return value

    study = open_and_search(tune_dir, method.name, space, own, objective)
    done = tuning.completed_trials(study)
    index = max(range(len(done)), key=lambda i: done[i].value)  # the first of equal bests
    return {
        "params": dict(done[index].params),
        "value": float(done[index].value),
        "best_trial": index,
        "trials": own.trials,
        "folds": own.folds,
        "space": [p.describe() for p in space],
        "curve": [t.value for t in done],
    }


def open_and_search(tune_dir: str, name: str, space, own, objective):
    """The search on the study in ``tune_dir``; a damaged study file is named, moved aside and
    rebuilt (its trials are asked again with the same seeds, and their folds, committed as
    cells, are read back instead of trained)."""
    path = os.path.join(tune_dir, "study.sqlite3")
    for attempt in (0, 1):
        try:
            storage = tuning.study_storage(path)
            return tuning.run_search(storage, name, space, own.trials, own.search_seed, objective)
        except Exception as e:  # sqlalchemy's DatabaseError, optuna's StorageInternalError
            if attempt or not _is_damaged_db(e):
                raise
            moved = _io.move_aside(path)
            print(f"[benchmarks tune] damaged study {path} ({type(e).__name__}); moved aside to "
                  f"{moved}, rebuilt from the committed folds", file=sys.stderr)
    raise AssertionError("unreachable")


def _is_damaged_db(e: Exception) -> bool:
    names = {type(x).__name__ for x in (e, e.__cause__, e.__context__) if x is not None}
    return bool(names & {"DatabaseError", "StorageInternalError"})


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    own, args = parse_args(argv)
    cfg = cli.resolve_config(args)
    own.trials = own.trials or cfg.tuning.trials  # the command line wins over the config
    own.folds = own.folds or cfg.tuning.folds
    plan = cli.make_plan(cfg, args)
    name = own.tune_protocol or cfg.tuning.protocol or next(iter(plan.protocols))
    if name not in plan.protocols:
        raise ValueError(f"--tune-protocol: unknown {name!r}; known: {sorted(plan.protocols)}")
    exists = config_key_exists(cfg)
    spaces, untuned = {}, []
    for m in plan.methods:
        if m.no_learning:
            if m.search:
                raise ValueError(f"method {m.name!r}: a no_learning row has nothing to search")
            untuned.append(m.name)
            continue
        entry = _method_dict(m)
        if cfg.tuning.search or m.search:  # the shared space, then the method's own keys
            entry["search"] = {**cfg.tuning.search, **(m.search or {})}
        space = tuning.parse_space(entry, exists)
        if space:
            spaces[m.name] = space
        elif own.allow_untuned:
            untuned.append(m.name)
        else:
            raise ValueError(
                f"method {m.name!r} has no search space: every tuned method gets the same budget "
                "(give it a 'search' entry, leave it out with --methods, or pass --allow-untuned)"
            )
    folds = fold_protocols(plan.protocols[name], own.folds, own.fold_seed)
    for m in plan.methods:  # a bad value in a space's range shows now, not after hours
        for p in spaces.get(m.name, []):
            for probe in p.choices if p.kind == "categorical" else (p.low, p.high):
                try:
                    apply(cfg, m, {p.key: probe})
                except ValueError as e:
                    raise ValueError(f"method {m.name!r}: search.{p.key}={probe!r}: {e}") from e

    run_dir = args.output or os.path.join(cli.RESULTS_ROOT, cfg.name + "-tuned")
    progress = args.progress or ("all" if sys.stderr.isatty() else "cells")
    cli.start_process(cfg, progress)
    identity = config_mod.identity(cfg, plan.provenance)
    identity["tuning"] = {
        "search": cfg.tuning.search,
        "trials": own.trials,
        "folds": own.folds,
        "fold_seed": own.fold_seed,
        "search_seed": own.search_seed,
        "tune_seed": own.tune_seed,
        "protocol": name,
        "untuned": untuned,
    }
    cli.prepare_run_dir(run_dir, identity, fresh=args.fresh)
    cli.copy_extra_files(plan, run_dir)
    tune_dir = os.path.join(run_dir, "tuning")
    os.makedirs(tune_dir, exist_ok=True)
    _io.atomic_write_json(
        os.path.join(tune_dir, "folds.json"),
        {f.name: f.provenance["fold"] for f in folds} | {"protocol": name},
    )

    import tqdm

    total = own.trials * own.folds * len(spaces)
    bar = tqdm.tqdm(total=total, desc="tuning", disable=progress == "none", dynamic_ncols=True)
    best = {}
    for m in plan.methods:
        if m.name in spaces:
            best[m.name] = search_method(cfg, m, spaces[m.name], folds, own, tune_dir,
                                         plan.device, bar)
            _io.atomic_write_json(os.path.join(tune_dir, "best.json"), best)
    bar.close()
    if not args.no_plots and best:
        tuning.plot_best_so_far(
            {k: v["curve"] for k, v in best.items()},
            os.path.join(tune_dir, "best_so_far.png"),
            f"{cfg.name}: {own.trials} trials x {own.folds} folds per method",
        )
    summary = tuning_summary(best, untuned, own, name)
    print(report.tuned_section(summary))
    if own.search_only:
        return 0
    return test_step(cfg, plan, best, summary, run_dir, argv, progress, args)


def tuning_summary(best: dict, untuned: list[str], own, protocol: str) -> dict:
    """What the report and results.json say about the search (the curves stay in tuning/)."""
    return {
        "best": {k: {x: v[x] for x in v if x != "curve"} for k, v in best.items()},
        "untuned": untuned,
        "trials": own.trials,
        "folds": own.folds,
        "protocol": protocol,
        "fold_seed": own.fold_seed,
        "search_seed": own.search_seed,
        "tune_seed": own.tune_seed,
        "sampler": "optuna TPESampler re-seeded per trial; its first "
        f"{min(10, own.trials)} trials are random start-up draws",
    }


def test_step(cfg, plan, best, summary, run_dir, argv, progress, args) -> int:
    """Train every method with its best settings over the seeds and write the test table."""
    argv_shown = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m benchmarks tune", *(shlex.quote(a) for a in argv_shown)])
    log = cli.RunLog(run_dir, plan, command)
    log.info["tuning"] = summary
    log.write()
    tuned = {m.name: apply(cfg, m, best[m.name]["params"]) for m in plan.methods if m.name in best}
    cli.run_cells(plan, run_dir, log, progress, settings=tuned)
    log.close()
    text = report.build_report(run_dir, log.info, make_plots=not args.no_plots)
    print(text)
    print(f"[benchmarks tune] report in {run_dir}/ (table.md, results.json, tuning/)")
    return 0
