"""Render characters from fonts into fixed-size uint8 squares, once, into a cache with a manifest.

Recipe (~8 s for 42k kanji images on one core):

1. Coverage: a face keeps a character only if its best cmap (fontTools) maps it.
2. Pillow draws the character at ``render_px`` (64) pixels, white (255) on black (0), on a canvas
   larger than its bounding box.
3. The ink's bounding box is cropped and resized, aspect ratio kept (Lanczos), so that its longer
   side is ``fit`` (28) pixels, then centred in a ``size``×``size`` (32×32) square. The 2-pixel
   margin leaves room for ±2-pixel shift augmentation without cutting strokes; cropping removes
   the fonts' different em-box placements and sizes, so the class signal is the shape.
4. Placeholders: a character is *not rendered* by a face if it is absent from the cmap, draws no
   ink, draws the face's .notdef glyph (compared with an unmapped code point), or draws an image
   identical to that of ≥ 2 other chosen characters (placeholder boxes such as Last Resort's;
   two identical shapes, e.g. a cropped o/O, are legitimate).

Policy: a face that does not render every chosen character is **dropped** (and reported, with
the reason and the first missing characters); characters are never dropped. Every class then has
exactly one image per kept font, and the character list of a (charset, count, seed) is the same
on every machine; only the font set varies, and the manifest records it.

Cache: ``<cache_dir>/<key>/{images.npz, manifest.json, sample_grid.png}``; ``key`` hashes
everything the images depend on (characters, sizes, every candidate face's sha256 and index,
Pillow and FreeType versions, this recipe's version). A cached entry is reused only if the
sha256 of its arrays matches its manifest; a damaged entry is re-rendered. ``manifest_hash``
(the sha256 of the manifest's canonical JSON) names the data in results: a different font set
gives a different hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from ... import _shared as _io
from .fonts import FontFace

RECIPE_VERSION = 1
SAMPLE_GRID = "sample_grid.png"  # written into each cache entry: rows = fonts, columns = characters
_NOTDEF_PROBES = (0x10FFFD, 0x10FFFC, 0xFFFFD, 0xE0FFF)


def default_cache_dir() -> str:
    """$PMLAC_GLYPH_CACHE, else $XDG_CACHE_HOME (or ~/.cache)/pml-anticollapse/glyphs."""
    if os.environ.get("PMLAC_GLYPH_CACHE"):
        return os.environ["PMLAC_GLYPH_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pml-anticollapse", "glyphs")


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def versions() -> dict:
    import fontTools
    import PIL
    from PIL import features

    return {
        "pillow": PIL.__version__,
        "freetype": features.version("freetype2"),
        "fonttools": fontTools.version,
    }


@dataclass
class GlyphSet:
    """Rendered glyphs: ``images[f, c]`` is character ``characters[c]`` in font ``fonts[f]``."""

    images: np.ndarray  # uint8 (num_fonts, num_characters, size, size)
    characters: str
    fonts: list[dict]  # kept faces, as in the manifest
    dropped: list[dict]  # dropped faces with the reason
    manifest: dict
    manifest_hash: str
    path: str  # the cache entry's folder
    from_cache: bool


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def render_char(font, ch: str, render_px: int, size: int, fit: int) -> np.ndarray | None:
    """One character as a uint8 (size, size) array, or None if it draws no ink."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(ch)
    pad = 4
    w, h = max(1, right - left) + 2 * pad, max(1, bottom - top) + 2 * pad
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), ch, fill=255, font=font)
    box = canvas.getbbox()
    if box is None:
        return None
    glyph = canvas.crop(box)
    gw, gh = glyph.size
    scale = fit / max(gw, gh)
    nw, nh = max(1, round(gw * scale)), max(1, round(gh * scale))
    glyph = glyph.resize((nw, nh), Image.LANCZOS)
    out = Image.new("L", (size, size), 0)
    out.paste(glyph, ((size - nw) // 2, (size - nh) // 2))
    return np.asarray(out, dtype=np.uint8)


def _render_face(face: FontFace, characters: str, render_px: int, size: int, fit: int):
    """(images (C, size, size) or None, reason or None) for one face."""
    from fontTools.ttLib import TTFont
    from PIL import ImageFont

    try:
        cmap = TTFont(face.path, fontNumber=face.index, lazy=True).getBestCmap() or {}
        font = ImageFont.truetype(face.path, size=render_px, index=face.index)
    except Exception as e:  # noqa: BLE001 - an unreadable font file is dropped, not fatal
        return None, f"unreadable: {type(e).__name__}: {e}"
    absent = [c for c in characters if ord(c) not in cmap]
    if absent:
        return None, (
            f"lacks {len(absent)} of {len(characters)} characters, e.g. {''.join(absent[:10])}"
        )
    probe = next((chr(p) for p in _NOTDEF_PROBES if p not in cmap), None)
    notdef = render_char(font, probe, render_px, size, fit) if probe else None
    images = np.zeros((len(characters), size, size), dtype=np.uint8)
    blank, as_notdef = [], []
    for i, ch in enumerate(characters):
        img = render_char(font, ch, render_px, size, fit)
        if img is None:
            blank.append(ch)
            continue
        if notdef is not None and np.array_equal(img, notdef):
            as_notdef.append(ch)
        images[i] = img
    if blank:
        return None, f"draws no ink for {len(blank)} characters, e.g. {''.join(blank[:10])}"
    if as_notdef:
        return None, (
            f"draws its .notdef box for {len(as_notdef)} characters, e.g. {''.join(as_notdef[:10])}"
        )
    _, inverse, counts = np.unique(
        images.reshape(len(characters), -1), axis=0, return_inverse=True, return_counts=True
    )
    shared = counts[inverse.reshape(-1)] >= 3
    if shared.any():
        chars = "".join(c for c, s in zip(characters, shared, strict=True) if s)
        return None, (
            f"draws identical (placeholder) images for {len(chars)} characters, e.g. {chars[:10]}"
        )
    return images, None


def array_sha256(images: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(_canonical([list(images.shape), str(images.dtype)]))
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()


def render_glyphs(
    faces: list[FontFace],
    characters: str,
    *,
    size: int = 32,
    fit: int = 28,
    render_px: int = 64,
    cache_dir: str | None = None,
    min_fonts: int = 2,
    log=None,
) -> GlyphSet:
    """Render ``characters`` in every face (or load them from the cache); drop faces that fail.

    Args:
        faces: candidate designs (``fonts.font_set_faces`` or ``fonts.font_dir_faces``).
        characters: the chosen characters (``charsets.select_characters``), at least 2.
        size: side of the output square; fit: longer side of the fitted glyph (≤ size);
        render_px: Pillow's font size in pixels before the crop.
        cache_dir: cache root (default :func:`default_cache_dir`).
        min_fonts: fewer kept faces than this is an error.
        log: callable taking one message line (progress and dropped faces), or None.

    Returns:
        A :class:`GlyphSet`.

    Raises:
        ValueError: bad sizes; fewer than 2 characters or repeated characters; no faces; fewer
            than ``min_fonts`` faces render every character (the message lists why each was
            dropped).
    """
    size = _check_int(size, "dataset.image_size", 8)
    fit = _check_int(fit, "dataset.glyph_fit", 4)
    if fit > size:
        raise ValueError(f"dataset.glyph_fit must be <= dataset.image_size {size}, got {fit}")
    render_px = _check_int(render_px, "dataset.render_px", 8)
    if not isinstance(characters, str) or len(characters) < 2 or len(set(characters)) != len(
        characters
    ):
        raise ValueError(
            f"characters must be a string of >= 2 distinct characters, got {characters!r:.40}"
        )
    if not faces:
        raise ValueError("faces must hold at least one font face, got none")
    log = log or (lambda msg: None)
    cache_dir = os.fspath(cache_dir or default_cache_dir())
    candidates = [
        {
            "file": os.path.basename(f.path),
            "path": os.path.abspath(f.path),
            "index": f.index,
            "sha256": _sha256_file(f.path),
            "package": f.package,
            "package_version": f.version,
        }
        for f in faces
    ]
    spec = {
        "recipe_version": RECIPE_VERSION,
        "characters": characters,
        "image_size": size,
        "glyph_fit": fit,
        "render_px": render_px,
        "candidates": [(c["sha256"], c["index"]) for c in candidates],
        "versions": versions(),
    }
    key = hashlib.sha256(_canonical(spec)).hexdigest()[:24]
    entry = os.path.join(cache_dir, key)
    cached = _load_entry(entry)
    if cached is not None:
        images, manifest = cached
        log(f"glyphs: {images.shape[0]} fonts x {images.shape[1]} characters from cache {entry}")
        glyphs = _glyph_set(images, manifest, entry, True, min_fonts)
        if not os.path.isfile(os.path.join(entry, SAMPLE_GRID)):
            sample_grid(glyphs, os.path.join(entry, SAMPLE_GRID))
        return glyphs
    kept, dropped, arrays = [], [], []
    for n, (face, cand) in enumerate(zip(faces, candidates, strict=True), 1):
        images, reason = _render_face(face, characters, render_px, size, fit)
        if images is None:
            dropped.append({**cand, "reason": reason})
            log(f"glyphs: [{n}/{len(faces)}] dropped {face.label}: {reason}")
        else:
            kept.append(cand)
            arrays.append(images)
            log(f"glyphs: [{n}/{len(faces)}] rendered {face.label}")
    if len(kept) < min_fonts:
        reasons = "; ".join(f"{d['file']}: {d['reason']}" for d in dropped[:6])
        raise ValueError(
            f"fonts: {len(kept)} of {len(faces)} font faces render all {len(characters)} "
            f"chosen characters, need >= {min_fonts} (dropped: {reasons})"
        )
    images = np.stack(arrays)
    manifest = {
        **{k: v for k, v in spec.items() if k != "candidates"},
        "fonts": kept,
        "dropped": dropped,
        "array_sha256": array_sha256(images),
        "shape": list(images.shape),
    }
    os.makedirs(entry, exist_ok=True)
    import io

    buf = io.BytesIO()
    np.savez(buf, images=images)
    _io.atomic_write_bytes(os.path.join(entry, "images.npz"), buf.getvalue())
    _io.atomic_write_bytes(
        os.path.join(entry, "manifest.json"),
        json.dumps(manifest, indent=1, ensure_ascii=False).encode(),
    )
    log(f"glyphs: {images.shape[0]} fonts x {images.shape[1]} characters cached in {entry}")
    glyphs = _glyph_set(images, manifest, entry, False, min_fonts)
    sample_grid(glyphs, os.path.join(entry, SAMPLE_GRID))
    return glyphs


def manifest_hash(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON without the font files' absolute paths (where a
    package was installed, /usr/share/fonts or the extraction cache, does not change the data;
    the files' sha256 does)."""
    def strip(fonts):
        return [{k: v for k, v in f.items() if k != "path"} for f in fonts]

    core = {**manifest, "fonts": strip(manifest["fonts"]), "dropped": strip(manifest["dropped"])}
    return hashlib.sha256(_canonical(core)).hexdigest()


def _glyph_set(images, manifest, entry, from_cache, min_fonts) -> GlyphSet:
    if images.shape[0] < min_fonts:
        raise ValueError(
            f"fonts: {images.shape[0]} font faces render every chosen character, "
            f"need >= {min_fonts}"
        )
    return GlyphSet(
        images=images,
        characters=manifest["characters"],
        fonts=manifest["fonts"],
        dropped=manifest["dropped"],
        manifest=manifest,
        manifest_hash=manifest_hash(manifest),
        path=entry,
        from_cache=from_cache,
    )


def _load_entry(entry: str):
    """(images, manifest) of a cache entry whose arrays match its manifest, else None."""
    try:
        with open(os.path.join(entry, "manifest.json"), encoding="utf-8") as f:
            manifest = json.load(f)
        with np.load(os.path.join(entry, "images.npz")) as z:
            images = z["images"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if not isinstance(manifest, dict) or manifest.get("array_sha256") != array_sha256(images):
        return None
    return images, manifest


def sample_grid(glyphs: GlyphSet, path: str, columns: int = 24, scale: int = 2) -> str:
    """Write a PNG: one row per kept font (its file name on the left), ``columns`` characters
    (the first of the chosen list), glyphs upscaled ``scale``×; black ink on white."""
    from PIL import Image, ImageDraw, ImageFont

    images = glyphs.images
    nf, nc, s, _ = images.shape
    cols = min(columns, nc)
    cell = s * scale + 2
    label_w = 170
    grid = Image.new("L", (label_w + cols * cell, nf * cell), 255)
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for f in range(nf):
        draw.text((2, f * cell + cell // 2 - 6), glyphs.fonts[f]["file"][:26], fill=0, font=font)
        for c in range(cols):
            tile = Image.fromarray(255 - images[f, c]).resize((s * scale, s * scale), Image.NEAREST)
            grid.paste(tile, (label_w + c * cell + 1, f * cell + 1))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    grid.save(path)
    return path
