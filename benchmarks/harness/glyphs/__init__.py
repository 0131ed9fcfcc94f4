"""Glyphs rendered from real fonts: the embedded benchmark data where learning matters.

Classes = characters, instances = font designs (the idea of notMNIST and Omniglot): see
``charsets`` (which characters), ``fonts`` (which fonts: pinned Debian packages or a folder),
``render`` (Pillow rendering, placeholder detection, cache + manifest, sample grid) and
``model`` (the small CNN that fits a CPU).
"""

from .charsets import CHARSETS, select_characters
from .fonts import FONT_SETS, FontFace, font_dir_faces, font_set_faces
from .render import GlyphSet, default_cache_dir, render_glyphs, sample_grid

__all__ = [
    "CHARSETS",
    "FONT_SETS",
    "FontFace",
    "GlyphSet",
    "default_cache_dir",
    "font_dir_faces",
    "font_set_faces",
    "render_glyphs",
    "sample_grid",
    "select_characters",
]
