"""Models of the harness, chosen by ``model.name`` through a registry.

The API (stable)
----------------

- :class:`ModelOptions` — the typed ``model`` section of a config (``name``, ``embedding_size``,
  ``hidden``, ``weights``), checked when the config is read (``name`` must be registered).
- :func:`register_model` ``(name)`` — decorator for a factory
  ``factory(options: ModelOptions, input_shape: tuple[int, ...]) -> (trunk, embedder)``;
  ``input_shape`` is the shape of one training item (``(64,)`` for digits, ``(3, H, W)`` for
  images). ``trunk`` and ``embedder`` are ``torch.nn.Module`` s as PML's trainers take them
  (``models={"trunk": ..., "embedder": ...}``; an ``Identity`` embedder has no optimizer).
- :func:`build_model` ``(options, input_shape)`` and :func:`raw_input_model` ``(input_kind)``
  (the model of a ``no_learning: true`` method: raw inputs, average-pooled to 16x16 for images).

How to add a model
------------------

A factory decorated with ``@register_model("my_net")`` in a module of this package (e.g.
``models/digits.py``, ``models/glyph_cnn.py`` or a new one, imported at the bottom of this
file), then
``model: {name: my_net}`` in a config. ``--help-config`` lists the registered names.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import torch

from ..schema import option, positive_int
from .backbones import (  # noqa: F401  (re-exported: the backbones' public names)
    BACKBONES,
    AvgMaxPool,
    BNInceptionLike,
    FrozenBNMixin,
    InceptionBlock,
    ResNet50Trunk,
    TinyTrunk,
    build_backbone,
)
from .digits import DigitsMLP, ResidualDigitsMLP, WideResidualDigitsMLP

_MODELS: dict[str, Callable] = {}


def register_model(name: str):
    """Decorator: register ``factory(options, input_shape) -> (trunk, embedder)`` as ``name``."""

    def deco(factory: Callable) -> Callable:
        if name in _MODELS and _MODELS[name] is not factory:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = factory
        return factory

    return deco


def _registry() -> dict[str, Callable]:
    """The registered models, after the dataset modules (which may register their own) loaded."""
    from .. import datasets

    datasets.load_builtin()
    return _MODELS


def model_names() -> tuple[str, ...]:
    return tuple(_registry())


@dataclasses.dataclass
class ModelOptions:
    """The ``model`` section of a config."""

    name: str = option("digits_mlp", "a registered model (see the list below)")
    embedding_size: int = option(
        64, "output dimension (512 in the image presets)", check=positive_int
    )
    hidden: int = option(256, "digits MLPs: width of the hidden layers", check=positive_int)
    weights: str | None = option(
        None, "image backbones: path to a local state dict, never downloaded"
    )

    def validate(self, where: str) -> None:
        if self.name not in _registry():
            raise ValueError(f"{where}.name must be one of {list(_MODELS)}, got {self.name!r}")
        if self.weights is not None:
            self.weights = os.path.expanduser(self.weights)  # not expanded after --set
            if not os.path.isfile(self.weights):
                raise ValueError(
                    f"{where}.weights must be an existing local file, got {self.weights!r}"
                )


def build_model(options: ModelOptions, input_shape: tuple[int, ...]):
    """(trunk, embedder) of the registered model ``options.name``."""
    if options.name not in _registry():
        raise ValueError(f"model.name must be one of {list(_MODELS)}, got {options.name!r}")
    return _MODELS[options.name](options, tuple(input_shape))


class RawPixels(torch.nn.Module):
    """Images as their pixels, flattened: at full resolution up to ``max_side`` (the 32x32 glyphs:
    3072-d), average-pooled to 16x16 above it (224x224 photos: 768-d, so kNN stays tractable)."""

    def __init__(self, max_side: int = 32, pooled_side: int = 16):
        super().__init__()
        self.max_side, self.pooled_side = max_side, pooled_side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if max(x.shape[-2:]) > self.max_side:
            x = torch.nn.functional.adaptive_avg_pool2d(x, self.pooled_side)
        return x.flatten(1)


def raw_input_model(input_kind: str):
    """(trunk, embedder) of the no-learning row: raw inputs (images: see :class:`RawPixels`)."""
    if input_kind == "vector":
        return torch.nn.Identity(), torch.nn.Identity()
    return RawPixels(), torch.nn.Identity()


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


@register_model("digits_mlp")
def _digits_mlp(o: ModelOptions, input_shape):
    return DigitsMLP(_numel(input_shape), o.hidden, o.embedding_size), torch.nn.Identity()


@register_model("digits_residual_mlp")
def _digits_residual_mlp(o: ModelOptions, input_shape):
    return ResidualDigitsMLP(_numel(input_shape), o.hidden, o.embedding_size), torch.nn.Identity()


@register_model("digits_wide_residual_mlp")
def _digits_wide_residual_mlp(o: ModelOptions, input_shape):
    net = WideResidualDigitsMLP(_numel(input_shape), o.hidden, o.embedding_size)
    return net, torch.nn.Identity()


def _backbone(name: str):
    def factory(o: ModelOptions, input_shape):
        return build_backbone(name, o.embedding_size, o.weights)

    factory.__name__ = f"_{name}"
    return factory


for _name in BACKBONES:
    register_model(_name)(_backbone(_name))


from . import glyph_cnn  # noqa: E402,F401  (registers glyph_cnn, glyph_cnn_small)
from .glyph_cnn import GlyphCNN  # noqa: E402,F401
