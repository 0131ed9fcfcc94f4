"""Digits models of the harness: the plain MLP and the residual MLPs (``model.name``
digits_mlp, digits_residual_mlp, digits_wide_residual_mlp)."""

from __future__ import annotations

import torch


class DigitsMLP(torch.nn.Sequential):
    """64 pixels → 256 → 256 → ``embedding_size``: the trunk+embedder of the digits benchmark."""

    def __init__(self, in_dim: int = 64, hidden: int = 256, embedding_size: int = 64):
        super().__init__(*_mlp(in_dim, hidden, embedding_size))


def _mlp(in_dim: int, hidden: int, out_dim: int) -> torch.nn.Sequential:
    """in_dim → hidden → hidden → out_dim with ReLUs: the learned branch of the residual models."""
    return torch.nn.Sequential(
        torch.nn.Linear(in_dim, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, out_dim),
    )


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
        self.mlp = _mlp(in_dim, hidden, embedding_size)
        torch.nn.init.zeros_(self.mlp[-1].weight)
        torch.nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(x)


class WideResidualDigitsMLP(torch.nn.Module):
    """z = [x, 0] + MLP(x): a residual MLP whose embedding is wider than its input.

    64 pixels → ``hidden`` → ``hidden`` → ``embedding_size`` (≥ 64). The input is copied into
    the first ``in_dim`` coordinates of the embedding (identity), the remaining
    ``embedding_size - in_dim`` coordinates are learned only. The rows of the last layer that
    feed the identity coordinates start at 0; those of the extra coordinates start at PyTorch's
    default initialisation times ``extra_init_scale``. They must not start at 0: extra
    coordinates that are 0 for every sample are a stationary point of every distance-based
    loss on normalised embeddings and of the coding rate (the gradient of
    ``logdet(I + c ZᵀZ)`` is ``2c Z (I + c ZᵀZ)⁻¹``, zero in zero columns of Z), so they would
    never move and the model would be the 64-d residual MLP. With the small default scale the
    model starts close to the raw pixels (the ``no_learning`` row).

    Args:
        in_dim: size of the flattened input (64 for 8x8 digits).
        hidden: width of the two hidden layers.
        embedding_size: size of the embedding, at least ``in_dim``.
        extra_init_scale: factor on the default initial weights of the extra coordinates;
            0 reproduces the (stationary) all-zero start.

    Raises:
        ValueError: if ``embedding_size`` is smaller than ``in_dim`` or ``extra_init_scale``
            is negative.
    """

    def __init__(
        self,
        in_dim: int = 64,
        hidden: int = 256,
        embedding_size: int = 128,
        extra_init_scale: float = 0.1,
    ):
        super().__init__()
        if embedding_size < in_dim:
            raise ValueError(
                f"embedding_size must be at least the input size {in_dim} for the wide "
                f"residual MLP, got {embedding_size}"
            )
        if extra_init_scale < 0:
            raise ValueError(f"extra_init_scale must be non-negative, got {extra_init_scale}")
        self.in_dim = in_dim
        self.embedding_size = embedding_size
        self.mlp = _mlp(in_dim, hidden, embedding_size)
        last = self.mlp[-1]
        with torch.no_grad():
            last.weight[:in_dim].zero_()
            last.weight[in_dim:].mul_(extra_init_scale)
            last.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.embedding_size - self.in_dim
        return torch.nn.functional.pad(x, (0, pad)) + self.mlp(x)
