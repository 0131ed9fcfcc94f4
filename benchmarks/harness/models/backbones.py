"""Image backbones of the harness (``model.name`` resnet50, bninception_like, tiny)."""

from __future__ import annotations

import os
import warnings

import torch

# ------------------------------------------------------------------------- image backbones
#
# ``build_backbone`` returns (trunk, embedder) for PML's trainers (models={"trunk": ...,
# "embedder": ...}). The trunk maps (B, 3, H, W) images to (B, trunk_dim) features with
# average + max pooling (their sum, as in Kim et al., "Proxy Anchor Loss", CVPR 2020, arXiv
# 2003.13911, and the official ACL code); the embedder is a plain Linear(trunk_dim, embedding_size).
# Nothing here L2-normalises: PML's distances normalise inside the loss (LpDistance and
# CosineSimilarity have normalize_embeddings=True by default), the plugin's regularizers take
# normalize=True, and GlobalEmbeddingSpaceTester(normalize_embeddings=True) normalises before
# retrieval. So the embedder's raw output is what the harness stores, and its norm carries no
# meaning.

BACKBONES = ("resnet50", "bninception_like", "tiny")

_BN_TYPES = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)


class AvgMaxPool(torch.nn.Module):
    """(B, C, H, W) → (B, C): global average pooling + global max pooling (summed)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) + x.amax(dim=(2, 3))


class FrozenBNMixin:
    """Keeps every BatchNorm layer in eval mode with frozen affine parameters.

    The usual DML practice when fine-tuning an ImageNet backbone with small class-balanced
    batches: the BN statistics and affine parameters of the pretrained network stay as they are
    (e.g. Kim et al., CVPR 2020; Musgrave et al., ECCV 2020). ``train()`` switches every other
    layer as usual.
    """

    frozen_bn: bool = False

    def freeze_bn(self, frozen: bool = True):
        self.frozen_bn = bool(frozen)
        for m in self.modules():
            if isinstance(m, _BN_TYPES):
                for p in m.parameters():
                    p.requires_grad_(not self.frozen_bn)
        self.train(self.training)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_bn:
            for m in self.modules():
                if isinstance(m, _BN_TYPES):
                    m.eval()
        return self


def _conv_bn(c_in: int, c_out: int, k: int, stride: int = 1) -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
        torch.nn.BatchNorm2d(c_out),
        torch.nn.ReLU(inplace=True),
    )


class TinyTrunk(FrozenBNMixin, torch.nn.Module):
    """A 3-layer CNN (3→16→32→64 channels, stride 2 each) + avg+max pooling; for tests."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.features = torch.nn.Sequential(
            _conv_bn(3, width, 3, 2), _conv_bn(width, 2 * width, 3, 2),
            _conv_bn(2 * width, 4 * width, 3, 2),
        )
        self.pool = AvgMaxPool()
        self.output_dim = 4 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))


class InceptionBlock(torch.nn.Module):
    """BN-Inception module: 1×1 | 1×1→3×3 | 1×1→3×3→3×3 | pool(→1×1), concatenated.

    With ``stride=2`` the 1×1 branch is absent (``n1x1=0``), the 3×3 branches stride, and the
    pool branch is a 3×3/2 max pool passed through (no projection), as in the paper's 3c / 4e.
    """

    def __init__(self, c_in, n1x1, n3x3r, n3x3, nd3x3r, nd3x3, pool, proj, stride=1):
        super().__init__()
        self.branches = torch.nn.ModuleList()
        if n1x1:
            self.branches.append(_conv_bn(c_in, n1x1, 1))
        self.branches.append(
            torch.nn.Sequential(_conv_bn(c_in, n3x3r, 1), _conv_bn(n3x3r, n3x3, 3, stride))
        )
        self.branches.append(
            torch.nn.Sequential(
                _conv_bn(c_in, nd3x3r, 1), _conv_bn(nd3x3r, nd3x3, 3),
                _conv_bn(nd3x3, nd3x3, 3, stride),
            )
        )
        pool_layer = (torch.nn.AvgPool2d if pool == "avg" else torch.nn.MaxPool2d)(
            3, stride=stride, padding=1
        )
        self.branches.append(
            torch.nn.Sequential(pool_layer, _conv_bn(c_in, proj, 1)) if proj else pool_layer
        )
        self.output_dim = n1x1 + n3x3 + nd3x3 + (proj or c_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)


# (name, #1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool, pool proj, stride):
# the table of Ioffe & Szegedy, "Batch Normalization", ICML 2015 (arXiv 1502.03167), Figure 5.
_BN_INCEPTION_BLOCKS = (
    ("3a", 64, 64, 64, 64, 96, "avg", 32, 1),
    ("3b", 64, 64, 96, 64, 96, "avg", 64, 1),
    ("3c", 0, 128, 160, 64, 96, "max", 0, 2),
    ("4a", 224, 64, 96, 96, 128, "avg", 128, 1),
    ("4b", 192, 96, 128, 96, 128, "avg", 128, 1),
    ("4c", 160, 128, 160, 128, 160, "avg", 128, 1),
    ("4d", 96, 128, 192, 160, 192, "avg", 128, 1),
    ("4e", 0, 128, 192, 192, 256, "max", 0, 2),
    ("5a", 352, 192, 320, 160, 224, "avg", 128, 1),
    ("5b", 352, 192, 320, 192, 224, "max", 128, 1),
)


class BNInceptionLike(FrozenBNMixin, torch.nn.Module):
    """A BN-Inception-like CNN (1024-d features) written from the paper's table.

    Stem: 7×7/2 conv (64) → 3×3/2 max pool → 1×1 conv (64) → 3×3 conv (192) → 3×3/2 max pool;
    then inception modules 3a–5b (see ``_BN_INCEPTION_BLOCKS``), every conv followed by BN +
    ReLU; then avg+max pooling. Channel counts follow Ioffe & Szegedy (ICML 2015, Figure 5); it
    is not the Caffe model converted by other libraries (padding and pooling details may
    differ), so no public ImageNet checkpoint loads into it: ``weights`` must be a state dict
    saved from this very module. The DML literature's BN-Inception results use ImageNet
    weights; from scratch, expect far lower figures.
    """

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(
            _conv_bn(3, 64, 7, 2),
            torch.nn.MaxPool2d(3, stride=2, padding=1),
            _conv_bn(64, 64, 1),
            _conv_bn(64, 192, 3),
            torch.nn.MaxPool2d(3, stride=2, padding=1),
        )
        blocks, c = [], 192
        for _, *cfg, stride in _BN_INCEPTION_BLOCKS:
            block = InceptionBlock(c, *cfg, stride=stride)
            blocks.append(block)
            c = block.output_dim
        self.blocks = torch.nn.Sequential(*blocks)
        self.pool = AvgMaxPool()
        self.output_dim = c  # 1024

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(self.stem(x)))


class ResNet50Trunk(FrozenBNMixin, torch.nn.Module):
    """torchvision's ResNet-50 body (conv1 … layer4) + avg+max pooling → 2048-d features."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.body = torch.nn.Sequential(
            net.conv1, net.bn1, net.relu, net.maxpool,
            net.layer1, net.layer2, net.layer3, net.layer4,
        )
        self.pool = AvgMaxPool()
        self.output_dim = net.fc.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(x))


def _load_state_dict(weights: str) -> dict:
    """A state dict from a local file (a bare state dict or {"state_dict": ...})."""
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be a path to a local .pth file or None, got {weights!r}")
    if not os.path.isfile(weights):
        raise FileNotFoundError(
            f"weights file {os.fspath(weights)!r} not found; weights must be a local .pth file "
            f"(nothing is downloaded)"
        )
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(
            f"weights file {weights!r} holds no state dict, got {type(state).__name__}"
        )
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _resnet50(weights: str | None) -> ResNet50Trunk:
    try:
        from torchvision.models import resnet50
    except ImportError as e:
        raise ImportError(
            "backbone 'resnet50' needs torchvision, which is not installed: install the "
            "torchvision release built for your torch (pip install torchvision, matching "
            "torch's version as listed at https://pytorch.org/get-started/previous-versions/), "
            "or use backbone 'bninception_like' (no torchvision needed)"
        ) from e
    net = resnet50(weights=None)  # never download: weights come from a local file only
    if weights is not None:
        state = _load_state_dict(weights)
        result = net.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("fc.")]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"weights {weights!r} do not fit torchvision's ResNet-50: missing "
                f"{missing[:5]}, unexpected {result.unexpected_keys[:5]}"
            )
    return ResNet50Trunk(net)


def build_backbone(
    name: str,
    embedding_size: int,
    weights: str | None = None,
    *,
    frozen_bn: bool | None = None,
) -> tuple[torch.nn.Module, torch.nn.Linear]:
    """An image trunk and a linear embedder for PML's trainers and testers.

    Args:
        name: ``"resnet50"`` (torchvision's ResNet-50, 2048-d; needs torchvision),
            ``"bninception_like"`` (:class:`BNInceptionLike`, 1024-d) or ``"tiny"``
            (:class:`TinyTrunk`, 64-d, milliseconds at 32×32, for tests).
        embedding_size: output dimension of the embedder (512 in the presets).
        weights: path to a local state dict for the trunk (``.pth``; for ``"resnet50"``
            torchvision's ImageNet file, e.g. ``resnet50-11ad3fa6.pth``, whose ``fc.*`` keys are
            ignored), or None for random initialisation. Never downloaded.
        frozen_bn: keep BatchNorm layers in eval mode with frozen affine parameters (the DML
            practice for an ImageNet backbone). None (default): frozen iff ``weights`` is given,
            since freezing randomly initialised BN statistics makes no sense.

    Warns:
        UserWarning: ``"resnet50"`` or ``"bninception_like"`` with ``weights=None``.

    Returns:
        ``(trunk, embedder)``: trunk maps (B, 3, H, W) → (B, trunk.output_dim) with avg+max
        pooling; embedder is ``Linear(trunk.output_dim, embedding_size)``. Nothing is
        L2-normalised here: PML's distances, the plugin's regularizers and the tester do it.

    Raises:
        ValueError: unknown ``name``; ``embedding_size`` not positive; weights that do not fit.
        ImportError: ``"resnet50"`` without torchvision (the message says how to install it).
        FileNotFoundError: ``weights`` given but not a file.
    """
    if name not in BACKBONES:
        raise ValueError(f"name must be one of {', '.join(BACKBONES)}, got {name!r}")
    if isinstance(embedding_size, bool) or not isinstance(embedding_size, int) or (
        embedding_size <= 0
    ):
        raise ValueError(f"embedding_size must be a positive int, got {embedding_size!r}")
    if name == "resnet50":
        trunk = _resnet50(weights)
    else:
        trunk = BNInceptionLike() if name == "bninception_like" else TinyTrunk()
        if weights is not None:
            trunk.load_state_dict(_load_state_dict(weights))
    trunk.freeze_bn(weights is not None if frozen_bn is None else frozen_bn)
    if weights is None and name != "tiny":
        warnings.warn(
            f"backbone {name!r} starts from random weights (weights=None): the published "
            f"deep-metric-learning figures assume ImageNet weights given as a local file",
            stacklevel=2,
        )
    embedder = torch.nn.Linear(trunk.output_dim, embedding_size)
    return trunk, embedder
