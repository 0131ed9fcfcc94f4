"""One cell of the grid = one (protocol, method, seed): train with PML's ``MetricLossOnly`` and
``MPerClassSampler``, log through ``logging_presets.HookContainer`` into record-keeper (csv +
sqlite), test with ``GlobalEmbeddingSpaceTester``. Resumable at every epoch boundary.

Resumption. After every epoch the cell's checkpoint (``work/<protocol>/<method>/seed<k>/ckpt.pt``,
written atomically) holds the model, loss, miner and optimizer states, every random generator
(torch, numpy — PML's sampler draws from ``np.random`` — and python), the sampler's class order
(``MPerClassSampler`` shuffles its label list in place) and the records gathered so far. A
restarted cell takes its records back from the checkpoint and goes on from the
next epoch, so the records and the result equal those of an uninterrupted run. A finished cell
is committed by writing ``cells/<protocol>/<method>/seed<k>.json`` atomically, after its records
were moved to ``records/<protocol>/<method>/seed<k>/``; its working folder is then deleted.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import time

import numpy as np
import torch
from pytorch_metric_learning import samplers, trainers
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import logging_presets

from .. import _shared as _io
from . import evaluate, registry
from .data import ProtocolData

# tests only: seconds to sleep between an epoch's end and its checkpoint (a window to SIGKILL)
_TEST_SLEEP = float(os.environ.get("BENCHMARKS_TEST_SLEEP_BEFORE_CHECKPOINT", "0") or 0)

logging.getLogger("PML").setLevel(logging.ERROR)  # e.g. "optimizers is missing embedder_optimizer"


def cell_paths(run_dir: str, protocol: str, method: str, seed: int) -> dict[str, str]:
    return {
        "result": os.path.join(run_dir, "cells", protocol, method, f"seed{seed}.json"),
        "records": os.path.join(run_dir, "records", protocol, method, f"seed{seed}"),
        "work": os.path.join(run_dir, "work", protocol, method, f"seed{seed}"),
    }


def make_record_keeper(folder: str, tensorboard: bool = False, purge_step: int | None = None):
    """record-keeper with csv + sqlite; tensorboard only when asked for and installed.

    PML's ``get_record_keeper`` imports tensorboard unconditionally (REFERENCE.md §4), so the
    writer is built here from record-keeper's own classes. ``purge_step``: on resume, TensorBoard
    drops the events of the folder's earlier writers at steps ≥ it (logged after the checkpoint).
    """
    import record_keeper as rk

    writer = rk.RecordWriter(folder=folder)
    tb = None
    if tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(log_dir=os.path.join(folder, "tensorboard"), purge_step=purge_step)
        except ImportError:
            logging.getLogger(__name__).warning("tensorboard is not installed; csv + sqlite only")
    keeper = rk.RecordKeeper(
        tensorboard_writer=tb,
        record_writer=writer,
        attributes_to_search_for=c_f.list_of_recordable_attributes_list_names(),
    )
    return keeper


def pending_records(keeper) -> dict:
    """The records not yet written to disk, as plain (picklable) dicts."""
    return {group: dict(series) for group, series in keeper.record_writer.records.items()}


def set_pending_records(keeper, records: dict) -> None:
    import collections

    keeper.record_writer.records.clear()
    for group, series in records.items():
        keeper.record_writer.records[group] = collections.OrderedDict(series)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def build_models(cfg: dict, data: ProtocolData, no_learning: bool):
    """(trunk, embedder) for the config's model; raw inputs for the no-learning row."""
    m = cfg["model"]
    if no_learning:
        if data.input_kind == "vector":
            return torch.nn.Identity(), torch.nn.Identity()
        # images: raw pixels average-pooled to 16x16 (768-d), so kNN on them stays tractable
        return torch.nn.Sequential(
            torch.nn.AdaptiveAvgPool2d(16), torch.nn.Flatten()
        ), torch.nn.Identity()
    if m["name"] == "digits_mlp":
        from .models import DigitsMLP

        in_dim = int(data.train[0][0].numel())
        return DigitsMLP(in_dim, m.get("hidden", 256), m["embedding_size"]), torch.nn.Identity()
    if m["name"] in ("digits_residual_mlp", "digits_wide_residual_mlp"):
        from .digits_models import MODELS

        in_dim = int(data.train[0][0].numel())
        return MODELS[m["name"]](
            in_dim, m.get("hidden", 256), m["embedding_size"]
        ), torch.nn.Identity()
    from .models import build_backbone

    return build_backbone(m["name"], m["embedding_size"], m.get("weights"))


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


class _AmpMetricLossOnly(trainers.MetricLossOnly):
    """``MetricLossOnly`` with the forward pass under ``torch.autocast`` (the device's default
    low precision: float16 on CUDA, bfloat16 on CPU) and, for float16, a grad scaler. The
    coding-rate terms switch autocast off for their own linear algebra."""

    def __init__(self, *args, amp_device: torch.device, **kwargs):
        self.amp_device = amp_device
        # bfloat16 has float32's exponent range: gradients do not underflow, nothing to scale
        self.scaler = torch.amp.GradScaler(amp_device.type, enabled=amp_device.type == "cuda")
        super().__init__(*args, **kwargs)

    def calculate_loss(self, curr_batch):
        with torch.autocast(self.amp_device.type):
            super().calculate_loss(curr_batch)

    def backward(self):
        self.scaler.scale(self.losses["total_loss"]).backward()

    def step_optimizers(self):
        for k, v in self.optimizers.items():
            if c_f.regex_replace("_optimizer$", "", k) not in self.freeze_these:
                self.scaler.step(v)
        self.scaler.update()


def run_cell(
    cfg: dict,
    run_dir: str,
    data: ProtocolData,
    method: dict,
    seed: int,
    device: torch.device,
    stop_after_epoch: int | None = None,
) -> dict:
    """Train and test one cell, resuming from its checkpoint if one exists; return its result.

    ``stop_after_epoch`` (tests only) raises ``SystemExit`` right after that epoch's checkpoint.
    """
    paths = cell_paths(run_dir, data.name, method["name"], seed)
    if os.path.exists(paths["result"]):
        return _io.read_json(paths["result"])
    work = paths["work"]
    ckpt_path = os.path.join(work, "ckpt.pt")
    records_dir = os.path.join(work, "records")
    ckpt = None
    if os.path.exists(ckpt_path):
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    elif os.path.isdir(work):
        shutil.rmtree(work)
    t = cfg["training"]
    iters = t.get("iterations_per_epoch") or max(1, len(data.train) // t["batch_size"])
    # the record files are written once, when the cell ends; until then the records live in
    # memory and in the checkpoint, so a partial write from a killed run is simply discarded.
    # TensorBoard writes as it goes: its event files are kept on resume, and the events logged
    # after the checkpoint (iteration ≥ epoch · iterations) are purged by the new writer.
    purge_step = None
    if os.path.isdir(records_dir):
        for entry in os.listdir(records_dir):
            path = os.path.join(records_dir, entry)
            if ckpt is not None and entry == "tensorboard":
                purge_step = ckpt["epoch"] * iters
            elif os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    os.makedirs(records_dir, exist_ok=True)

    no_learning = bool(method.get("no_learning"))
    t0 = time.perf_counter()
    seed_everything(seed)
    trunk, embedder = build_models(cfg, data, no_learning)
    trunk, embedder = trunk.to(device), embedder.to(device)
    keeper = make_record_keeper(records_dir, t.get("tensorboard", False), purge_step)
    hooks = logging_presets.HookContainer(
        keeper,
        primary_metric="mean_average_precision_at_r",
        validation_split_name="test",
        save_models=False,
        log_freq=t.get("log_freq", 5),
    )
    tester, captured = evaluate.make_tester(cfg, device, hooks)
    epochs = 0 if no_learning else t["epochs"]

    if not no_learning:
        context = {
            "num_classes": data.num_train_classes,
            "embedding_size": cfg["model"]["embedding_size"],
        }
        loss = registry.build(method["loss"], context).to(device)
        miner = registry.build(method.get("miner"), context)
        wd = t.get("weight_decay", 0.0)
        optimizers = {
            "trunk_optimizer": torch.optim.Adam(
                trunk.parameters(), lr=t["lr_trunk"], weight_decay=wd
            )
        }
        if _has_params(embedder):
            optimizers["embedder_optimizer"] = torch.optim.Adam(
                embedder.parameters(), lr=t["lr_embedder"], weight_decay=wd
            )
        if _has_params(loss):
            optimizers["metric_loss_optimizer"] = torch.optim.Adam(
                loss.parameters(), lr=t["lr_loss"]
            )
        bs = t["batch_size"]
        m = effective_m_per_class(t["m_per_class"], bs, data.num_train_classes)
        sampler = samplers.MPerClassSampler(
            data.train.labels, m=m, batch_size=bs, length_before_new_iter=iters * bs
        )
        models = {"trunk": trunk, "embedder": embedder}
        amp = bool(t.get("amp"))
        start_epoch = 1
        if ckpt is not None:
            trunk.load_state_dict(ckpt["trunk"])
            embedder.load_state_dict(ckpt["embedder"])
            loss.load_state_dict(ckpt["loss"])
            if miner is not None and ckpt.get("miner") is not None:
                miner.load_state_dict(ckpt["miner"])
            for k, opt in optimizers.items():
                opt.load_state_dict(ckpt["optimizers"][k])
            sampler.labels = list(ckpt["sampler_labels"])
            set_pending_records(keeper, ckpt["records"])
            start_epoch = ckpt["epoch"] + 1

        def end_of_epoch_hook(trainer):
            state = {
                "epoch": trainer.epoch,
                "trunk": trunk.state_dict(),
                "embedder": embedder.state_dict(),
                "loss": loss.state_dict(),
                "miner": miner.state_dict() if miner is not None else None,
                "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                "sampler_labels": list(sampler.labels),
                "rng": rng_state(),
                "records": pending_records(keeper),
                "grad_scaler": trainer.scaler.state_dict() if amp else None,
                "elapsed": time.perf_counter() - t0 + (ckpt or {}).get("elapsed", 0.0),
            }
            if _TEST_SLEEP:
                time.sleep(_TEST_SLEEP)  # tests: a window to SIGKILL before the checkpoint lands
            _io.atomic_torch_save(ckpt_path, state)
            if stop_after_epoch is not None and trainer.epoch >= stop_after_epoch:
                raise SystemExit(f"stopped after epoch {trainer.epoch} (stop_after_epoch)")
            return True

        trainer_cls = trainers.MetricLossOnly
        kwargs = {}
        if amp:
            trainer_cls, kwargs = _AmpMetricLossOnly, {"amp_device": device}
        trainer = trainer_cls(
            models=models,
            optimizers=optimizers,
            batch_size=bs,
            loss_funcs={"metric_loss": loss},
            mining_funcs={"tuple_miner": miner} if miner is not None else {},
            dataset=data.train,
            data_device=device,
            sampler=sampler,
            dataloader_num_workers=t.get("num_workers", 0),
            end_of_iteration_hook=hooks.end_of_iteration_hook,
            end_of_epoch_hook=end_of_epoch_hook,
            **kwargs,
        )
        if ckpt is not None:
            set_rng_state(ckpt["rng"])
            if amp and ckpt.get("grad_scaler") is not None:
                trainer.scaler.load_state_dict(ckpt["grad_scaler"])  # the loss scale goes on
        if start_epoch <= epochs:
            trainer.train(start_epoch=start_epoch, num_epochs=epochs)

    result = evaluate.run_tester(tester, captured, data.test, epochs, trunk, embedder)
    keeper.save_records()
    result.update(
        protocol=data.name,
        method=method["name"],
        seed=seed,
        epochs=epochs,
        seconds=round(time.perf_counter() - t0 + (ckpt or {}).get("elapsed", 0.0), 3),
        resumed_from_epoch=(ckpt or {}).get("epoch"),
    )
    _io.atomic_replace_folder(records_dir, paths["records"])
    _io.atomic_write_json(paths["result"], result)
    shutil.rmtree(work, ignore_errors=True)
    _remove_empty_parents(work, stop=run_dir)
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
