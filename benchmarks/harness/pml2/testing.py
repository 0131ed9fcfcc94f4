"""PML 2's tester (``testers.GlobalEmbeddingSpaceTester``) and ``AccuracyCalculator``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from pytorch_metric_learning.testers import GlobalEmbeddingSpaceTester
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

#: Split names given to the tester (they name record-keeper's accuracy groups; "test" as before
#: the reference split existed).
QUERY, REFERENCE = "test", "reference"

__all__ = [
    "AccuracyCalculator", "make_tester", "embed", "embeddings_and_accuracies", "set_progress_bars",
]


def known_metrics() -> list[str]:
    """The metric names ``AccuracyCalculator`` computes."""
    return list(AccuracyCalculator().get_curr_metrics())


def make_tester(
    *,
    metrics: tuple[str, ...],
    batch_size: int,
    num_workers: int,
    device: torch.device,
    end_of_testing_hook: Callable,
) -> GlobalEmbeddingSpaceTester:
    """The tester with L2-normalised embeddings and ``AccuracyCalculator(k="max_bin_count")``
    (with a smaller k, MAP@R and R-precision are wrong and PML 2.9 only logs a warning:
    ``AccuracyCalculator`` in ``pytorch_metric_learning/utils/accuracy_calculator.py``)."""
    calc = AccuracyCalculator(include=metrics, k="max_bin_count", device=device)
    return GlobalEmbeddingSpaceTester(
        normalize_embeddings=True,
        batch_size=batch_size,
        dataloader_num_workers=num_workers,
        data_device=device,
        accuracy_calculator=calc,
        end_of_testing_hook=end_of_testing_hook,
    )


def run(tester, query_set, reference_set, epoch: int, trunk, embedder) -> None:
    """Rank ``query_set`` against ``reference_set`` (None: against itself, each query's own item
    excluded). PML sets ``ref_includes_query`` from the split names: True only when the query
    split is among the reference splits."""
    if reference_set is None:
        tester.test({QUERY: query_set}, epoch, trunk, embedder, splits_to_eval=[(QUERY, [QUERY])])
    else:
        tester.test({QUERY: query_set, REFERENCE: reference_set}, epoch, trunk, embedder,
                    splits_to_eval=[(QUERY, [REFERENCE])])


def embed(tester, dataset, trunk, embedder) -> torch.Tensor:
    """The embeddings of ``dataset`` as the tester computes them (eval mode, the tester's batch
    size, L2-normalised), without ranking them: ``get_all_embeddings``."""
    emb, _ = tester.get_all_embeddings(dataset, trunk, embedder)
    return emb


def embeddings_and_accuracies(tester, metrics) -> tuple[torch.Tensor, dict[str, float]]:
    """The query embeddings and ``{metric: value}`` of the last ``run``."""
    emb, _ = tester.embeddings_and_labels[QUERY]
    acc = tester.all_accuracies[QUERY]
    return emb, {m: float(acc[f"{m}_level0"]) for m in metrics}


def set_progress_bars(show: bool) -> None:
    """PML's tester draws its own tqdm bar: make it transient (or hide it)."""
    from pytorch_metric_learning.testers import base_tester

    from . import _tqdm_shim

    base_tester.tqdm = _tqdm_shim(show)
