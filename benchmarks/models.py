"""Models of the harness: the digits MLP (and, from the real-data issue, image backbones)."""

from __future__ import annotations

import torch


class DigitsMLP(torch.nn.Sequential):
    """64 pixels → 256 → 256 → ``embedding_size``: the trunk+embedder of the digits benchmark."""

    def __init__(self, in_dim: int = 64, hidden: int = 256, embedding_size: int = 64):
        super().__init__(
            torch.nn.Linear(in_dim, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, embedding_size),
        )
