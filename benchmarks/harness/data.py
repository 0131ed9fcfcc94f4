"""Datasets of the harness: the embedded digits protocols and the real image datasets.

Digits (sklearn ``load_digits``, shipped inside sklearn: 1797 8x8 images, 10 classes) under two
protocols, both configurable in ``dataset.protocols``:

- ``zero_shot``: train on ``train_classes``, evaluate retrieval on the unseen ``test_classes``
  (class-disjoint train/test, the standard metric-learning protocol);
- ``superclass``: train on coarse labels (digit -> index of its group in ``groups``) on one part
  of the images, evaluate retrieval of the *fine* digits on the held-out part
  (``test_fraction``, stratified by digit, split fixed by ``dataset.split_seed``). A loss that
  collapses each coarse class to a point loses the digits inside it.

Real datasets (``cub``, ``cars196``, ``sop``) come from ``benchmarks.real_data`` (PML's dataset
classes on a local root, never downloading): one protocol, ``zero_shot`` = split "train" vs "test".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


class TensorPairs(torch.utils.data.Dataset):
    """(x[i], y[i]) pairs with a ``labels`` attribute, as PML's samplers and testers expect."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor):
        if x.shape[0] != labels.shape[0]:
            raise ValueError(
                f"x and labels must have the same length, got {x.shape[0]} and {labels.shape[0]}"
            )
        self.x = x
        self.labels = labels

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i):
        return self.x[i], self.labels[i]


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


@dataclass
class ProtocolData:
    name: str
    train: torch.utils.data.Dataset
    test: torch.utils.data.Dataset
    num_train_classes: int
    input_kind: str  # "vector" (digits) or "image"
    description: str


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


def _train_set(x: np.ndarray, y: np.ndarray, augment_shift: int) -> TensorPairs:
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return ShiftedDigits(xt, yt, augment_shift) if augment_shift else TensorPairs(xt, yt)


def digits_protocol(
    name: str, spec: dict, split_seed: int = 0, augment_shift: int = 0
) -> ProtocolData:
    """Build one digits protocol from its config entry (``augment_shift``: training images only)."""
    x, y = load_digits_arrays()
    kind = spec.get("type")
    if kind == "zero_shot":
        train_c = _check_classes(
            spec.get("train_classes"), f"dataset.protocols.{name}.train_classes"
        )
        test_c = _check_classes(spec.get("test_classes"), f"dataset.protocols.{name}.test_classes")
        if set(train_c) & set(test_c):
            raise ValueError(
                f"dataset.protocols.{name}: train_classes and test_classes must be disjoint, "
                f"got {sorted(set(train_c) & set(test_c))} in both"
            )
        tr = np.isin(y, train_c)
        te = np.isin(y, test_c)
        train = _train_set(x[tr], _remap(y[tr]), augment_shift)
        test = TensorPairs(torch.from_numpy(x[te]), torch.from_numpy(y[te]))
        return ProtocolData(
            name,
            train,
            test,
            len(train_c),
            "vector",
            f"train digits {train_c}, test retrieval on unseen digits {test_c}",
        )
    if kind == "superclass":
        groups = spec.get("groups")
        if not isinstance(groups, list) or len(groups) < 2:
            raise ValueError(
                f"dataset.protocols.{name}.groups must be a list of >= 2 digit lists, "
                f"got {groups!r}"
            )
        coarse = {}
        for g, members in enumerate(groups):
            for c in _check_classes(members, f"dataset.protocols.{name}.groups[{g}]"):
                if c in coarse:
                    raise ValueError(f"dataset.protocols.{name}.groups: digit {c} is in two groups")
                coarse[c] = g
        frac = spec.get("test_fraction", 0.5)
        if not isinstance(frac, (int, float)) or not 0 < frac < 1:
            raise ValueError(
                f"dataset.protocols.{name}.test_fraction must be in (0, 1), got {frac!r}"
            )
        keep = np.isin(y, list(coarse))
        x, y = x[keep], y[keep]
        rng = np.random.RandomState(split_seed)
        test_mask = np.zeros(len(y), dtype=bool)
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            rng.shuffle(idx)
            test_mask[idx[: round(frac * len(idx))]] = True
        yc = np.array([coarse[int(c)] for c in y], dtype=np.int64)
        train = _train_set(x[~test_mask], yc[~test_mask], augment_shift)
        test = TensorPairs(torch.from_numpy(x[test_mask]), torch.from_numpy(y[test_mask]))
        return ProtocolData(
            name,
            train,
            test,
            len(groups),
            "vector",
            f"train on coarse groups {groups}, test retrieval of fine digits on held-out "
            f"{frac:.0%} of images",
        )
    raise ValueError(
        f"dataset.protocols.{name}.type must be 'zero_shot' or 'superclass', got {kind!r}"
    )


def build_protocols(cfg: dict) -> dict[str, ProtocolData]:
    """Every protocol of the config, by name (digits: as configured; real datasets: zero_shot)."""
    ds = cfg["dataset"]
    if ds["name"] == "digits":
        return {
            n: digits_protocol(n, p, ds.get("split_seed", 0), ds.get("augment_shift", 0))
            for n, p in ds["protocols"].items()
        }
    if not ds.get("root"):
        raise ValueError(
            f"dataset.root (--data-root) must point to a local copy of {ds['name']}; "
            "nothing is downloaded"
        )
    from . import real_data

    size = ds.get("image_size", 224)
    train = real_data.build_real_dataset(ds["name"], ds["root"], "train", size, True)
    test = real_data.build_real_dataset(ds["name"], ds["root"], "test", size, False)
    n = int(torch.as_tensor(train.labels).unique().numel())
    return {
        "zero_shot": ProtocolData(
            "zero_shot",
            train,
            test,
            n,
            "image",
            f"{ds['name']}: train split ({n} classes), test retrieval on the unseen test split",
        )
    }
