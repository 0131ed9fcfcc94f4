"""``python -m benchmarks.speed``: the coding rate's forward and backward against the naive
formula, and its share of a training step (see ``bench.py`` and ``--help``)."""

from .bench import main

__all__ = ["main"]
