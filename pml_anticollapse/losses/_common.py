"""Small helpers shared by the plugin's PML loss classes."""

from __future__ import annotations

import torch


def already_reduced(value: torch.Tensor) -> dict:
    """PML's loss-dict entry for a single number."""
    return {"losses": value, "indices": None, "reduction_type": "already_reduced"}
