"""Glyphs rendered from real fonts: classes = characters, instances = font designs.

The idea of notMNIST and Omniglot, on fonts installed from Debian packages (``dataset.font_set``,
see ``benchmarks.harness.glyphs.fonts``; ``bash scripts/fonts.sh`` installs them) or any folder
of .ttf/.otf/.ttc files (``dataset.font_dir``, CLI ``--font-dir``). Characters: JIS X 0208
level-1 kanji (a seeded sample of ``num_characters``), the 143 kana or the 62 Latin
alphanumerics (``benchmarks.harness.glyphs.charsets``). Rendering (Pillow; fontTools for
coverage), placeholder detection, the cache and its manifest: ``benchmarks.harness.glyphs.render``.
A font that does not render every chosen character is dropped and reported.

Protocols (``dataset.protocols.<name>.type``); splits drawn with ``numpy.random.RandomState``
seeded by the protocol's ``split_seed``:

- ``zero_shot``: the characters are split into ``train_fraction`` training characters and the
  rest; train on the training characters in every font, retrieve the unseen characters in every
  font (query = reference = test set, as for CUB / Cars196 / SOP).
- ``superclass``: ``test_fonts`` fonts are held out; the training characters are cut into fixed
  random groups of ``group_size`` (coarse classes); train on the coarse labels in the other
  fonts, retrieve the *fine* training characters in the held-out fonts. A loss that collapses a
  coarse class to a point loses the characters inside it.

Validation (choosing settings without touching the test data): ``validation_fold: k`` (zero_shot)
retrieves fold k of ``validation_folds`` class-disjoint folds of the *training* characters,
trained on the other folds; ``validation: true`` (superclass) leaves the test fonts out entirely
and holds out ``test_fonts`` of the training fonts instead (``validation_fold: k``: the k-th
disjoint block of them). ``python -m benchmarks tune`` searches each protocol on these forms
(:meth:`validation_forms`).

Images: uint8 32×32 (glyph fitted into 28 px), one grey channel; for training, a random shift
of up to ``augment_shift`` pixels (zero fill). Items are float32 (1, S, S) (:class:`GlyphImages`).
The model: ``models/glyph_cnn.py``.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch

from ..glyphs import charsets, fonts, render
from ..schema import Check, non_negative_int, one_of, option, positive_int
from . import DatasetBase, ProtocolBase, ProtocolData, register_dataset, register_protocol

_fraction = Check("a number in (0, 1)", lambda v: 0 < v < 1)
_at_least_2 = Check("an integer >= 2", lambda v: v >= 2)


# ------------------------------------------------------------------------------ images

#: The grey level's normalisation: x/255, then (x - GREY_MEAN) / GREY_STD (the averages over the
#: three channels of ImageNet's normalisation, which the RGB copies of a glyph used before).
GREY_MEAN, GREY_STD = 0.449, 0.226


def shift_images(images: torch.Tensor, shifts: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Each image of ``images`` (N, H, W) moved by its ``shifts[k] = (dx, dy)`` pixels (right and
    down for positive values; zero fill), for |dx|, |dy| <= ``max_shift``: one padded copy of
    the batch and one gather, on any dtype (uint8 here)."""
    n, h, w = images.shape
    s = int(max_shift)
    padded = torch.nn.functional.pad(images, (s, s, s, s))
    rows = (s - shifts[:, 1]).view(n, 1, 1) + torch.arange(h).view(1, h, 1)
    cols = (s - shifts[:, 0]).view(n, 1, 1) + torch.arange(w).view(1, 1, w)
    return padded[torch.arange(n).view(n, 1, 1), rows, cols]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) → float32 (N, 1, H, W), normalised with ``GREY_MEAN`` / ``GREY_STD``."""
    return ((images.to(torch.float32) / 255.0 - GREY_MEAN) / GREY_STD).unsqueeze(1)


class GlyphImages(torch.utils.data.Dataset):
    """uint8 glyph images (N, S, S) with ``labels``; items ``(float32 (1, S, S), int)``.

    A glyph is one grey channel (white ink on black), normalised by :func:`to_float`; with
    ``max_shift`` > 0 (training), each item is first shifted by up to ``max_shift`` pixels in x
    and y (zero fill), the shift ``(dx, dy)`` drawn from torch's global generator (so a seeded,
    resumed run draws the same shifts). Everything stays in torch (no PIL, no per-item numpy):
    ``__getitems__`` (which PyTorch's DataLoader calls with a batch's indices) draws the
    batch's shifts in one call — the same numbers, in the same order, as one draw of two per item
    — and shifts and normalises the batch at once; ``__getitem__`` is the same for one item.

    ``characters[i]`` and ``fonts[i]`` name what image ``i`` shows (for reports and tests).
    """

    def __init__(self, images, labels, max_shift: int, characters, fonts):
        images = torch.as_tensor(np.asarray(images))
        if images.dtype != torch.uint8 or images.ndim != 3:
            raise ValueError(
                f"images must be uint8 of shape (N, S, S), got {images.dtype} {tuple(images.shape)}"
            )
        if images.shape[0] != len(labels):
            raise ValueError(
                f"images and labels must have the same length, got {images.shape[0]} and "
                f"{len(labels)}"
            )
        if not isinstance(max_shift, int) or not 0 <= max_shift < images.shape[-1]:
            raise ValueError(
                f"max_shift must be an integer in [0, {images.shape[-1]}), got {max_shift!r}"
            )
        self.images = images
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.max_shift = max_shift
        self.characters = list(characters)
        self.fonts = list(fonts)

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, indices) -> torch.Tensor:
        """float32 (len(indices), 1, S, S): the images, shifted when ``max_shift`` > 0."""
        idx = torch.as_tensor(indices, dtype=torch.long).view(-1)
        images = self.images[idx]
        if self.max_shift:
            s = self.max_shift
            shifts = torch.randint(-s, s + 1, (len(idx), 2))
            images = shift_images(images, shifts, s)
        return to_float(images)

    def __getitem__(self, i):
        return self.batch([i])[0], int(self.labels[i])

    def __getitems__(self, indices):
        x = self.batch(indices)
        labels = self.labels[torch.as_tensor(indices, dtype=torch.long)].tolist()
        return list(zip(x.unbind(0), labels, strict=True))

    def without_augmentation(self) -> GlyphImages:
        """The same images, never shifted: the view that validation folds carved from a training
        set retrieve on (and that the training set's effective rank is measured on)."""
        return GlyphImages(self.images, self.labels, 0, self.characters, self.fonts)


def _subset(glyphs: render.GlyphSet, font_idx, char_idx, labels_of_char, max_shift: int):
    """Every (font, character) image of the given fonts and characters, fonts outermost."""
    font_idx, char_idx = np.asarray(font_idx), np.asarray(char_idx)
    images = glyphs.images[np.ix_(font_idx, char_idx)]
    n = images.shape[0] * images.shape[1]
    labels = np.tile(np.asarray(labels_of_char, dtype=np.int64), len(font_idx))
    chars = [glyphs.characters[c] for c in char_idx] * len(font_idx)
    names = [glyphs.fonts[f]["file"] for f in font_idx for _ in char_idx]
    return GlyphImages(images.reshape(n, *images.shape[2:]), labels, max_shift, chars, names)


# ------------------------------------------------------------------------------ dataset


@register_dataset("glyphs")
@dataclasses.dataclass
class Glyphs(DatasetBase):
    """Characters rendered from real fonts (classes = characters, instances = font designs)."""

    charset: str = option(
        "kanji", "kanji (JIS level 1) | kana | latin", check=one_of(*charsets.CHARSETS)
    )
    num_characters: int | None = option(
        1000, "seeded sample of the charset (None: all of it)", check=_at_least_2
    )
    char_seed: int = option(0, "seed of the character sample", check=non_negative_int)
    font_set: str = option(
        "core", "pinned Debian font packages: core | extended | all", check=one_of(*fonts.FONT_SETS)
    )
    font_dir: str | None = option(
        None, "a folder of .ttf/.otf/.ttc files used instead of font_set (CLI --font-dir)"
    )
    font_cache: str | None = option(
        None, "where scripts/fonts.sh extracts packages without root (default "
        "~/.cache/pml-anticollapse/fonts)"
    )
    cache_dir: str | None = option(
        None, "render cache (default $PMLAC_GLYPH_CACHE or ~/.cache/pml-anticollapse/glyphs)"
    )
    image_size: int = option(32, "side of the square glyph image", check=_at_least_2)
    glyph_fit: int = option(28, "longer side of the cropped glyph inside it", check=positive_int)
    render_px: int = option(64, "Pillow font size before cropping", check=positive_int)
    augment_shift: int = option(2, "training images: random shift of up to this many pixels",
                                check=non_negative_int)
    min_fonts: int = option(3, "fewer fonts rendering every character is an error",
                            check=_at_least_2)

    default_protocols = {
        "zero_shot": {"type": "zero_shot"},
        "superclass": {"type": "superclass"},
    }

    def validate(self, where: str) -> None:
        if self.font_dir is not None:
            self.font_dir = os.path.expanduser(self.font_dir)
            if not os.path.isdir(self.font_dir):
                what = "a file" if os.path.exists(self.font_dir) else "nothing"
                raise ValueError(
                    f"{where}.font_dir (--font-dir) must be a folder of .ttf/.otf/.ttc files, "
                    f"got {self.font_dir!r}, which is {what}"
                )
        if self.glyph_fit > self.image_size:
            raise ValueError(
                f"{where}.glyph_fit must be <= image_size {self.image_size}, got {self.glyph_fit}"
            )
        if self.augment_shift >= self.image_size:
            raise ValueError(
                f"{where}.augment_shift must be < image_size {self.image_size}, "
                f"got {self.augment_shift}"
            )

    def faces(self) -> list[fonts.FontFace]:
        if self.font_dir is not None:
            return fonts.font_dir_faces(self.font_dir)
        return fonts.font_set_faces(self.font_set, self.font_cache)

    def glyph_set(self, charset: str | None = None, count: int | None = None,
                  log=None) -> render.GlyphSet:
        """The rendered glyphs of ``charset`` and a seeded sample of ``count`` of them (None:
        all); ``charset=None``: the dataset's charset and ``num_characters``."""
        if charset is None:
            charset, count = self.charset, self.num_characters
        log = log or _log
        chars = charsets.select_characters(charset, count, self.char_seed)
        glyphs = render.render_glyphs(
            self.faces(), chars, size=self.image_size, fit=self.glyph_fit,
            render_px=self.render_px, cache_dir=self.cache_dir, min_fonts=self.min_fonts,
            log=log,
        )
        for d in glyphs.dropped if glyphs.from_cache else ():  # (a fresh render logged them)
            log(f"glyphs: dropped {d['file']}: {d['reason']}")
        log(f"glyphs: manifest sha256 {glyphs.manifest_hash}; sample grid "
            f"{os.path.join(glyphs.path, render.SAMPLE_GRID)}")
        return glyphs

    def build(self, protocols: dict) -> dict[str, ProtocolData]:
        memo: dict = {}
        out = {}
        for name, p in protocols.items():
            key = (p.charset, p.num_characters) if p.charset is not None else None
            if key not in memo:
                memo[key] = self.glyph_set(p.charset, p.num_characters)
            out[name] = p.build_from(self, memo[key], name)
        return out


def _log(msg: str) -> None:
    print(f"[glyphs] {msg}", flush=True)


def provenance(glyphs: render.GlyphSet) -> dict:
    """What results.json records of the data (and what a resumed run must match)."""
    return {
        "glyph_manifest_sha256": glyphs.manifest_hash,
        "num_fonts": int(glyphs.images.shape[0]),
        "num_characters": int(glyphs.images.shape[1]),
        "fonts": [f["file"] for f in glyphs.fonts],
        "dropped_fonts": [f"{d['file']}: {d['reason']}" for d in glyphs.dropped],
    }


def _char_split(n: int, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.RandomState(seed).permutation(n)
    k = int(round(train_fraction * n))
    if not 1 <= k < n:
        raise ValueError(
            f"train_fraction {train_fraction} of {n} characters leaves an empty side"
        )
    return np.sort(perm[:k]), np.sort(perm[k:])


@dataclasses.dataclass
class _GlyphProtocol(ProtocolBase):
    train_fraction: float = option(
        0.5, "share of the characters used for training", check=_fraction
    )
    split_seed: int = option(0, "seed of the character (and font) splits", check=non_negative_int)
    charset: str | None = option(
        None, "another charset for this protocol (None: the dataset's charset and sample)",
        check=Check(f"one of {list(charsets.CHARSETS)}", lambda v: v in charsets.CHARSETS),
    )
    num_characters: int | None = option(
        None, "with charset: seeded sample size (None: the whole set)", check=_at_least_2
    )

    def build(self, dataset: Glyphs, name: str) -> ProtocolData:
        return dataset.build({name: self})[name]


@register_protocol("glyphs", "zero_shot")
@dataclasses.dataclass
class GlyphZeroShot(_GlyphProtocol):
    """Train on some characters, retrieve the unseen ones (every font; query = reference)."""

    validation_fold: int | None = option(
        None, "validation: retrieve this fold of the training characters (test ones unused)",
        check=non_negative_int,
    )
    validation_folds: int = option(3, "number of validation folds", check=_at_least_2)

    def validate(self, where: str) -> None:
        if self.validation_fold is not None and self.validation_fold >= self.validation_folds:
            raise ValueError(
                f"{where}.validation_fold must be < validation_folds {self.validation_folds}, "
                f"got {self.validation_fold}"
            )

    def validation_forms(self, k: int) -> list[GlyphZeroShot]:
        """``k`` validation forms: the ``k`` class-disjoint folds of the training characters
        (the test characters are never read)."""
        return [dataclasses.replace(self, validation_fold=i, validation_folds=k) for i in range(k)]

    def build_from(self, ds: Glyphs, glyphs: render.GlyphSet, name: str) -> ProtocolData:
        nf, nc = glyphs.images.shape[:2]
        train_c, test_c = _char_split(nc, self.train_fraction, self.split_seed)
        what = "unseen"
        if self.validation_fold is not None:
            folds = np.array_split(
                np.random.RandomState(self.split_seed + 1).permutation(train_c),
                self.validation_folds,
            )
            test_c = np.sort(folds[self.validation_fold])
            train_c = np.sort(np.setdiff1d(train_c, test_c))
            what = f"validation fold {self.validation_fold}/{self.validation_folds} of training"
        all_fonts = np.arange(nf)
        train = _subset(glyphs, all_fonts, train_c, np.arange(len(train_c)),
                        ds.augment_shift)
        query = _subset(glyphs, all_fonts, test_c, test_c, 0)
        return ProtocolData(
            name, train, query, num_train_classes=len(train_c), input_kind="image",
            description=(
                f"glyphs: train on {len(train_c)} characters x {nf} fonts, retrieve the "
                f"{len(test_c)} {what} characters x {nf} fonts"
            ),
            provenance=provenance(glyphs),
            extra_files={"sample_grid.png": os.path.join(glyphs.path, render.SAMPLE_GRID)},
        )


@register_protocol("glyphs", "superclass")
@dataclasses.dataclass
class GlyphSuperclass(_GlyphProtocol):
    """Train on coarse groups of the training characters, retrieve the fine characters in fonts
    held out from training."""

    group_size: int = option(10, "training characters per coarse class", check=_at_least_2)
    test_fonts: int = option(5, "fonts held out from training (the query fonts)",
                             check=_at_least_2)
    validation: bool = option(
        False, "validation: leave the test fonts out, hold out test_fonts training fonts"
    )
    validation_fold: int = option(
        0, "with validation: hold out the k-th block of test_fonts training fonts (disjoint "
        "blocks: k-fold validation over fonts)", check=non_negative_int,
    )

    def validation_forms(self, k: int) -> list[GlyphSuperclass]:
        """``k`` validation forms: fine retrieval in ``k`` disjoint blocks of held-out
        *training* fonts (the test fonts are never read)."""
        return [dataclasses.replace(self, validation=True, validation_fold=i) for i in range(k)]

    def build_from(self, ds: Glyphs, glyphs: render.GlyphSet, name: str) -> ProtocolData:
        nf, nc = glyphs.images.shape[:2]
        train_c, _ = _char_split(nc, self.train_fraction, self.split_seed)
        blocks = 1 + (self.validation_fold + 1 if self.validation else 0)
        need = self.test_fonts * blocks + 1
        if nf < need:
            raise ValueError(
                f"dataset.protocols.{name}.test_fonts: {self.test_fonts} held-out fonts "
                f"{f'({blocks} blocks, validation) ' if self.validation else ''}need >= {need} "
                "fonts, "
                f"got {nf}"
            )
        n_groups = len(train_c) // self.group_size
        if n_groups < 2:
            raise ValueError(
                f"dataset.protocols.{name}.group_size must leave >= 2 coarse classes of the "
                f"{len(train_c)} training characters, got {self.group_size}"
            )
        rng = np.random.RandomState(self.split_seed + 2)
        font_perm = rng.permutation(nf)
        test_f, train_f = font_perm[: self.test_fonts], font_perm[self.test_fonts:]
        if self.validation:
            lo = self.validation_fold * self.test_fonts
            hi = lo + self.test_fonts
            test_f, train_f = train_f[lo:hi], np.concatenate([train_f[:lo], train_f[hi:]])
        test_f, train_f = np.sort(test_f), np.sort(train_f)
        coarse = np.empty(len(train_c), dtype=np.int64)
        for g, members in enumerate(np.array_split(rng.permutation(len(train_c)), n_groups)):
            coarse[members] = g
        train = _subset(glyphs, train_f, train_c, coarse, ds.augment_shift)
        query = _subset(glyphs, test_f, train_c, train_c, 0)
        held = "validation" if self.validation else "held-out"
        return ProtocolData(
            name, train, query, num_train_classes=n_groups, input_kind="image",
            description=(
                f"glyphs: train on {n_groups} coarse groups of {len(train_c)} characters x "
                f"{len(train_f)} fonts, retrieve the fine characters in {len(test_f)} {held} fonts"
            ),
            provenance=provenance(glyphs),
            extra_files={"sample_grid.png": os.path.join(glyphs.path, render.SAMPLE_GRID)},
        )
