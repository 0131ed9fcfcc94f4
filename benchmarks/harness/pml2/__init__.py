"""Every use of a pytorch-metric-learning 2.x-only API by the harness, one small module per
concern, so that a port to a PML release that drops or moves them (trainers, testers, logging
presets, record-keeper support, the ``datasets`` package, ``AccuracyCalculator``) touches these
files only:

- ``training``: ``trainers.MetricLossOnly`` (and its autocast variant), the trainer's tqdm bars;
- ``testing``:  ``testers.GlobalEmbeddingSpaceTester``, ``AccuracyCalculator``, the tester's bars;
- ``records``:  ``record_keeper`` (csv, sqlite, TensorBoard), ``logging_presets.HookContainer``;
- ``pml_datasets``: ``pytorch_metric_learning.datasets`` (CUB, Cars196, SOP readers);
- :func:`configure` (below): PML's logger level and its progress bars, set where the CLI starts.

What stays outside: losses, miners, reducers, distances, samplers, ``common_functions`` — APIs that
PML 3 keeps.
"""

from __future__ import annotations

import logging


def configure(show_inner_bars: bool) -> None:
    """Process-wide settings of PML for the CLI: its logger at ERROR (it warns e.g. "optimizers
    is missing embedder_optimizer" for every Identity embedder), and the tqdm bars that its
    trainer and tester draw made transient (or hidden)."""
    from . import testing, training

    logging.getLogger("PML").setLevel(logging.ERROR)
    training.set_progress_bars(show_inner_bars)
    testing.set_progress_bars(show_inner_bars)


def _tqdm_shim(show: bool):
    import functools
    import types

    import tqdm as tqdm_mod

    return types.SimpleNamespace(
        tqdm=functools.partial(tqdm_mod.tqdm, leave=False, disable=not show)
    )
