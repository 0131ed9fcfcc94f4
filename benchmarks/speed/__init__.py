"""``python -m benchmarks.speed``: the coding rate's forward and backward against the naive
formula, and its share of a training step (see ``cli.py`` and ``--help``).

Modules, each importing only those above it: ``implementations`` (what is timed, the float64
reference), ``timing``, ``training`` (the step overhead, on the harness's models), ``machine``
(CPU and BLAS probing, run metadata), ``report`` (targets, Markdown, plots, ``--compare``),
``sweep`` (``--accuracy-sweep``) and ``cli``.
"""

from .cli import main

__all__ = ["main"]
