"""Where the glyph benchmark's fonts come from: pinned Debian font packages, or any font folder.

Font sets (``dataset.font_set``), each a pinned list of Debian (bookworm) packages with free
licences (OFL, IPA, M+, Arphic, ...) and, per package, the one file per *design* that is used
(bold weights, proportional or half-width variants and regional variants of one design are
near-duplicates and are left out):

- ``core``: 16 packages, 17 designs, 34 MB download: mincho, gothic, maru, brush,
  handwriting-like, bitmap (8-px misaki, 16-px DotGothic) and ASCII-art (mona) styles.
- ``extended``: core + 11 packages (12 designs) of handwriting, display and brush styles
  (163 MB download in all).
- ``all``: extended + Noto Sans / Serif CJK JP (fonts-noto-cjk, large).

The version next to each package is the one the benchmark was measured with (bookworm); the
installed version is read with ``dpkg-query`` and recorded in the render manifest, together with
each file's sha256, so results name exactly the fonts they were computed on.

Lookup of a package's files: ``dpkg -L`` when the package is installed (``apt-get install``
puts them under /usr/share/fonts/...), else the extraction folder that ``scripts/fonts.sh`` fills
without root (``apt-get download`` + ``dpkg-deb -x`` into ``<font cache>/<package>/``).

``--font-dir DIR`` (``dataset.font_dir``) instead takes every .ttf/.otf/.ttc under DIR (each face
of a collection) and keeps one face per design: faces are grouped by family name (OpenType name
16, else 1) and the regular face of each family is kept (subfamily Regular/Book/Roman/Normal/
Medium, else the first in file order).

``python benchmarks/harness/glyphs/fonts.py SET`` (standard library only) prints the packages
of a set; ``scripts/fonts.sh`` reads them from there, so the list is written once, here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

FONT_SUFFIXES = (".ttf", ".otf", ".ttc")

# package -> (version measured with on bookworm, ((file name, face index), ...))
_CORE = {
    "fonts-aoyagi-kouzan-t": ("20160404-6", (("AoyagiKouzanT.ttf", 0),)),
    "fonts-aoyagi-soseki": ("20070207-17", (("aoyagi-soseki.ttf", 0),)),
    "fonts-dejima-mincho": ("227-16", (("dejima-mincho-r227.ttf", 0),)),
    "fonts-dotgothic16": ("1.000-20210120-2", (("DotGothic16-Regular.ttf", 0),)),
    "fonts-droid-fallback": ("1:6.0.1r16-1.1", (("DroidSansFallbackFull.ttf", 0),)),
    "fonts-ipaexfont-gothic": ("00401-5", (("ipaexg.ttf", 0),)),
    "fonts-ipaexfont-mincho": ("00401-5", (("ipaexm.ttf", 0),)),
    "fonts-komatuna": ("20101113-15", (("komatuna.ttf", 0),)),
    "fonts-konatu": ("20121218-11", (("Konatu.ttf", 0),)),
    "fonts-misaki": ("20210505-1", (("misaki_gothic.ttf", 0), ("misaki_mincho.ttf", 0))),
    "fonts-mona": ("1:2.90-1.1", (("mona.ttf", 0),)),
    "fonts-morisawa-bizud-mincho": ("1.05-2", (("BIZUDMincho-Regular.ttf", 0),)),
    "fonts-motoya-l-cedar": ("1.01-5", (("MTLc3m.ttf", 0),)),
    "fonts-motoya-l-maruberi": ("1.01-5", (("MTLmr3m.ttf", 0),)),
    "fonts-sawarabi-gothic": ("20161015-4", (("sawarabi-gothic-medium.ttf", 0),)),
    "fonts-vlgothic": ("20220612-1", (("VL-Gothic-Regular.ttf", 0),)),
}
_EXTENDED = {
    **_CORE,
    "fonts-klee": ("1.000-20210121-2", (("KleeOne-Regular.ttf", 0),)),
    "fonts-yusei-magic": ("1.000-20210130-2", (("YuseiMagic-Regular.ttf", 0),)),
    "fonts-rocknroll": ("1.000-20210120-2", (("RocknRollOne-Regular.ttf", 0),)),
    "fonts-stick": ("1.000-20210120-2", (("Stick-Regular.ttf", 0),)),
    "fonts-train": ("1.000-20210120-2", (("TrainOne-Regular.ttf", 0),)),
    "fonts-reggae": ("1.000-20210120-2", (("ReggaeOne-Regular.ttf", 0),)),
    "fonts-seto": ("6.20-8", (("setofont.ttf", 0),)),
    "fonts-sawarabi-mincho": ("20220815-1", (("sawarabi-mincho-medium.ttf", 0),)),
    "fonts-morisawa-bizud-gothic": ("1.05-2", (("BIZUDGothic-Regular.ttf", 0),)),
    "fonts-horai-umefont": ("670-5", (("ume-tgo4.ttf", 0), ("ume-tmo3.ttf", 0))),
    "fonts-kiloji": ("1:2.1.0-25", (("kiloji.ttf", 0),)),
}
_ALL = {
    **_EXTENDED,
    # face 0 of each collection is the Japanese (JP) one
    "fonts-noto-cjk": (
        "1:20220127+repack1-1",
        (("NotoSansCJK-Regular.ttc", 0), ("NotoSerifCJK-Regular.ttc", 0)),
    ),
}
FONT_SETS = {"core": _CORE, "extended": _EXTENDED, "all": _ALL}


@dataclass(frozen=True)
class FontFace:
    """One design: a font file and the face index inside it (0 unless a .ttc collection)."""

    path: str
    index: int
    package: str | None = None  # Debian package, when the face comes from a font set
    version: str | None = None  # installed package version, when known

    @property
    def label(self) -> str:
        name = os.path.basename(self.path)
        return name if self.index == 0 else f"{name}#{self.index}"


def default_font_cache() -> str:
    """Where ``scripts/fonts.sh`` extracts packages without root: $PMLAC_FONT_CACHE, else
    $XDG_CACHE_HOME (or ~/.cache)/pml-anticollapse/fonts."""
    if os.environ.get("PMLAC_FONT_CACHE"):
        return os.environ["PMLAC_FONT_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pml-anticollapse", "fonts")


def _dpkg_files(package: str) -> tuple[str | None, list[str]]:
    """(installed version or None, files of the package) from dpkg; (None, []) without dpkg."""
    if shutil.which("dpkg-query") is None:
        return None, []
    q = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}\t${Version}", package],
        capture_output=True, text=True, check=False,
    )
    status, _, version = q.stdout.partition("\t")
    if q.returncode != 0 or not status.endswith(" installed"):
        return None, []
    files = subprocess.run(
        ["dpkg", "-L", package], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return version or None, files


def _extracted_files(package: str, cache: str) -> tuple[str | None, list[str]]:
    root = os.path.join(cache, package)
    if not os.path.isdir(root):
        return None, []
    version = None
    stamp = os.path.join(root, "VERSION")
    if os.path.isfile(stamp):
        with open(stamp, encoding="utf-8") as f:
            version = f.read().strip() or None
    out = []
    for d, _, names in os.walk(root):
        out.extend(os.path.join(d, n) for n in names)
    return version, sorted(out)


def font_set_faces(font_set: str, font_cache: str | None = None) -> list[FontFace]:
    """The designs of a pinned font set, located on this machine.

    Raises:
        ValueError: unknown ``font_set``; a package of the set (or one of its pinned files) is
            not installed and not extracted in the font cache (the message says how to install).
    """
    if font_set not in FONT_SETS:
        raise ValueError(
            f"dataset.font_set must be one of {', '.join(FONT_SETS)}, got {font_set!r}"
        )
    cache = font_cache or default_font_cache()
    faces, missing = [], []
    for package, (_, files) in FONT_SETS[font_set].items():
        version, listed = _dpkg_files(package)
        if not listed:
            version, listed = _extracted_files(package, cache)
        by_name = {}
        for p in listed:
            if os.path.isfile(p):
                by_name.setdefault(os.path.basename(p), p)
        for name, index in files:
            if name not in by_name:
                missing.append(f"{package} ({name})")
                continue
            faces.append(FontFace(by_name[name], index, package, version))
    if missing:
        raise ValueError(
            f"dataset.font_set {font_set!r}: {len(missing)} font file(s) not found, e.g. "
            f"{', '.join(missing[:4])}; install them with `bash scripts/fonts.sh {font_set}` "
            f"(apt-get as root, else extracted into {cache}), or pass --font-dir DIR "
            f"(dataset.font_dir) with a folder of .ttf/.otf/.ttc files"
        )
    return faces


_REGULAR = ("regular", "book", "roman", "normal", "medium", "w3")


def font_dir_faces(font_dir: str) -> list[FontFace]:
    """One face per design from every .ttf/.otf/.ttc under ``font_dir`` (recursive, sorted).

    Raises:
        ValueError: ``font_dir`` is not a folder, or holds no font file.
    """
    from fontTools.ttLib import TTCollection, TTFont

    if not isinstance(font_dir, (str, os.PathLike)):
        raise TypeError(f"dataset.font_dir must be a path to a folder, got {font_dir!r}")
    font_dir = os.fspath(font_dir)
    if not os.path.isdir(font_dir):
        what = "a file" if os.path.exists(font_dir) else "nothing"
        raise ValueError(
            f"dataset.font_dir (--font-dir) must be a folder of .ttf/.otf/.ttc files, "
            f"got {font_dir!r}, which is {what}"
        )
    paths = sorted(
        os.path.join(d, n)
        for d, _, names in os.walk(font_dir)
        for n in names
        if n.lower().endswith(FONT_SUFFIXES)
    )
    if not paths:
        raise ValueError(
            f"dataset.font_dir (--font-dir) must be a folder of .ttf/.otf/.ttc files, "
            f"got {font_dir!r}, which holds none"
        )
    families: dict[str, list[tuple[str, FontFace]]] = {}
    for p in paths:
        if p.lower().endswith(".ttc"):
            fonts = list(TTCollection(p, lazy=True).fonts)
        else:
            fonts = [TTFont(p, lazy=True)]
        for i, font in enumerate(fonts):
            name = font["name"] if "name" in font else None
            family = (name.getDebugName(16) or name.getDebugName(1)) if name else None
            sub = (name.getDebugName(17) or name.getDebugName(2)) if name else None
            key = family or f"{p}#{i}"
            families.setdefault(key, []).append(((sub or "").lower(), FontFace(p, i)))
    faces = []
    for members in families.values():
        regular = [f for sub, f in members if sub in _REGULAR]
        faces.append((regular or [f for _, f in members])[0])
    return sorted(faces, key=lambda f: (f.path, f.index))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in FONT_SETS:
        print(f"usage: python benchmarks/harness/glyphs/fonts.py {{{','.join(FONT_SETS)}}}",
              file=sys.stderr)
        return 2
    print(" ".join(FONT_SETS[args[0]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
