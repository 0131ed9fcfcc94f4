"""One cell of the grid = one (protocol, method, seed): train with PML's ``MetricLossOnly`` and
``MPerClassSampler``, log through ``HookContainer`` into record-keeper (csv + sqlite), test with
``GlobalEmbeddingSpaceTester`` (the PML 2 pieces sit in ``pml2/``). Resumable at every epoch.

:func:`run_cell` reads top to bottom: the committed result if there is one; else open the cell's
:class:`Checkpoint` (or start clean), :func:`build_cell` from the config, restore the checkpoint
into it, :func:`train_cell`, :func:`evaluate_cell`, :func:`commit_cell`.

Resumption. After every epoch the :class:`Checkpoint` (``work/<protocol>/<method>/seed<k>/
ckpt.pt``, written atomically) holds the model, loss, miner and optimizer states, every random
generator (torch, numpy — PML's sampler draws from ``np.random`` — and python), the sampler's class
order (``MPerClassSampler`` shuffles its label list in place) and the records gathered so far. A
restarted cell takes its records back from the checkpoint and goes on from the next epoch, so the
records and the result equal those of an uninterrupted run. A finished cell is committed by
writing ``cells/<protocol>/<method>/seed<k>.json`` atomically, after its records were moved to
``records/<protocol>/<method>/seed<k>/``; its working folder is then deleted.

Damaged files (disk full, another program, a copy cut short) are named on stderr, one line each,
and recovered from, never a traceback:

- a checkpoint is loaded with ``torch.load(weights_only=True)`` (it holds tensors and plain
  Python values only: the numpy generator's state is stored as lists and ints); writing a new one
  keeps the previous as ``ckpt.prev.pt``. A damaged ``ckpt.pt`` is moved aside
  (``ckpt.pt.damaged``) and the cell resumes from ``ckpt.prev.pt``, or from scratch when that one
  is missing or damaged too (the ``.damaged`` files go with the working folder at the commit);
- a committed result that is not JSON or not a result of this cell (``{}``, another cell's) is
  moved aside (``seed<k>.json.damaged``, kept) and the cell is computed again.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import random
import shutil
import sys
import time

import numpy as np
import torch
from pytorch_metric_learning import samplers

from .. import _shared as _io
from . import class_lookup
from .config import Config, MethodSpec
from .datasets import ProtocolData
from .evaluate import Evaluator
from .models import build_model, raw_input_model
from .pml2 import records, training


class CellInterrupted(Exception):
    """Raised by :func:`run_cell` with ``stop_after_epoch`` once that epoch's checkpoint is
    written: the cell is left to resume."""


def cell_paths(run_dir: str, protocol: str, method: str, seed: int) -> dict[str, str]:
    return {
        "result": os.path.join(run_dir, "cells", protocol, method, f"seed{seed}.json"),
        "records": os.path.join(run_dir, "records", protocol, method, f"seed{seed}"),
        "work": os.path.join(run_dir, "work", protocol, method, f"seed{seed}"),
    }


# ----------------------------------------------------------------------------- random state


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every generator's state as tensors and plain Python values (a checkpoint holding them
    loads with ``weights_only=True``); numpy's legacy state tuple becomes a dict of lists/ints."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": str(name),
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["bit_generator"], np.asarray(n["keys"], dtype=np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- the cell


def effective_m_per_class(m: int, batch_size: int, num_classes: int) -> int:
    """``m``, or the smallest divisor of ``batch_size`` that fills a batch from ``num_classes``.

    ``MPerClassSampler`` needs m · num_classes >= batch_size and batch_size % m == 0; with few
    training classes (2 coarse digit groups) the configured m is raised to the smallest such m.
    """
    if m * num_classes >= batch_size:
        return m
    for cand in range(-(-batch_size // num_classes), batch_size + 1):
        if batch_size % cand == 0:
            return cand
    return batch_size


def _has_params(module) -> bool:
    return module is not None and any(p.requires_grad for p in module.parameters())


def build_models(cfg: Config, data: ProtocolData, no_learning: bool):
    """(trunk, embedder) for the config's model; raw inputs for the no-learning row."""
    if no_learning:
        return raw_input_model(data.input_kind)
    return build_model(cfg.model, input_shape(data.train))


def input_shape(dataset) -> tuple[int, ...]:
    """The shape of one item of ``dataset``, read without moving the random generators (an
    augmenting dataset draws when indexed)."""
    state = rng_state()
    try:
        return tuple(dataset[0][0].shape)
    finally:
        set_rng_state(state)


def build_loss_and_miner(cfg: Config, method: MethodSpec, num_classes: int):
    """The method's loss and miner (``num_classes`` / ``embedding_size`` filled in)."""
    context = {"num_classes": num_classes, "embedding_size": cfg.model.embedding_size}
    return class_lookup.build(method.loss, context), class_lookup.build(method.miner, context)


@dataclasses.dataclass
class Cell:
    """Everything one cell trains and tests with (``loss`` etc. are None for no_learning)."""

    trunk: torch.nn.Module
    embedder: torch.nn.Module
    keeper: object
    hooks: object
    evaluator: Evaluator
    epochs: int
    iterations: int
    loss: torch.nn.Module | None = None
    miner: torch.nn.Module | None = None
    optimizers: dict = dataclasses.field(default_factory=dict)
    sampler: samplers.MPerClassSampler | None = None
    #: ``evaluation.interval`` (0: test at the end only)
    interval: int = 0
    #: the tester of the tests before the last epoch (the curve's metrics only, no records)
    curve_evaluator: Evaluator | None = None
    #: one entry per test during training (:func:`test_during_training`), in epoch order
    curve: list = dataclasses.field(default_factory=list)
    #: the full test result of the last epoch when a test during training produced it
    final_test: dict | None = None


def build_cell(cfg: Config, data: ProtocolData, method: MethodSpec, device: torch.device,
               records_dir: str, purge_step: int | None) -> Cell:
    """Models, record-keeper, tester, loss, miner, optimizers and sampler, in this order (the
    order in which they draw from the seeded generators)."""
    t = cfg.training
    iters = t.iterations_per_epoch or max(1, len(data.train) // t.batch_size)
    trunk, embedder = build_models(cfg, data, method.no_learning)
    trunk, embedder = trunk.to(device), embedder.to(device)
    keeper = records.make_record_keeper(records_dir, t.tensorboard, purge_step)
    hooks = records.make_hooks(keeper, t.log_freq)
    evaluator = Evaluator(cfg.evaluation.metrics, cfg.evaluation.batch_size, t.num_workers,
                          device, hooks)
    cell = Cell(trunk, embedder, keeper, hooks, evaluator,
                epochs=0 if method.no_learning else t.epochs_for(data.name), iterations=iters,
                interval=cfg.evaluation.interval)
    if cell.interval and not method.no_learning:
        metrics = [m for m in cfg.evaluation.metrics if m in CURVE_METRICS]
        cell.curve_evaluator = Evaluator(metrics, cfg.evaluation.batch_size, t.num_workers,
                                         device, hooks=None)
    if method.no_learning:
        return cell
    loss, cell.miner = build_loss_and_miner(cfg, method, data.num_train_classes)
    cell.loss = loss.to(device)
    cell.optimizers = {
        "trunk_optimizer": torch.optim.Adam(
            trunk.parameters(), lr=t.lr_trunk, weight_decay=t.weight_decay
        )
    }
    if _has_params(embedder):
        cell.optimizers["embedder_optimizer"] = torch.optim.Adam(
            embedder.parameters(), lr=t.lr_embedder, weight_decay=t.weight_decay
        )
    if _has_params(cell.loss):
        cell.optimizers["metric_loss_optimizer"] = torch.optim.Adam(
            cell.loss.parameters(), lr=t.lr_loss
        )
    m = effective_m_per_class(t.m_per_class, t.batch_size, data.num_train_classes)
    cell.sampler = samplers.MPerClassSampler(
        data.train.labels, m=m, batch_size=t.batch_size, length_before_new_iter=iters * t.batch_size
    )
    return cell


# ----------------------------------------------------------------------------- checkpoint


#: Keys every checkpoint holds (a loadable file without them is damaged).
CHECKPOINT_KEYS = ("epoch", "trunk", "embedder", "loss", "optimizers", "sampler_labels", "rng",
                   "records")


def log(message: str) -> None:
    """One line on stderr (damaged files and what was done about them)."""
    print(f"[benchmarks] {message}", file=sys.stderr, flush=True)


def plain(obj, where: str = "checkpoint"):
    """``obj`` with numpy scalars and arrays turned into Python values, checked to hold only what
    ``torch.load(weights_only=True)`` reads (tensors, containers, str/int/float/bool/None);
    anything else is a ``TypeError`` naming where it sits, raised when the file is written rather
    than when a resumed run cannot read it."""
    if obj is None or isinstance(obj, (torch.Tensor, str, bool, int, float, torch.dtype,
                                       torch.device, torch.Size)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, dict):
        out = collections.OrderedDict() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[plain(k, where)] = plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        items = [plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(
        f"{where} holds a {type(obj).__module__}.{type(obj).__qualname__}, which "
        "torch.load(weights_only=True) cannot read; store it as tensors or plain values"
    )


def load_checkpoint(path: str) -> dict:
    """The state in ``path``, read with ``weights_only=True``; a file that cannot be read or
    lacks a checkpoint's keys raises ``DamagedFileError`` naming it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ... here
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise _io.DamagedFileError(path, f"cannot be read ({type(e).__name__}: {reason})") from None
    if not isinstance(state, dict) or any(k not in state for k in CHECKPOINT_KEYS):
        missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
        raise _io.DamagedFileError(path, f"not a checkpoint (missing {missing})")
    if not isinstance(state["epoch"], int) or state["epoch"] < 1:
        raise _io.DamagedFileError(path, f"not a checkpoint (epoch {state['epoch']!r})")
    return state


class Checkpoint:
    """The resumable state of one cell: ``<work>/ckpt.pt``, written atomically after each epoch
    (the one before kept as ``ckpt.prev.pt``).

    Opening reads ``ckpt.pt``, else ``ckpt.prev.pt``; a damaged one is moved aside
    (``*.damaged``) and said on stderr. With neither, the work folder's other files (a killed
    run's partial files) are deleted and the cell starts from scratch.
    """

    def __init__(self, work: str):
        self.work = work
        self.path = os.path.join(work, "ckpt.pt")
        self.prev_path = os.path.join(work, "ckpt.prev.pt")
        self.records_dir = os.path.join(work, "records")
        self.state: dict | None = None
        damaged = []
        for path in (self.path, self.prev_path):
            if not os.path.exists(path):
                continue
            try:
                self.state = load_checkpoint(path)
                break
            except _io.DamagedFileError as e:
                damaged.append((e, _io.move_aside(path)))
        if damaged:
            then = (
                "restarting the cell from scratch" if self.state is None
                else f"resuming from {self.prev_path} (epoch {self.state['epoch']})"
            )
            for e, aside in damaged:
                log(f"{e} (moved to {aside}); {then}")
        if self.state is None and os.path.isdir(work):
            for entry in os.listdir(work):
                p = os.path.join(work, entry)
                if ".damaged" in entry:
                    continue
                if os.path.isdir(p):
                    shutil.rmtree(p)
                else:
                    os.remove(p)

    @property
    def epoch(self) -> int | None:
        """The last epoch saved, or None when the cell starts from scratch."""
        return None if self.state is None else self.state["epoch"]

    @property
    def elapsed(self) -> float:
        return 0.0 if self.state is None else self.state.get("elapsed", 0.0)

    def prepare_records(self, iterations: int) -> int | None:
        """Empty the working records folder; return TensorBoard's purge step on resume.

        The record files are written once, when the cell ends; until then the records live in
        memory and in the checkpoint, so a partial write from a killed run is simply discarded.
        TensorBoard writes as it goes: its event files are kept on resume, and the events logged
        after the checkpoint (iteration ≥ epoch · iterations) are purged by the new writer.
        """
        purge_step = None
        if os.path.isdir(self.records_dir):
            for entry in os.listdir(self.records_dir):
                path = os.path.join(self.records_dir, entry)
                if self.state is not None and entry == "tensorboard":
                    purge_step = self.state["epoch"] * iterations
                elif os.path.isdir(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
        os.makedirs(self.records_dir, exist_ok=True)
        return purge_step

    def restore_models(self, cell: Cell) -> int:
        """Load the saved states into ``cell``; return the first epoch to train."""
        if self.state is None:
            return 1
        s = self.state
        cell.trunk.load_state_dict(s["trunk"])
        cell.embedder.load_state_dict(s["embedder"])
        cell.loss.load_state_dict(s["loss"])
        if cell.miner is not None and s.get("miner") is not None:
            cell.miner.load_state_dict(s["miner"])
        for k, opt in cell.optimizers.items():
            opt.load_state_dict(s["optimizers"][k])
        kind = type(cell.sampler.labels[0]) if len(cell.sampler.labels) else int
        cell.sampler.labels = [kind(x) for x in s["sampler_labels"]]
        records.set_pending_records(cell.keeper, s["records"])
        cell.curve = [dict(e) for e in s.get("curve") or []]
        cell.final_test = s.get("final_test")
        return s["epoch"] + 1

    def restore_trainer(self, trainer) -> None:
        """The random generators (last, after everything that draws at construction) and the
        grad scaler's loss scale."""
        if self.state is None:
            return
        set_rng_state(self.state["rng"])
        scaler = getattr(trainer, "scaler", None)
        if scaler is not None and self.state.get("grad_scaler") is not None:
            scaler.load_state_dict(self.state["grad_scaler"])

    def save(self, cell: Cell, trainer, elapsed: float) -> None:
        scaler = getattr(trainer, "scaler", None)
        state = {
            "epoch": trainer.epoch,
            "trunk": cell.trunk.state_dict(),
            "embedder": cell.embedder.state_dict(),
            "loss": cell.loss.state_dict(),
            "miner": cell.miner.state_dict() if cell.miner is not None else None,
            "optimizers": {k: o.state_dict() for k, o in cell.optimizers.items()},
            "sampler_labels": [int(x) for x in cell.sampler.labels],
            "rng": rng_state(),
            "records": records.pending_records(cell.keeper),
            "grad_scaler": scaler.state_dict() if scaler is not None else None,
            "elapsed": elapsed,
            "curve": cell.curve,
            "final_test": cell.final_test,
        }
        _io.atomic_torch_save(self.path, plain(state), previous=self.prev_path)


# ----------------------------------------------------------------------------- the steps


def write_progress(work: str, epoch: int, epochs: int) -> None:
    """``<work>/progress.json`` = ``{"epoch": epoch, "epochs": epochs}``, written atomically: a
    progress display in another process may read it at any time. Nothing here depends on it."""
    _io.atomic_write_json(os.path.join(work, "progress.json"), {"epoch": epoch, "epochs": epochs})


def train_cell(cfg: Config, cell: Cell, data: ProtocolData, device: torch.device,
               ckpt: Checkpoint, clock, stop_after_epoch: int | None = None) -> None:
    """Train from the checkpoint's next epoch to ``training.epochs``, checkpointing each epoch."""
    start_epoch = ckpt.restore_models(cell)

    def end_of_epoch_hook(trainer):
        if tests_at(trainer.epoch, cell.interval, cell.epochs):
            test_during_training(cell, data, trainer.epoch)
        ckpt.save(cell, trainer, clock())
        write_progress(ckpt.work, trainer.epoch, cell.epochs)
        if stop_after_epoch is not None and trainer.epoch >= stop_after_epoch:
            raise CellInterrupted(f"stopped after epoch {trainer.epoch} (stop_after_epoch)")
        return True

    t = cfg.training
    trainer = training.make_trainer(
        amp=t.amp,
        device=device,
        models={"trunk": cell.trunk, "embedder": cell.embedder},
        optimizers=cell.optimizers,
        batch_size=t.batch_size,
        loss_funcs={"metric_loss": cell.loss},
        mining_funcs={"tuple_miner": cell.miner} if cell.miner is not None else {},
        dataset=data.train,
        data_device=device,
        sampler=cell.sampler,
        dataloader_num_workers=t.num_workers,
        end_of_iteration_hook=cell.hooks.end_of_iteration_hook,
        end_of_epoch_hook=end_of_epoch_hook,
    )
    ckpt.restore_trainer(trainer)
    if start_epoch <= cell.epochs:
        trainer.train(start_epoch=start_epoch, num_epochs=cell.epochs)


def tests_at(epoch: int, interval: int, epochs: int) -> bool:
    """Whether the cell is tested at the end of ``epoch`` while training: every ``interval``
    epochs and at the last one (never when ``interval`` is 0)."""
    return interval > 0 and (epoch % interval == 0 or epoch == epochs)


def training_view(dataset):
    """The training set as it is embedded for its effective rank: the dataset's
    ``without_augmentation()`` view when it has one (no random shift or crop), else itself."""
    make = getattr(dataset, "without_augmentation", None)
    return make() if callable(make) else dataset


def test_during_training(cell: Cell, data: ProtocolData, epoch: int) -> dict:
    """Test the model at the end of ``epoch`` with PML's tester and append one entry to
    ``cell.curve``: the configured metrics and the effective rank of the query embeddings (as
    in the final result), plus ``train_effective_rank``, that of the training set embedded
    without augmentation (collapse on the training classes themselves). Return the entry.

    Called from the trainer's end-of-epoch hook (not ``HookContainer``'s best-epoch and patience
    logic: the reported figure stays the last epoch's). Testing leaves training unchanged: the
    tester's DataLoader draws a seed from torch's generator and an augmenting dataset draws per
    item, so every generator is saved before and restored after, and so is the train/eval flag
    of every submodule (the tester sets eval mode). The tests before the last epoch compute the
    ``CURVE_METRICS`` only and are recorded in the record-keeper's ``curve`` group only; the
    test at the last epoch is the cell's final test (every metric, the accuracies' records): it
    is kept as ``cell.final_test``, so that the cell is not tested twice at the end.
    """
    last = epoch == cell.epochs
    evaluator = cell.evaluator if last else cell.curve_evaluator
    state = rng_state()
    modes = [(m, m.training) for model in (cell.trunk, cell.embedder) for m in model.modules()]
    try:
        test = evaluator.run(data.query, data.reference, epoch, cell.trunk, cell.embedder)
        train_rank = cell.evaluator.effective_rank_of(training_view(data.train), cell.trunk,
                                                      cell.embedder)
    finally:
        for m, training_flag in modes:
            m.training = training_flag
        set_rng_state(state)
    metrics = {k: v for k, v in test["metrics"].items() if k in CURVE_METRICS}
    entry = {"epoch": int(epoch), **metrics, "train_effective_rank": train_rank}
    cell.curve.append(entry)
    cell.keeper.update_records(
        {k: v for k, v in entry.items() if k != "epoch"}, epoch, parent_name=CURVE_RECORDS
    )
    if last:
        cell.final_test = test
    return entry


#: The record-keeper group (csv file / sqlite table) of the per-epoch curve.
CURVE_RECORDS = "curve"
#: The metrics of the curve (those of ``evaluation.metrics`` among them), besides the effective
#: ranks: the tests before the last epoch compute only these (NMI's k-means is left to the end).
CURVE_METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r", "effective_rank")


def evaluate_cell(cell: Cell, data: ProtocolData) -> dict:
    """The final test (of the last epoch's model, never the best epoch's), reused from the test
    during training at the last epoch when there was one; writes the records."""
    if cell.final_test is not None:
        result = dict(cell.final_test)
    else:
        result = cell.evaluator.run(data.query, data.reference, cell.epochs, cell.trunk,
                                    cell.embedder)
    cell.keeper.save_records()
    if cell.curve:
        result["curve"] = [dict(e) for e in cell.curve]
    return result


def commit_cell(paths: dict[str, str], records_dir: str, result: dict, run_dir: str) -> None:
    """Move the records into place, then write the result (the commit), then drop the work."""
    _io.atomic_replace_folder(records_dir, paths["records"])
    _io.atomic_write_json(paths["result"], result)
    drop_work(paths["work"], run_dir)


def drop_work(work: str, run_dir: str) -> None:
    """Delete a cell's working folder and the parents it leaves empty (up to ``run_dir``)."""
    shutil.rmtree(work, ignore_errors=True)
    _remove_empty_parents(work, stop=run_dir)


def check_result(result, protocol: str, method: str, seed: int) -> str | None:
    """None when ``result`` (a committed cell's JSON) is a result of this cell, else what is
    wrong with it."""
    if not isinstance(result, dict):
        return f"not a JSON object but {type(result).__name__}"
    got = (result.get("protocol"), result.get("method"), result.get("seed"))
    if got != (protocol, method, seed):
        return f"protocol/method/seed are {list(got)}, expected {[protocol, method, seed]}"
    metrics = result.get("metrics")
    if not isinstance(metrics, dict) or not isinstance(
        metrics.get("mean_average_precision_at_r"), (int, float)
    ):
        return "no metrics.mean_average_precision_at_r"
    return None


def read_result(path: str, protocol: str, method: str, seed: int) -> dict:
    """The committed result in ``path``; ``DamagedFileError`` when it is not this cell's."""
    result = _io.read_json(path)
    why = check_result(result, protocol, method, seed)
    if why:
        raise _io.DamagedFileError(path, why)
    return result


def is_committed(run_dir: str, protocol: str, method: str, seed: int) -> bool:
    """Whether the cell has a committed, readable result (a damaged one will be recomputed)."""
    path = cell_paths(run_dir, protocol, method, seed)["result"]
    try:
        read_result(path, protocol, method, seed)
    except (FileNotFoundError, _io.DamagedFileError):
        return False
    return True


def run_cell(
    cfg: Config,
    run_dir: str,
    data: ProtocolData,
    method: MethodSpec,
    seed: int,
    device: torch.device,
    stop_after_epoch: int | None = None,
    meta: dict | None = None,
) -> dict:
    """Train and test one cell, resuming from its checkpoint if one exists; return its result.

    ``stop_after_epoch``: raise :class:`CellInterrupted` once that epoch's checkpoint is written
    (the next call resumes from it), e.g. to spread a long cell over several sessions.

    ``meta``: facts about the process that ran the cell (threads, world size, rank, device, CPU
    model, ...), stored as given under ``result["run"]`` of a newly computed result (a result
    committed earlier is returned unchanged). It must be JSON-serialisable.

    While training, ``<work>/progress.json`` holds ``{"epoch": n, "epochs": total}``, rewritten
    atomically after each epoch's checkpoint; it is for a progress display in another process
    only (nothing in the harness reads it) and goes with the working folder at the commit.
    """
    if meta is not None and not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict or None, not {type(meta).__name__}")
    paths = cell_paths(run_dir, data.name, method.name, seed)
    if os.path.exists(paths["result"]):
        try:
            result = read_result(paths["result"], data.name, method.name, seed)
        except _io.DamagedFileError as e:
            log(f"{e} (moved to {_io.move_aside(paths['result'])}); computing the cell again")
        else:
            if os.path.exists(paths["work"]):  # killed between the commit and the clean-up
                drop_work(paths["work"], run_dir)
            return result
    ckpt = Checkpoint(paths["work"])
    iters = cfg.training.iterations_per_epoch or max(1, len(data.train) // cfg.training.batch_size)
    purge_step = ckpt.prepare_records(iters)
    t0 = time.perf_counter()

    def clock() -> float:
        return time.perf_counter() - t0 + ckpt.elapsed

    seed_everything(seed)
    cell = build_cell(cfg, data, method, device, ckpt.records_dir, purge_step)
    if not method.no_learning:
        train_cell(cfg, cell, data, device, ckpt, clock, stop_after_epoch)
    result = evaluate_cell(cell, data)
    result.update(
        protocol=data.name,
        method=method.name,
        seed=seed,
        epochs=cell.epochs,
        seconds=round(clock(), 3),
        resumed_from_epoch=ckpt.epoch,
    )
    if data.provenance:
        result["provenance"] = data.provenance
    if meta is not None:
        result["run"] = dict(meta)
    commit_cell(paths, ckpt.records_dir, result, run_dir)
    return result


def _remove_empty_parents(path: str, stop: str) -> None:
    path = os.path.dirname(os.path.abspath(path))
    stop = os.path.abspath(stop)
    while path.startswith(stop) and path != stop:
        try:
            os.rmdir(path)
        except OSError:
            return
        path = os.path.dirname(path)
