"""The runner both commands use (``python -m benchmarks`` and ``python -m benchmarks tune``):
plan a grid, open its run folder, run its cells — alone or as one of several torchrun ranks —
and write the report.

A run reads top to bottom:

1. :func:`make_plan`: device, protocols, methods; every check that can fail happens here, before
   the run folder is touched;
2. :func:`start_process`: threads (torch and faiss), PML's logger and bars;
3. :func:`open_run`: rank 0 creates, locks (``<run>/.lock``) and pins the run folder, drops the
   partial writes a killed run left, writes ``run.json`` and a ``.session`` token, and hands the
   token and the pending work to the other ranks (:class:`ranks.Group`); each of them checks that
   it sees the same folder;
4. :func:`run_cells`: each rank trains its share (:func:`ranks.share`) of the cells that were
   pending when the run started; rank 0 then waits until every cell is committed, showing one
   bar over the cells of all ranks (its ETA counted in epochs), and writes the report.

A cell commits its result file atomically when it ends and checkpoints every epoch, so a run
killed anywhere — one rank or all, SIGKILL or Ctrl-C — is resumed by the same command: committed
cells are read back, the others go on from their last finished epoch.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import secrets
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable

import torch

from .. import _shared as _io
from . import class_lookup, datasets, ranks, report, train
from . import config as config_mod
from .datasets import ProtocolData

#: Where runs go unless ``--output`` says otherwise (the one results root of the benchmarks).
RESULTS_ROOT = os.path.join("benchmarks", "results", "runs")

#: Files that mark a folder as a benchmark run (``--fresh`` deletes only such folders).
RUN_MARKERS = ("config_identity.json", "run.json")

#: The lock file of a run folder (``fcntl.flock``, held by rank 0 while it uses the folder).
LOCK_NAME = ".lock"

#: Rank 0's token in the run folder: another rank that cannot read it does not share the folder.
SESSION_NAME = ".session"

#: Seconds between two looks at the run folder while rank 0 waits for the other ranks' cells.
POLL_SECONDS = 1.0


def log(message: str) -> None:
    train.log(message)


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

    def method(self, name: str) -> config_mod.MethodSpec:
        return next(m for m in self.methods if m.name == name)


def _check_buildable(method: config_mod.MethodSpec, cfg, protocol: ProtocolData) -> None:
    """Build the method's loss and miner once, so that a bad argument stops the run before it
    starts rather than in the middle of it."""
    if method.no_learning:
        return
    try:
        train.build_loss_and_miner(cfg, method, protocol.num_train_classes)
    except (TypeError, ValueError) as e:
        raise ValueError(f"method {method.name!r}: {e}") from e


def make_plan(cfg: config_mod.Config, methods: list[str] | None, protocols: list[str] | None,
              where: ranks.Ranks | None = None) -> Plan:
    """Device, protocols (built: their data are read here) and runnable methods; raises before
    anything is written. ``methods``/``protocols``: the subsets asked for (None: all)."""
    where = where or ranks.Ranks()
    device = ranks.pick_device(cfg.device, where)
    built = datasets.build(cfg.dataset)
    if protocols:
        unknown = set(protocols) - set(built)
        if unknown:
            raise ValueError(f"--protocols: unknown {sorted(unknown)}; known: {sorted(built)}")
        built = {k: v for k, v in built.items() if k in protocols}
    chosen = cfg.methods
    if methods:
        chosen = [cfg.method(n) for n in dict.fromkeys(methods)]  # a name given twice: once
    skipped, runnable = {}, []
    for m in chosen:
        why = None if m.no_learning else class_lookup.check_available(m)
        if why:
            skipped[m.name] = why
            if where.main:
                print(f"[benchmarks] skipping method {m.name!r}: {why}", file=sys.stderr)
        else:
            _check_buildable(m, cfg, next(iter(built.values())))
            runnable.append(m)
    if not runnable:
        raise ValueError(
            "no method can run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())
        )
    return Plan(cfg, device, built, runnable, skipped)


def list_methods(cfg: config_mod.Config) -> int:
    """Print every method with its description, why it would be skipped, or its error (a
    class name that exists nowhere: exit status 1)."""
    status = 0
    for m in cfg.methods:
        try:
            why = None if m.no_learning else class_lookup.check_available(m)
        except ValueError as e:
            print(f"{m.name:28s} (error: {e})")
            status = 1
            continue
        print(f"{m.name:28s} {'(skipped: ' + why + ')' if why else m.description or ''}")
    return status


# ----------------------------------------------------------------------------- process


def start_process(threads: int, progress: str, where: ranks.Ranks) -> None:
    """Process-wide settings, made once the run is known to be valid: CPU threads (torch and
    faiss's own OpenMP pool; set explicitly, so they win over torchrun's ``OMP_NUM_THREADS=1``),
    PML's logger and progress bars (rank 0's only), one warning filter."""
    import warnings

    from . import pml2

    # PML's trainer formats its tqdm description from a tensor that requires grad
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True")
    torch.set_num_threads(int(threads))
    try:
        import faiss

        faiss.omp_set_num_threads(int(threads))
    except (ImportError, AttributeError):
        pass
    pml2.configure(show_inner_bars=progress == "all" and where.main)


# ----------------------------------------------------------------------------- run folder

#: Whether this process has started writing a run folder (for the Ctrl-C line).
STARTED = False


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
    their complete version was never renamed into place. Called under the lock, before any other
    rank starts writing."""
    partial = [os.path.join(d, f) for d, _, files in os.walk(run_dir) for f in files
               if f.startswith(".tmp-")]
    for path in partial:
        os.remove(path)
    if partial:
        log(f"removed {len(partial)} partial write(s) (.tmp-*) that a killed run left in {run_dir}")


def copy_extra_files(plan: Plan, run_dir: str) -> None:
    """Copy each protocol's ``extra_files`` (e.g. the glyphs' sample grid) into the run folder."""
    for data in plan.protocols.values():
        for name, src in data.extra_files.items():
            if os.path.isfile(src):
                with open(src, "rb") as f:
                    _io.atomic_write_bytes(os.path.join(run_dir, name), f.read())


def prepare_run_dir(run_dir: str, identity: dict, fresh: bool) -> None:
    """Create (or, with ``fresh``, empty) the run folder, lock it and pin its configuration.

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
    _io.lock_folder(run_dir, LOCK_NAME, what="run folder")
    global STARTED
    STARTED = True
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
    its history); rewritten atomically after every committed cell. Rank 0 writes it."""

    def __init__(self, run_dir: str, plan: Plan, command: str, layout: dict):
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
            **layout,
            "cells_computed": [],
        }
        self.earlier = list(sessions)
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
            log(f"{e} (moved to {aside}); rebuilt from this session: the history of earlier "
                "sessions is lost, their cells are kept")
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


def say_layout_changes(earlier: list[dict], layout: dict, device: str) -> None:
    """One line when this session computes with other threads or another device than an earlier
    session of the same run: its cells may differ from theirs in the last digits."""
    now = (layout.get("threads"), device)
    before = sorted({(s.get("threads"), s.get("device")) for s in earlier
                     if s.get("cells_computed") and s.get("threads") is not None}
                    - {now}, key=repr)
    if before:
        was = "; ".join(f"{t} thread(s) on {d}" for t, d in before)
        log(f"note: earlier sessions of this run computed cells with {was}; this session uses "
            f"{now[0]} thread(s) per rank on {now[1]}. Each cell records its own "
            "(results.json: run.threads, run.device); cells from the two layouts may differ in "
            "the last digits")


@dataclasses.dataclass
class Session:
    """One process's part in a run: where it is, the folder, what it computes with."""

    plan: Plan
    run_dir: str
    where: ranks.Ranks
    group: ranks.Group
    layout: dict  # threads, thread_source, world_size: recorded in run.json and every cell
    progress: str
    log: RunLog | None  # rank 0's; None on the others
    start: dict  # what rank 0 handed to every rank when the run started

    @property
    def cell_meta(self) -> dict:
        return {
            "threads": self.layout["threads"],
            "world_size": self.where.world_size,
            "rank": self.where.rank,
            "device": str(self.plan.device),
            "cpu": _io.cpu_model(),
        }


def open_run(plan: Plan, run_dir: str, identity: dict, fresh: bool, where: ranks.Ranks,
             group: ranks.Group, command: str, layout: dict, progress: str,
             pending: Callable[[], dict]) -> Session:
    """Rank 0 prepares the run folder (:func:`prepare_run_dir`), writes ``run.json`` and computes
    ``pending()`` (the work not yet committed); every rank then receives that, and checks that it
    sees the folder. The only collective of a run; the process group is closed after it."""
    start, runlog = None, None
    if where.main:
        prepare_run_dir(run_dir, identity, fresh=fresh)
        copy_extra_files(plan, run_dir)
        token = secrets.token_hex(8)
        _io.atomic_write_text(os.path.join(run_dir, SESSION_NAME), token + "\n")
        runlog = RunLog(run_dir, plan, command, layout)
        say_layout_changes(runlog.earlier, layout, str(plan.device))
        start = {"token": token, "host": socket.gethostname(),
                 "run_dir": os.path.abspath(run_dir), **pending()}
    start = group.from_main(start)
    # The group goes now: the cells are independent runs, and a process group left up would
    # make the plugin's classes gather rows across ranks as under DDP.
    group.close()
    if not where.main:
        ranks.check_shared_folder(run_dir, start["token"], where, start["host"])
    return Session(plan, run_dir, where, group, layout, progress, runlog, start)


# ----------------------------------------------------------------------------- cells


@dataclasses.dataclass(frozen=True)
class Job:
    """One cell to compute: where its result and its working folder lie, and its cost in epochs
    (a cell's epochs plus one for its test, so a no-learning cell counts as one)."""

    key: str
    result: str
    work: str
    cost: int

    def is_written(self) -> bool:
        return os.path.exists(self.result)

    def epochs_done(self) -> int:
        """Full cost when committed; else the epochs its checkpoints went through (the
        ``progress.json`` a training cell writes each epoch), 0 when unknown."""
        if self.is_written():
            return self.cost
        state = _io.read_json_or_none(os.path.join(self.work, "progress.json"))
        if isinstance(state, dict) and isinstance(state.get("epoch"), int):
            return min(max(state["epoch"], 0), self.cost - 1)
        return 0


class Watcher:
    """Rank 0's bar over the jobs of every rank, its ETA counted in epochs: a thread reads the
    run folder every second (committed results, each cell's ``progress.json``)."""

    def __init__(self, jobs: list[Job], desc: str, enabled: bool):
        import tqdm

        self.jobs = jobs
        total = sum(j.cost for j in jobs)
        self.bar = tqdm.tqdm(total=total, desc=desc, unit="epoch", disable=not enabled,
                             dynamic_ncols=True, smoothing=0.1)
        self.bar.update(self.done())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def done(self) -> int:
        return sum(j.epochs_done() for j in self.jobs)

    def _loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self.refresh()

    def refresh(self, postfix: str | None = None) -> None:
        n = self.done()
        if n != self.bar.n:
            self.bar.update(n - self.bar.n)
        if postfix is not None:
            self.bar.set_postfix_str(postfix)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.refresh()
        self.bar.close()


def cell_jobs(plan: Plan, run_dir: str, cells, settings: dict | None) -> list[Job]:
    out = []
    for protocol, name, seed in cells:
        cfg, method = cell_settings(plan, settings, protocol, name)
        paths = train.cell_paths(run_dir, protocol, name, seed)
        epochs = 0 if method.no_learning else cfg.training.epochs_for(protocol)
        out.append(Job(f"{protocol}/{name}/seed{seed}", paths["result"], paths["work"],
                       epochs + 1))
    return out


def pending_cells(plan: Plan, run_dir: str) -> list[tuple[str, str, int]]:
    """The plan's cells without a committed, readable result (a damaged one is pending)."""
    return [c for c in plan.cells if not train.is_committed(run_dir, *c)]


def cell_settings(plan: Plan, settings: dict | None, protocol: str,
                  name: str) -> tuple[config_mod.Config, config_mod.MethodSpec]:
    """The (config, method) a cell trains with: ``settings[(protocol, name)]`` (chosen for that
    protocol), else ``settings[(None, name)]`` (chosen for every protocol), else the plan's."""
    settings = settings or {}
    for key in ((protocol, name), (None, name)):
        if key in settings:
            return settings[key]
    return plan.cfg, plan.method(name)


def run_cells(session: Session, pending: list, settings: dict | None = None) -> None:
    """Compute this rank's share of ``pending`` (the cells without a result when the run
    started, the same list on every rank); rank 0 then waits for every rank's cells, with one
    bar over all of them. ``settings`` maps (protocol or None, method name) to the (config,
    method) a cell trains with when that differs from the plan's (the tuning step's chosen
    settings; see :func:`cell_settings`)."""
    plan, run_dir, where = session.plan, session.run_dir, session.where
    pending = [tuple(c) for c in pending]
    jobs = dict(zip(pending, cell_jobs(plan, run_dir, pending, settings), strict=True))
    mine = ranks.share(pending, [jobs[c].cost for c in pending], where.world_size)[where.rank]
    watcher = None
    if where.main:
        all_jobs = cell_jobs(plan, run_dir, plan.cells, settings)
        watcher = Watcher(all_jobs, "cells", enabled=session.progress != "none")
    logged: set[str] = set()
    try:
        for protocol, name, seed in mine:
            cfg, method = cell_settings(plan, settings, protocol, name)
            res = train.run_cell(cfg, run_dir, plan.protocols[protocol], method, seed,
                                 plan.device, meta=session.cell_meta)
            if watcher is not None:
                watcher.refresh(f"{protocol}/{name}/seed{seed} "
                                f"MAP@R={res['metrics']['mean_average_precision_at_r']:.3f}")
                _log_committed(session, jobs, logged)
        if where.main:
            wait_for(session, jobs, logged)
    finally:
        if watcher is not None:
            watcher.close()


def _log_committed(session: Session, jobs: dict, logged: set) -> None:
    for job in jobs.values():
        if job.key not in logged and job.is_written():
            logged.add(job.key)
            session.log.cell_done(job.key)


def wait_for(session: Session, jobs: dict, logged: set) -> None:
    """Rank 0, its own share done: wait until every other rank's cells are committed. No
    timeout: a share may rightly take hours; a rank that fails makes torchrun stop this one."""
    readable: set[str] = set()  # a damaged result left by a killed run is pending until replaced
    while True:
        _log_committed(session, jobs, logged)
        for j in jobs.values():
            if j.key not in readable and j.is_written():
                try:
                    _io.read_json(j.result)
                    readable.add(j.key)
                except _io.DamagedFileError:
                    pass
        if len(readable) == len(jobs):
            return
        time.sleep(POLL_SECONDS)


def close_run(session: Session, make_plots: bool, extra: dict | None = None) -> str | None:
    """Rank 0: close ``run.json`` (with ``extra`` merged into it) and write the report; the others
    return None."""
    if not session.where.main:
        return None
    session.log.info.update(extra or {})
    session.log.close()
    return report.build_report(session.run_dir, session.log.info, make_plots=make_plots)


def release(session_or_dir) -> None:
    run_dir = getattr(session_or_dir, "run_dir", session_or_dir)
    _io.unlock_folder(run_dir)


# ----------------------------------------------------------------------------- report only


def report_only(run_dir: str | None, make_plots: bool) -> int:
    if not run_dir:
        raise SystemExit("--report-only needs --output RUN_DIR")
    run_json = os.path.join(run_dir, "run.json")
    if not os.path.isfile(run_json):
        raise ValueError(f"--report-only: {run_dir!r} holds no run (no run.json)")
    again = "run the run's command again (without --report-only) to recompute it"
    try:
        info = _io.read_json(run_json)
        if not isinstance(info, dict) or not isinstance(info.get("plan"), list):
            raise _io.DamagedFileError(run_json, "not a run record (no plan)")
        for protocol, method, seed in info["plan"]:
            path = train.cell_paths(run_dir, protocol, method, seed)["result"]
            if os.path.exists(path):
                train.read_result(path, protocol, method, seed)
    except _io.DamagedFileError as e:
        raise ValueError(f"--report-only: {e}; {again}") from None
    print(report.build_report(run_dir, info, make_plots=make_plots))
    return 0


# ----------------------------------------------------------------------------- a whole run


def progress_mode(asked: str | None, where: ranks.Ranks) -> str:
    """``--progress``, else all bars on a terminal and the cells' bar otherwise; rank 0 alone
    draws bars."""
    if not where.main:
        return "none"
    return asked or ("all" if sys.stderr.isatty() else "cells")


def layout_of(threads: int, source: str, where: ranks.Ranks) -> dict:
    """How this session computes: recorded in ``run.json`` (per session) and in every cell."""
    return {"threads": threads, "thread_source": source, "world_size": where.world_size,
            "ranks_per_machine": where.local_world_size}


def run_benchmark(cfg: config_mod.Config, args, command: str) -> int:
    """``python -m benchmarks``: plan, open the run folder, run this rank's cells, and on rank 0
    wait for every rank's and write the report."""
    where = ranks.from_env()
    group = ranks.Group(where)
    run_dir = args.output or os.path.join(RESULTS_ROOT, cfg.name)
    try:
        plan = make_plan(cfg, args.methods, args.protocols, where)
        progress = progress_mode(args.progress, where)
        threads, source = ranks.pick_threads(args.threads, cfg.threads, where)
        start_process(threads, progress, where)
        session = open_run(
            plan, run_dir, config_mod.identity(cfg, plan.provenance), args.fresh, where, group,
            command, layout_of(threads, source, where), progress,
            pending=lambda: {"pending": pending_cells(plan, run_dir)},
        )
        run_cells(session, session.start["pending"])
        text = close_run(session, make_plots=not args.no_plots)
    finally:
        release(run_dir)
        group.close()
    if where.main:
        print(text)
        layout = (f"{where.world_size} processes x {threads} thread(s)" if where.distributed
                  else f"{threads} thread(s)")
        print(f"[benchmarks] {len(plan.cells)} cells in {session.log.session['wall_seconds']} s "
              f"({layout}); report in {run_dir}/ (table.md, results.json, *.png, records/)")
    return 0
