"""argparse types shared by the benchmark scripts: a bad value stops with exit code 2 and a
message naming the option (argparse puts its name before ours)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _number(cast: Callable[[str], float], strict: bool, what: str) -> Callable[[str], float]:
    """A type that parses ``text`` with ``cast`` and accepts finite values > 0 (``strict``) or
    ≥ 0."""

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or (value <= 0 if strict else value < 0):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse's fallback message names the type by it
    return parse


positive_int = _number(int, True, "a positive integer")
non_negative_int = _number(int, False, "an integer >= 0")
positive_float = _number(float, True, "a positive, finite number")
non_negative_float = _number(float, False, "a finite number >= 0")
