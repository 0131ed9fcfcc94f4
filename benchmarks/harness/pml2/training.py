"""PML 2's trainer (``trainers.MetricLossOnly``), with an autocast variant."""

from __future__ import annotations

import torch
from pytorch_metric_learning import trainers
from pytorch_metric_learning.utils import common_functions as c_f

MetricLossOnly = trainers.MetricLossOnly


class AmpMetricLossOnly(trainers.MetricLossOnly):
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


def make_trainer(*, amp: bool, device: torch.device, **kwargs) -> MetricLossOnly:
    """``MetricLossOnly(**kwargs)``, or its autocast variant when ``amp``; ``train(start_epoch,
    num_epochs)`` runs it, ``end_of_epoch_hook(trainer)`` sees ``trainer.epoch``."""
    if amp:
        return AmpMetricLossOnly(amp_device=device, **kwargs)
    return MetricLossOnly(**kwargs)


def set_progress_bars(show: bool) -> None:
    """PML's trainer draws its own tqdm bar: make it transient (or hide it)."""
    from pytorch_metric_learning.trainers import base_trainer

    from . import _tqdm_shim

    base_trainer.tqdm = _tqdm_shim(show)
