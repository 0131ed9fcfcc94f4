"""``python -m benchmarks tune``: equal-budget search on validation folds, then the test table.

Two steps, both resumable (a killed run restarted with the same command goes on):

1. **Search** (``<run>/tuning/``). For every method with a ``search`` space: ``--trials`` trials
   (the same number for every method) of Optuna's seeded TPE (see :mod:`search_space`); a trial's
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

import os
import sys
import time

import numpy as np
import torch

from .. import _shared as _io
from . import config as config_mod
from . import ranks, report, runner, search_space, train
from .datasets import ProtocolData

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


def validation_folds(cfg: config_mod.Config, data: ProtocolData, k: int,
                     seed: int) -> list[ProtocolData]:
    """The ``k`` validation folds of protocol ``data``: its own validation forms where the
    protocol defines them (e.g. the glyph superclass protocol's held-out *training* fonts, scored
    on fine retrieval), else :func:`fold_protocols` over its training classes. Neither reads the
    protocol's test data."""
    spec = cfg.dataset.protocols[data.name]
    forms = spec.validation_forms(k)
    if forms is None:
        return fold_protocols(data, k, seed)
    built = cfg.dataset.options.build({f"fold{i}": form for i, form in enumerate(forms)})
    out = []
    for i in range(k):
        fold = built[f"fold{i}"]
        fold.provenance = {**fold.provenance, "fold": {"of": data.name, "form": i}}
        out.append(fold)
    return out


def fold_protocols(data: ProtocolData, k: int, seed: int) -> list[ProtocolData]:
    """The K validation folds of ``data``'s training set (its query/reference sets unused)."""
    labels = _labels_of(data.train)
    plain = eval_view(data.train)
    out = []
    for i, (fit, val) in enumerate(search_space.class_folds(labels, k, seed)):
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
        return key.split(".", 1)[0] in SEARCHABLE and search_space.has_path(tree, key)

    return exists


def apply(cfg: config_mod.Config, method: config_mod.MethodSpec, params: dict):
    """The config and method with ``params`` set, checked by the schema."""
    raw_cfg, raw_method = search_space.apply_params(cfg.to_dict(), _method_dict(method), params)
    raw_cfg["methods"] = [raw_method if m["name"] == method.name else m for m in raw_cfg["methods"]]
    new = config_mod.parse_config(raw_cfg)
    return new, new.method(method.name)


def _method_dict(method: config_mod.MethodSpec) -> dict:
    import dataclasses

    return {f.name: getattr(method, f.name) for f in dataclasses.fields(method)}


def search_method(cfg, method, space, folds, own, tune_dir, device, storage, meta: dict,
                  on_trial=None, key: str | None = None, protocol: str | None = None) -> dict:
    """Run (or finish) the search of one method; return its summary (``<key>/summary.json``,
    gathered into ``best.json``). ``key``: the search's name (the method's, or
    ``<protocol>/<method>`` when every protocol is searched on its own). ``on_trial(text)``
    hears about every finished trial. The folds train the epoch budget of ``protocol``
    (``training.protocol_epochs``) unless the search sets ``training.epochs`` itself, and are
    tested once, at their last epoch (no curve: only that value is the trial's)."""
    key = key or method.name
    budget = {}
    if protocol is not None:
        budget = {"training.epochs": cfg.training.epochs_for(protocol), "evaluation.interval": 0}
    path = os.path.join(tune_dir, key, "trials.json")
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
        cfg_t, method_t = apply(cfg, method, {**budget, **params})
        trial_dir = trial_folder(tune_dir, key, number)
        values = []
        for fold in folds:
            res = train.run_cell(cfg_t, trial_dir, fold, method_t, own.tune_seed, device,
                                 meta=meta)
            values.append(float(res["metrics"]["mean_average_precision_at_r"]))
        value = float(np.mean(values))
        records[str(number)] = {
            "number": number,
            "params": params,
            "fold_map_at_r": values,
            "value": value,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        _io.atomic_write_json(path, records)
        if on_trial is not None:
            best = max(r["value"] for r in records.values())
            on_trial(f"{key} trial {number} {value:.3f} (best {best:.3f})")
        return value

    study = open_and_search(tune_dir, key, space, own, objective, storage)
    done = search_space.completed_trials(study)
    index = max(range(len(done)), key=lambda i: done[i].value)  # the first of equal bests
    summary = {
        "params": dict(done[index].params),
        "value": float(done[index].value),
        "best_trial": index,
        "trials": own.trials,
        "folds": own.folds,
        "space": [p.describe() for p in space],
        "curve": [t.value for t in done],
    }
    _io.atomic_write_json(summary_path(tune_dir, key), summary)
    return summary


def trial_folder(tune_dir: str, method: str, number: int) -> str:
    return os.path.join(tune_dir, method, f"trial{number:03d}")


def summary_path(tune_dir: str, method: str) -> str:
    """A method's finished search (its best settings): written last, so it marks the search as
    done for every rank."""
    return os.path.join(tune_dir, method, "summary.json")


def default_storage(tune_dir: str) -> str:
    return "sqlite:///" + os.path.join(tune_dir, "study.sqlite3")


def open_and_search(tune_dir: str, name: str, space, own, objective, storage: str):
    """The search on the study in ``storage``; a damaged default study file is named, moved
    aside and rebuilt (its trials are asked again with the same seeds, and their folds, committed
    as cells, are read back instead of trained)."""
    path = os.path.join(tune_dir, "study.sqlite3")
    for attempt in (0, 1):
        try:
            opened = search_space.open_storage(storage)
            return search_space.run_search(opened, name, space, own.trials, own.search_seed,
                                           objective)
        except Exception as e:  # sqlalchemy's DatabaseError, optuna's StorageInternalError
            if attempt or not _is_damaged_db(e) or storage != default_storage(tune_dir):
                raise
            moved = _io.move_aside(path)
            print(f"[benchmarks tune] damaged study {path} ({type(e).__name__}); moved aside to "
                  f"{moved}, rebuilt from the committed folds", file=sys.stderr)
    raise AssertionError("unreachable")


def _is_damaged_db(e: Exception) -> bool:
    names = {type(x).__name__ for x in (e, e.__cause__, e.__context__) if x is not None}
    return bool(names & {"DatabaseError", "StorageInternalError"})


# ----------------------------------------------------------------------------- the command


def search_spaces(cfg, plan, own) -> tuple[dict, list[str]]:
    """Each tuned method's space, and the untuned rows; a method without a space is refused
    unless ``--allow-untuned``."""
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
        space = search_space.parse_space(entry, exists)
        if space:
            spaces[m.name] = space
        elif own.allow_untuned:
            untuned.append(m.name)
        else:
            raise ValueError(
                f"method {m.name!r} has no search space: every tuned method gets the same budget "
                "(give it a 'search' entry, leave it out with --methods, or pass --allow-untuned)"
            )
    for m in plan.methods:  # a bad value in a space's range shows now, not after hours
        for p in spaces.get(m.name, []):
            for probe in p.choices if p.kind == "categorical" else (p.low, p.high):
                try:
                    apply(cfg, m, {p.key: probe})
                except ValueError as e:
                    raise ValueError(f"method {m.name!r}: search.{p.key}={probe!r}: {e}") from e
    return spaces, untuned


def fold_jobs(tune_dir: str, searches: dict, folds: dict, own, cfg) -> list[runner.Job]:
    """The fold cells of every trial of every search (``searches``: key -> (protocol, method);
    ``folds``: protocol -> its folds), for the bar: their paths are known before the trials
    run."""
    jobs = []
    for key, (protocol, name) in searches.items():
        cost = cfg.training.epochs_for(protocol) + 1
        for n in range(own.trials):
            trial_dir = trial_folder(tune_dir, key, n)
            for fold in folds[protocol]:
                paths = train.cell_paths(trial_dir, fold.name, name, own.tune_seed)
                jobs.append(runner.Job(f"{key}/trial{n:03d}/{fold.name}", paths["result"],
                                       paths["work"], cost))
    return jobs


def wait_for_searches(tune_dir: str, names) -> dict:
    """Every method's summary, once every rank has written its own (no timeout: a search may
    rightly take hours; torchrun stops this rank when another fails)."""
    while True:
        missing = [n for n in names if not os.path.exists(summary_path(tune_dir, n))]
        if not missing:
            break
        time.sleep(runner.POLL_SECONDS)
    best = {}
    for n in names:
        try:
            best[n] = _io.read_json(summary_path(tune_dir, n))
        except _io.DamagedFileError as e:
            raise ValueError(
                f"{e}; delete it and run the command again (the study and the folds are kept, "
                "so the search is read back, not recomputed)"
            ) from None
    return best


def run_tune(cfg: config_mod.Config, own, args, command: str) -> int:
    """``python -m benchmarks tune``: the searches (spread over the ranks, each one sequential
    and seeded), then the test cells with the chosen settings (spread likewise)."""
    own.trials = own.trials or cfg.tuning.trials  # the command line wins over the config
    own.folds = own.folds or cfg.tuning.folds
    where = ranks.from_env()
    group = ranks.Group(where)
    run_dir = args.output or os.path.join(runner.RESULTS_ROOT, cfg.name + "-tuned")
    tune_dir = os.path.join(run_dir, "tuning")
    storage = own.storage or default_storage(tune_dir)
    try:
        plan = runner.make_plan(cfg, args.methods, args.protocols, where)
        name = own.tune_protocol or cfg.tuning.protocol or next(iter(plan.protocols))
        if name not in plan.protocols:
            raise ValueError(f"--tune-protocol: unknown {name!r}; known: {sorted(plan.protocols)}")
        if not cfg.tuning.per_protocol and len(plan.protocols) > 1:
            raise ValueError(
                f"tuning.per_protocol is false but the run has {len(plan.protocols)} protocols "
                f"({', '.join(plan.protocols)}): their data come from one data set, so the "
                f"search on the validation folds of {name!r} would train and score on items that "
                "another protocol tests on. Set tuning.per_protocol: true (one search per "
                f"protocol, on its own validation forms), or tune one protocol (--protocols {name})"
            )
        spaces, untuned = search_spaces(cfg, plan, own)
        targets = list(plan.protocols) if cfg.tuning.per_protocol else [name]
        folds = {p: validation_folds(cfg, plan.protocols[p], own.folds, own.fold_seed)
                 for p in targets}
        # one search per method (its settings hold for every protocol), or per protocol and
        # method: key -> (protocol searched on, method)
        searches = {(f"{p}/{m}" if cfg.tuning.per_protocol else m): (p, m)
                    for p in targets for m in spaces}
        progress = runner.progress_mode(args.progress, where)
        threads, source = ranks.pick_threads(args.threads, cfg.threads, where)
        runner.start_process(threads, progress, where)
        identity = config_mod.identity(cfg, plan.provenance)
        identity["tuning"] = {
            "search": cfg.tuning.search,
            "trials": own.trials,
            "folds": own.folds,
            "fold_seed": own.fold_seed,
            "search_seed": own.search_seed,
            "tune_seed": own.tune_seed,
            "protocol": name,
            "per_protocol": cfg.tuning.per_protocol,
            "untuned": untuned,
        }

        def pending() -> dict:  # rank 0, the folder locked: what is left to do
            os.makedirs(tune_dir, exist_ok=True)
            _io.atomic_write_json(
                os.path.join(tune_dir, "folds.json"),
                {p: {f.name: {"description": f.description, **f.provenance.get("fold", {})}
                     for f in fs} for p, fs in folds.items()},
            )
            search_space.open_storage(storage)  # creates the tables before any rank uses them
            return {
                "searches": [k for k in searches
                             if not os.path.exists(summary_path(tune_dir, k))],
                "pending": [] if own.search_only else runner.pending_cells(plan, run_dir),
            }

        session = runner.open_run(plan, run_dir, identity, args.fresh, where, group, command,
                                  runner.layout_of(threads, source, where), progress, pending)
        left = session.start["searches"]  # not finished when the run (re)started
        mine = ranks.share(left, [1] * len(left), where.world_size)[where.rank]
        watcher = None
        if where.main:
            watcher = runner.Watcher(fold_jobs(tune_dir, searches, folds, own, cfg),
                                     "tuning", enabled=progress != "none")
        try:
            for key in mine:
                protocol, m = searches[key]
                search_method(cfg, plan.method(m), spaces[m], folds[protocol], own, tune_dir,
                              plan.device, storage, session.cell_meta,
                              on_trial=watcher.refresh if watcher else None, key=key,
                              protocol=protocol)
            best = wait_for_searches(tune_dir, list(searches))
        finally:
            if watcher is not None:
                watcher.close()
        summary = tuning_summary(best, untuned, own,
                                 "every protocol on its own" if cfg.tuning.per_protocol else name)
        if where.main:
            _io.atomic_write_json(os.path.join(tune_dir, "best.json"), best)
            if not args.no_plots and best:
                search_space.plot_best_so_far(
                    {k: v["curve"] for k, v in best.items()},
                    os.path.join(tune_dir, "best_so_far.png"),
                    f"{cfg.name}: {own.trials} trials x {own.folds} folds per method",
                )
            print(report.tuned_section(summary))
        if own.search_only:
            if where.main:
                session.log.info["tuning"] = summary
                session.log.close()
            return 0
        tuned = {(p if cfg.tuning.per_protocol else None, m): apply(cfg, plan.method(m),
                                                                     best[key]["params"])
                 for key, (p, m) in searches.items()}
        runner.run_cells(session, session.start["pending"], settings=tuned)
        text = runner.close_run(session, make_plots=not args.no_plots, extra={"tuning": summary})
    finally:
        runner.release(run_dir)
        group.close()
    if where.main:
        print(text)
        print(f"[benchmarks tune] report in {run_dir}/ (table.md, results.json, tuning/)")
    return 0


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
