"""The character sets of the glyph benchmark: fixed, documented lists, built from code points.

- ``kanji``: the 2965 kanji of JIS X 0208 level 1 (第一水準), i.e. the EUC-JP byte pairs
  0xB0A1–0xCFFE that decode (rows 16–47 of JIS X 0208; row 47 ends at 0xCFD3), in JIS order.
- ``kana``: 143 kana: hiragana U+3041–U+3096 and katakana U+30A1–U+30FA without the small forms
  (ぁぃぅぇぉっゃゅょゎゕゖ and their katakana), without katakana ヘ ベ ペ (the same shapes as
  hiragana へ べ ぺ, so two classes would be one) and without the rare voiced forms
  ゔ ヴ ヷ ヸ ヹ ヺ (absent from several fonts).
- ``latin``: the 62 ASCII alphanumerics 0-9, A-Z, a-z. After cropping to the bounding box some are
  ambiguous in some fonts (o/O/0, l/I/1): a known limit of this set.
"""

from __future__ import annotations

import numpy as np

_SMALL_KANA = "ぁぃぅぇぉっゃゅょゎゕゖァィゥェォッャュョヮヵヶ"
_KANA_DROPPED = "ヘベペゔヴヷヸヹヺ"


def kanji_level1() -> str:
    """The 2965 JIS X 0208 level-1 kanji (EUC-JP 0xB0A1–0xCFFE), in JIS order."""
    out = []
    for hi in range(0xB0, 0xD0):
        for lo in range(0xA1, 0xFF):
            try:
                out.append(bytes((hi, lo)).decode("euc_jp"))
            except UnicodeDecodeError:
                continue
    return "".join(out)


def kana() -> str:
    """143 hiragana and katakana (see the module docstring for what is left out)."""
    chars = [chr(c) for c in range(0x3041, 0x3097)] + [chr(c) for c in range(0x30A1, 0x30FB)]
    return "".join(c for c in chars if c not in _SMALL_KANA and c not in _KANA_DROPPED)


def latin() -> str:
    """The 62 ASCII alphanumerics: 0-9, A-Z, a-z."""
    return "".join(map(chr, [*range(48, 58), *range(65, 91), *range(97, 123)]))


CHARSETS = {"kanji": kanji_level1, "kana": kana, "latin": latin}


def select_characters(charset: str, count: int | None = None, seed: int = 0) -> str:
    """The characters of one protocol: ``charset``, or a seeded sample of ``count`` of them.

    The sample is ``numpy.random.RandomState(seed).choice(len, count, replace=False)``, kept in
    the set's own order, so a (charset, count, seed) triple names the same characters everywhere.

    Raises:
        ValueError: unknown ``charset``; ``count`` not an int in [2, size of the set].
    """
    if charset not in CHARSETS:
        raise ValueError(
            f"dataset.charset must be one of {', '.join(CHARSETS)}, got {charset!r}"
        )
    chars = CHARSETS[charset]()
    if count is None:
        return chars
    if isinstance(count, bool) or not isinstance(count, int) or not 2 <= count <= len(chars):
        raise ValueError(
            f"dataset.num_characters must be an int in [2, {len(chars)}] for charset "
            f"{charset!r}, got {count!r}"
        )
    idx = np.sort(np.random.RandomState(seed).choice(len(chars), count, replace=False))
    return "".join(chars[i] for i in idx)
