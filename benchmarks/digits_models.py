"""Extra digits models of the harness (the plain MLP is ``benchmarks.models.DigitsMLP``)."""

from __future__ import annotations

import torch


class ResidualDigitsMLP(torch.nn.Module):
    """z = x + MLP(x): the embedding starts at the raw pixels and learning adds to them.

    64 pixels → ``hidden`` → ``hidden`` → 64, plus the identity. The last layer starts at 0,
    so before training the embedding *is* the raw input (the ``no_learning`` row); a loss can
    then only move away from raw pixels as far as its gradients take it, which makes the
    benchmark measure what a loss destroys or keeps, not what a random MLP starts from.
    Needs ``embedding_size`` equal to the input size.
    """

    def __init__(self, in_dim: int = 64, hidden: int = 256, embedding_size: int = 64):
        super().__init__()
        if embedding_size != in_dim:
            raise ValueError(
                f"embedding_size must equal the input size {in_dim} for the residual MLP, "
                f"got {embedding_size}"
            )
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(in_dim, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, embedding_size),
        )
        torch.nn.init.zeros_(self.mlp[-1].weight)
        torch.nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(x)
