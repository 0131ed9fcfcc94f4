"""sklearn digits (``load_digits``, shipped inside sklearn: 1797 8x8 images, 10 classes).

Protocols (``dataset.protocols.<name>.type``):

- ``zero_shot``: train on ``train_classes``, evaluate retrieval on the unseen ``test_classes``
  (class-disjoint train/test, the standard metric-learning protocol);
- ``superclass``: train on coarse labels (digit -> index of its group in ``groups``) on one part
  of the images, evaluate retrieval of the *fine* digits on the held-out part
  (``test_fraction``, stratified by digit, split fixed by ``dataset.split_seed``). A loss that
  collapses each coarse class to a point loses the digits inside it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..schema import non_negative_int, option
from . import (
    DatasetBase,
    ProtocolBase,
    ProtocolData,
    TensorPairs,
    register_dataset,
    register_protocol,
)


class ShiftedDigits(TensorPairs):
    """Training digits, each drawn shifted by up to ``max_shift`` pixels (zero fill) at random.

    The shift is drawn from torch's global generator, so a seeded (and resumed) run draws the
    same shifts.
    """

    def __init__(self, x: torch.Tensor, labels: torch.Tensor, max_shift: int, side: int = 8):
        super().__init__(x, labels)
        if not isinstance(max_shift, int) or not 0 <= max_shift < side:
            raise ValueError(
                f"dataset.augment_shift must be an integer in [0, {side}), got {max_shift!r}"
            )
        self.max_shift = max_shift
        self.side = side

    def __getitem__(self, i):
        img = self.x[i].view(self.side, self.side)
        dy, dx = (torch.randint(-self.max_shift, self.max_shift + 1, (2,))).tolist()
        pad = torch.nn.functional.pad(img, (self.max_shift,) * 4)
        top, left = self.max_shift - dy, self.max_shift - dx
        out = pad[top : top + self.side, left : left + self.side]
        return out.reshape(-1), self.labels[i]

    def without_augmentation(self) -> TensorPairs:
        """The same digits unshifted (the view validation folds retrieve on)."""
        return TensorPairs(self.x, self.labels)


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


def _remap(labels: np.ndarray) -> np.ndarray:
    _, inv = np.unique(labels, return_inverse=True)
    return inv.astype(np.int64)


def _check_classes(value, name: str) -> list[int]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(c, int) and 0 <= c <= 9 for c in value)
    ):
        raise ValueError(f"{name} must be a non-empty list of digits 0-9, got {value!r}")
    return value


@register_dataset("digits")
@dataclasses.dataclass
class Digits(DatasetBase):
    """sklearn digits, 8x8 pixels as 64-d vectors in [0, 1] (nothing downloaded)."""

    split_seed: int = option(0, "superclass protocols: seed of the held-out split")
    augment_shift: int = option(
        0, "shift training images by up to this many pixels (0 = off)", check=non_negative_int
    )

    default_protocols = {
        "zero_shot": {
            "type": "zero_shot",
            "train_classes": [0, 1, 2, 3, 4],
            "test_classes": [5, 6, 7, 8, 9],
        },
    }

    def validate(self, where: str) -> None:
        if not self.augment_shift < 8:
            raise ValueError(
                f"{where}.augment_shift must be an integer in [0, 8), got {self.augment_shift!r}"
            )

    def train_set(self, x: np.ndarray, y: np.ndarray) -> TensorPairs:
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        if self.augment_shift:
            return ShiftedDigits(xt, yt, self.augment_shift)
        return TensorPairs(xt, yt)


@register_protocol("digits", "zero_shot")
@dataclasses.dataclass
class DigitsZeroShot(ProtocolBase):
    """train on some digits, test retrieval on the unseen others"""

    train_classes: list[int] = option([0, 1, 2, 3, 4], "digits to train on")
    test_classes: list[int] = option([5, 6, 7, 8, 9], "digits to retrieve (disjoint from train)")

    def validate(self, where: str) -> None:
        _check_classes(self.train_classes, f"{where}.train_classes")
        _check_classes(self.test_classes, f"{where}.test_classes")
        both = set(self.train_classes) & set(self.test_classes)
        if both:
            raise ValueError(
                f"{where}: train_classes and test_classes must be disjoint, "
                f"got {sorted(both)} in both"
            )

    def build(self, dataset: Digits, name: str) -> ProtocolData:
        x, y = load_digits_arrays()
        tr = np.isin(y, self.train_classes)
        te = np.isin(y, self.test_classes)
        return ProtocolData(
            name,
            dataset.train_set(x[tr], _remap(y[tr])),
            TensorPairs(torch.from_numpy(x[te]), torch.from_numpy(y[te])),
            len(self.train_classes),
            "vector",
            f"train digits {self.train_classes}, test retrieval on unseen digits "
            f"{self.test_classes}",
        )


@register_protocol("digits", "superclass")
@dataclasses.dataclass
class DigitsSuperclass(ProtocolBase):
    """train on coarse labels, test fine digits on held-out images"""

    groups: list[list[int]] = option(
        [[0, 6, 8, 9], [1, 4, 7], [2, 3, 5]], "coarse class = index of the group of a digit"
    )
    test_fraction: float = option(0.5, "held-out fraction of the images (stratified by digit)")

    def validate(self, where: str) -> None:
        if len(self.groups) < 2:
            raise ValueError(
                f"{where}.groups must be a list of >= 2 digit lists, got {self.groups!r}"
            )
        seen = set()
        for g, members in enumerate(self.groups):
            for c in _check_classes(members, f"{where}.groups[{g}]"):
                if c in seen:
                    raise ValueError(f"{where}.groups: digit {c} is in two groups")
                seen.add(c)
        if not 0 < self.test_fraction < 1:
            raise ValueError(
                f"{where}.test_fraction must be in (0, 1), got {self.test_fraction!r}"
            )

    def build(self, dataset: Digits, name: str) -> ProtocolData:
        x, y = load_digits_arrays()
        coarse = {c: g for g, members in enumerate(self.groups) for c in members}
        keep = np.isin(y, list(coarse))
        x, y = x[keep], y[keep]
        rng = np.random.RandomState(dataset.split_seed)
        test_mask = np.zeros(len(y), dtype=bool)
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            rng.shuffle(idx)
            test_mask[idx[: round(self.test_fraction * len(idx))]] = True
        yc = np.array([coarse[int(c)] for c in y], dtype=np.int64)
        return ProtocolData(
            name,
            dataset.train_set(x[~test_mask], yc[~test_mask]),
            TensorPairs(torch.from_numpy(x[test_mask]), torch.from_numpy(y[test_mask])),
            len(self.groups),
            "vector",
            f"train on coarse groups {self.groups}, test retrieval of fine digits on held-out "
            f"{self.test_fraction:.0%} of images",
        )
