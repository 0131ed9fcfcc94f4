"""Real image datasets of the harness: CUB-200-2011, Cars196 and Stanford Online Products.

The data come from PML's own dataset classes (``pytorch_metric_learning.datasets.CUB``,
``Cars196``, ``StanfordOnlineProducts``) read from a local root; nothing is downloaded unless the
caller passes ``download=True`` explicitly. This module adds what those classes leave out:

- images converted to RGB (PML opens them with ``PIL.Image.open`` and no ``.convert("RGB")``, so a
  grayscale or CMYK image of CUB/SOP would break batching);
- labels remapped to 0..C-1 per split (PML yields the raw 1-based class ids: CUB test classes are
  101..200), exposed as ``dataset.labels`` (a 1-D LongTensor) for ``samplers.MPerClassSampler``;
- the standard deep-metric-learning transforms, written with PIL + torch because torchvision
  cannot be installed next to every torch build:

  - train: random resized crop (area scale 0.08–1, aspect ratio 3/4–4/3, bilinear) to
    ``image_size`` + horizontal flip with probability 0.5;
  - test: resize the shorter side to round(image_size·256/224), then a central
    ``image_size``×``image_size`` crop;
  - both: to float in [0, 1], then ImageNet mean/std normalisation.

  These are the transforms of the usual DML code bases (e.g. Kim et al., "Proxy Anchor Loss",
  CVPR 2020, arXiv 2003.13911; Musgrave et al., "A Metric Learning Reality Check", ECCV 2020,
  arXiv 2003.08505), re-implemented here.

Split convention (PML's, class-disjoint, the zero-shot protocol): CUB train = classes 1–100,
test = 101–200; Cars196 train = 1–98, test = 99–196 (PML merges the Kaggle folders' train and test
images and splits them by class); SOP train = ``Ebay_train.txt`` (classes 1–11318), test =
``Ebay_test.txt`` (11319–22634).

Randomness: the train transform draws from torch's global generator, so ``torch.manual_seed`` and
the per-worker seeding of ``torch.utils.data.DataLoader`` make it reproducible.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import torch
from PIL import Image

from ..schema import option, positive_int
from . import DatasetBase, ProtocolBase, ProtocolData, register_dataset, register_protocol

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SPLITS = ("train", "test", "train+test")

# name -> (PML class name, files that must exist under root, layout shown in error messages)
LAYOUTS = {
    "cub": (
        "CUB",
        ("CUB_200_2011/images.txt", "CUB_200_2011/image_class_labels.txt"),
        "<data-root>/CUB_200_2011/images.txt\n"
        "<data-root>/CUB_200_2011/image_class_labels.txt\n"
        "<data-root>/CUB_200_2011/images/001.Black_footed_Albatross/<image>.jpg ...\n"
        "(the CUB_200_2011.tgz archive extracted as is)",
    ),
    "cars196": (
        "Cars196",
        ("names.csv", "anno_train.csv", "anno_test.csv"),
        "<data-root>/names.csv            (196 class names, one a line)\n"
        "<data-root>/anno_train.csv       (image,x1,y1,x2,y2,class_id)\n"
        "<data-root>/anno_test.csv\n"
        "<data-root>/car_data/car_data/train/<class name, '/' replaced by '-'>/<image>.jpg ...\n"
        "<data-root>/car_data/car_data/test/<class name>/<image>.jpg ...\n"
        "(the Kaggle archive 'stanford-car-dataset-by-classes-folder' extracted as is)",
    ),
    "sop": (
        "StanfordOnlineProducts",
        ("Stanford_Online_Products/Ebay_train.txt", "Stanford_Online_Products/Ebay_test.txt"),
        "<data-root>/Stanford_Online_Products/Ebay_train.txt  (header, then "
        "'image_id class_id super_class_id path')\n"
        "<data-root>/Stanford_Online_Products/Ebay_test.txt\n"
        "<data-root>/Stanford_Online_Products/bicycle_final/<image>.JPG ...\n"
        "(the Stanford_Online_Products.zip archive extracted as is)",
    ),
}
DATASETS = tuple(LAYOUTS)


def _check_size(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


# ----------------------------------------------------------------------------------- transforms


class ToRGB:
    """PIL image of any mode (L, P, RGBA, CMYK, ...) → an RGB PIL image."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return img if img.mode == "RGB" else img.convert("RGB")


class RandomResizedCrop:
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio``; resize to size².

    Up to 10 draws of (area, log-uniform aspect ratio); if none fits inside the image, the
    largest central crop with the ratio clamped to ``ratio`` is used. The crop and the resize are
    one PIL ``resize(box=...)`` (bilinear, antialiased when shrinking).
    """

    def __init__(self, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
        self.size = _check_size(size, "size")
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {tuple(scale)}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {tuple(ratio)}")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The (left, top, right, bottom) crop box for an image of this size."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            u = torch.rand(2, dtype=torch.float64).tolist()
            target = area * (self.scale[0] + u[0] * (self.scale[1] - self.scale[0]))
            aspect = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (1,)))
                left = int(torch.randint(0, width - w + 1, (1,)))
                return left, top, left + w, top + h
        # fallback: central crop
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            w, h = int(round(height * self.ratio[1])), height
        else:
            w, h = width, height
        left, top = (width - w) // 2, (height - h) // 2
        return left, top, left + w, top + h

    def __call__(self, img: Image.Image) -> Image.Image:
        box = self.box(*img.size)
        return img.resize((self.size, self.size), Image.BILINEAR, box=box)


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5):
        if not (0.0 <= p <= 1.0):
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, img: Image.Image) -> Image.Image:
        if float(torch.rand(())) < self.p:
            return img.transpose(Image.FLIP_LEFT_RIGHT)
        return img


class ResizeShorter:
    """Resize so that the shorter side is ``size`` (aspect ratio kept, bilinear)."""

    def __init__(self, size: int):
        self.size = _check_size(size, "size")

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        if w <= h:
            new = (self.size, max(1, int(round(h * self.size / w))))
        else:
            new = (max(1, int(round(w * self.size / h))), self.size)
        return img if new == (w, h) else img.resize(new, Image.BILINEAR)


class CenterCrop:
    """Central ``size``×``size`` crop (the image must be at least that large)."""

    def __init__(self, size: int):
        self.size = _check_size(size, "size")

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        left, top = int(round((w - self.size) / 2)), int(round((h - self.size) / 2))
        return img.crop((left, top, left + self.size, top + self.size))


class ToNormalizedTensor:
    """RGB PIL image → float32 tensor (3, H, W): x/255, then (x − mean)/std per channel."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        if img.mode != "RGB":
            raise ValueError(f"img must be an RGB image, got mode {img.mode!r}")
        x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)
        return (x.to(torch.float32) / 255.0 - self.mean) / self.std


class Compose:
    """Apply callables in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        return f"Compose({[type(t).__name__ for t in self.transforms]})"


def make_transform(image_size: int, train: bool) -> Compose:
    """The DML transform: RGB, then train (random resized crop + flip) or test (resize + center
    crop), then ImageNet normalisation. Output: float32 (3, image_size, image_size).
    """
    image_size = _check_size(image_size, "image_size")
    if train:
        geometry = [RandomResizedCrop(image_size), RandomHorizontalFlip(0.5)]
    else:
        geometry = [ResizeShorter(int(round(image_size * 256 / 224))), CenterCrop(image_size)]
    return Compose([ToRGB(), *geometry, ToNormalizedTensor()])


# -------------------------------------------------------------------------------------- dataset


def _missing_root_error(name: str, what: str) -> FileNotFoundError:
    layout = LAYOUTS[name][2]
    return FileNotFoundError(
        f"dataset {name!r}: {what}. Pass --data-root (root=) pointing to a folder laid out as\n"
        f"{layout}\nNothing is downloaded unless download=True is passed explicitly."
    )


class RealImageDataset(torch.utils.data.Dataset):
    """A PML dataset (CUB / Cars196 / SOP) with RGB images, transforms and labels 0..C-1.

    Items are ``(float32 tensor (3, image_size, image_size), int label)``.

    Attributes:
        labels: 1-D LongTensor of remapped labels, one per image (for ``MPerClassSampler``).
        class_ids: the raw PML class ids, sorted; label ``k`` is raw id ``class_ids[k]``.
        num_classes: ``len(class_ids)``.
        paths: image paths (from the PML dataset).
        base: the underlying PML dataset.
    """

    def __init__(self, base: torch.utils.data.Dataset, transform):
        self.base = base
        self.base.transform = transform
        raw = [int(x) for x in base.labels]
        self.class_ids = sorted(set(raw))
        self._index = {c: k for k, c in enumerate(self.class_ids)}
        self.labels = torch.tensor([self._index[c] for c in raw], dtype=torch.long)
        self.num_classes = len(self.class_ids)
        self.paths = list(base.paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx: int):
        img, raw = self.base[idx]
        return img, self._index[int(raw)]

    def without_augmentation(self) -> RealImageDataset:
        """The same images through the test transform (resize + centre crop, no random crop or
        flip): the view validation folds carved from a training split retrieve on."""
        import copy

        size = getattr(self, "image_size", None)
        if size is None:
            raise ValueError("without_augmentation needs the dataset's image_size")
        view = RealImageDataset(copy.copy(self.base), make_transform(size, False))
        view.image_size = size
        return view


def build_real_dataset(
    name: str,
    root: str,
    split: str,
    image_size: int,
    train: bool,
    *,
    download: bool = False,
    check_files: bool = True,
) -> RealImageDataset:
    """One split of CUB / Cars196 / SOP from a local root, ready for PML's trainers and testers.

    Args:
        name: ``"cub"``, ``"cars196"`` or ``"sop"``.
        root: the data root (the harness's ``--data-root``); see ``LAYOUTS`` for what it holds.
        split: ``"train"``, ``"test"`` or ``"train+test"`` as PML defines them (class-disjoint).
        image_size: side of the square image fed to the backbone (224 in the presets).
        train: train-time augmentation (random resized crop + flip) if True, else the
            deterministic resize + center crop.
        download: passed to PML's class; False (default) never touches the network.
        check_files: verify that every image file listed by the metadata exists (one ``stat``
            per image), so a half-extracted archive fails here, not mid-epoch.

    Returns:
        A :class:`RealImageDataset` yielding ``(float32 (3, image_size, image_size), int)``,
        with ``.labels`` remapped to 0..C-1 within the split.

    Raises:
        ValueError: unknown ``name`` or ``split``, or a split with no images.
        TypeError / ValueError: ``image_size`` not a positive int.
        FileNotFoundError: ``root``, a metadata file or an image is missing; the message names
            ``--data-root`` and the expected layout.
    """
    if name not in LAYOUTS:
        raise ValueError(f"name must be one of {', '.join(DATASETS)}, got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    transform = make_transform(image_size, train)  # (its image_size is kept on the dataset)
    if root is None:
        raise _missing_root_error(name, "no data root given")
    root = os.fspath(root)
    class_name, required, _ = LAYOUTS[name]
    if not download:
        if not os.path.isdir(root):
            raise _missing_root_error(name, f"data root {root!r} does not exist")
        missing = [f for f in required if not os.path.isfile(os.path.join(root, f))]
        if missing:
            raise _missing_root_error(
                name, f"data root {root!r} lacks {', '.join(missing)}"
            )

    from ..pml2.pml_datasets import dataset_class

    cls = dataset_class(class_name)
    base = cls(root=root, split=split, transform=None, download=bool(download))
    if len(base.labels) == 0:
        raise ValueError(
            f"split {split!r} of dataset {name!r} under {root!r} has no images "
            f"(PML's class ids for this split are absent from the metadata)"
        )
    if check_files:
        absent = [p for p in base.paths if not os.path.isfile(p)]
        if absent:
            shown = "\n  ".join(absent[:3])
            raise _missing_root_error(
                name,
                f"{len(absent)} of {len(base.paths)} image files listed in the metadata are "
                f"missing under {root!r}, e.g.\n  {shown}\n",
            )
    dataset = RealImageDataset(base, transform)
    dataset.image_size = image_size
    return dataset


# --------------------------------------------------------------------------- registry entries


@dataclasses.dataclass
class RealImages(DatasetBase):
    """A real image dataset read by PML's class from a local root (nothing downloaded)."""

    root: str | None = option(None, "local data root (CLI --data-root); nothing is downloaded")
    image_size: int = option(
        224, "side of the square crop fed to the backbone", check=positive_int
    )

    default_protocols = {"zero_shot": {"type": "zero_shot"}}

    def validate(self, where: str) -> None:
        if isinstance(self.root, str):
            self.root = os.path.expanduser(self.root)  # the shell does not expand it after --set


@register_dataset("cub")
@dataclasses.dataclass
class CUB(RealImages):
    """CUB-200-2011 (PML's split: classes 1-100 train, 101-200 test)."""


@register_dataset("cars196")
@dataclasses.dataclass
class Cars196(RealImages):
    """Cars196 (PML's split: classes 1-98 train, 99-196 test)."""


@register_dataset("sop")
@dataclasses.dataclass
class SOP(RealImages):
    """Stanford Online Products (Ebay_train.txt / Ebay_test.txt)."""


@dataclasses.dataclass
class RealZeroShot(ProtocolBase):
    """PML's split="train" vs split="test" (class-disjoint)"""

    def build(self, dataset: RealImages, name: str) -> ProtocolData:
        ds = dataset.dataset_name
        if not dataset.root:
            raise ValueError(
                f"dataset.root (--data-root) must point to a local copy of {ds}; "
                "nothing is downloaded"
            )
        size = dataset.image_size
        train = build_real_dataset(ds, dataset.root, "train", size, True)
        test = build_real_dataset(ds, dataset.root, "test", size, False)
        n = int(torch.as_tensor(train.labels).unique().numel())
        return ProtocolData(
            name,
            train,
            test,
            n,
            "image",
            f"{ds}: train split ({n} classes), test retrieval on the unseen test split",
        )


for _name in DATASETS:
    register_protocol(_name, "zero_shot")(RealZeroShot)
