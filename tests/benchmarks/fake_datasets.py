"""Tiny on-disk CUB / Cars196 / SOP trees that PML's dataset classes load with download=False.

Each tree has the real archive's layout and metadata files (see
``benchmarks.harness.real_data.LAYOUTS``) and a few small random images, so the real-data path
of the harness runs without the real data:

- half of the classes (rounded up) take class ids of PML's train split, the rest ids of its
  test split (CUB 1.. / 101.., Cars196 1.. / 99.., SOP 1.. / then the following ids);
- images are noise with a per-class mean colour (so a model can learn something), of a few
  sizes around ``size`` (not square), in modes RGB, L (grayscale) and, for PNGs, RGBA, saved as
  JPEG or PNG — exercising the RGB conversion PML leaves out;
- Cars196 puts each class's images in both the Kaggle ``train`` and ``test`` folders (as the real
  archive does; PML merges them and splits by class), and one class name holds a '/' that the
  folder name spells '-', as in "Ram C/V Cargo Van Minivan 2012".
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

FAKE_DATASETS = ("cub", "cars196", "sop")
_MAX_CLASSES = {"cub": 200, "cars196": 196, "sop": 22634}
_TEST_FIRST_ID = {"cub": 101, "cars196": 99}  # SOP: test ids follow the train ids


def _class_ids(name: str, num_classes: int) -> tuple[list[int], list[int]]:
    n_train = (num_classes + 1) // 2
    n_test = num_classes - n_train
    train = list(range(1, n_train + 1))
    first = _TEST_FIRST_ID.get(name, n_train + 1)
    return train, list(range(first, first + n_test))


def _write_image(path: str, index: int, class_id: int, size: int, rng: np.random.RandomState):
    """Noise around a class colour; mode and format cycle with ``index``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    w = size + 6 * (index % 3)
    h = size + 4 * ((index + 1) % 2)
    colour = np.array([(37 * class_id) % 256, (91 * class_id) % 256, (53 * class_id) % 256])
    pixels = np.clip(colour + rng.normal(0, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    kind = index % 4
    if kind == 1:
        img = img.convert("L")
    elif kind == 3 and path.endswith(".png"):
        img = img.convert("RGBA")
    if path.endswith(".png"):
        img.save(path, format="PNG")
    else:
        img.save(path, format="JPEG", quality=90)


def _image_name(stem: str, index: int, ext: str) -> str:
    # every third image is a PNG; the others keep the dataset's JPEG extension
    return f"{stem}.png" if index % 3 == 2 else f"{stem}{ext}"


def make_fake_tree(
    name: str,
    root: str,
    num_classes: int = 4,
    images_per_class: int = 3,
    size: int = 24,
    *,
    seed: int = 0,
) -> str:
    """Write a fake ``name`` tree under ``root`` (created if needed) and return ``root``.

    Args:
        name: ``"cub"``, ``"cars196"`` or ``"sop"``.
        root: folder to write into; pass it as ``--data-root`` / ``root=``.
        num_classes: total classes, ≥ 2; ⌈n/2⌉ fall in PML's train split, ⌊n/2⌋ in its test split.
        images_per_class: images per class, ≥ 1 (Cars196 spreads them over its two folders).
        size: approximate image side in pixels, ≥ 8.
        seed: seed of the pixel noise.

    Raises:
        ValueError: unknown ``name``, or ``num_classes``, ``images_per_class``, ``size`` out of
            range.
    """
    if name not in FAKE_DATASETS:
        raise ValueError(f"name must be one of {', '.join(FAKE_DATASETS)}, got {name!r}")
    if not (2 <= num_classes <= _MAX_CLASSES[name]):
        raise ValueError(
            f"num_classes must be in [2, {_MAX_CLASSES[name]}] for {name}, got {num_classes}"
        )
    if images_per_class < 1:
        raise ValueError(f"images_per_class must be >= 1, got {images_per_class}")
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    root = os.fspath(root)
    os.makedirs(root, exist_ok=True)
    rng = np.random.RandomState(seed)
    train_ids, test_ids = _class_ids(name, num_classes)
    writer = {"cub": _write_cub, "cars196": _write_cars196, "sop": _write_sop}[name]
    writer(root, train_ids + test_ids, images_per_class, size, rng)
    return root


def _write_cub(root, class_ids, per_class, size, rng):
    base = os.path.join(root, "CUB_200_2011")
    images, labels = [], []
    image_id = 0
    for c in class_ids:
        folder = f"{c:03d}.Fake_Bird_{c}"
        for i in range(per_class):
            image_id += 1
            rel = f"{folder}/" + _image_name(f"Fake_Bird_{c}_{i:04d}", image_id, ".jpg")
            _write_image(os.path.join(base, "images", rel), image_id, c, size, rng)
            images.append(f"{image_id} {rel}\n")
            labels.append(f"{image_id} {c}\n")
    with open(os.path.join(base, "images.txt"), "w") as f:
        f.writelines(images)
    with open(os.path.join(base, "image_class_labels.txt"), "w") as f:
        f.writelines(labels)


def _car_name(c: int) -> str:
    return "Ram C/V Cargo Van Minivan 2012" if c == 2 else f"Fake Car Model {c} 2012"


def _write_cars196(root, class_ids, per_class, size, rng):
    # names.csv always lists the 196 names: PML indexes it by class id − 1
    with open(os.path.join(root, "names.csv"), "w") as f:
        f.writelines(_car_name(c) + "\n" for c in range(1, 197))
    rows = {"train": [], "test": []}
    image_id = 0
    for c in class_ids:
        folder = _car_name(c).replace("/", "-")
        for i in range(per_class):
            image_id += 1
            kaggle_split = "train" if i % 2 == 0 else "test"
            fname = _image_name(f"{image_id:05d}", image_id, ".jpg")
            path = os.path.join(root, "car_data", "car_data", kaggle_split, folder, fname)
            _write_image(path, image_id, c, size, rng)
            rows[kaggle_split].append(f"{fname},1,1,{size - 1},{size - 1},{c}\n")
    for kaggle_split, lines in rows.items():
        with open(os.path.join(root, f"anno_{kaggle_split}.csv"), "w") as f:
            f.writelines(lines)


_SOP_SUPER = ("bicycle_final", "cabinet_final", "chair_final", "coffee_maker_final")


def _write_sop(root, class_ids, per_class, size, rng):
    base = os.path.join(root, "Stanford_Online_Products")
    n_train = (len(class_ids) + 1) // 2
    splits = {"train": class_ids[:n_train], "test": class_ids[n_train:]}
    image_id = 0
    for split, ids in splits.items():
        lines = ["image_id class_id super_class_id path\n"]
        for c in ids:
            super_id = 1 + c % len(_SOP_SUPER)
            for i in range(per_class):
                image_id += 1
                rel = f"{_SOP_SUPER[super_id - 1]}/" + _image_name(f"{c}_{i}", image_id, ".JPG")
                _write_image(os.path.join(base, rel), image_id, c, size, rng)
                lines.append(f"{image_id} {c} {super_id} {rel}\n")
        with open(os.path.join(base, f"Ebay_{split}.txt"), "w") as f:
            f.writelines(lines)
