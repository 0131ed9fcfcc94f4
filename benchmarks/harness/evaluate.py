"""Evaluation on PML's machinery (``pml2.testing``: ``GlobalEmbeddingSpaceTester`` +
``AccuracyCalculator`` with faiss), plus the collapse diagnostics of the plugin on the same query
embeddings.

A protocol's queries are ranked against its reference set, or against each other (each query's
own item excluded) when it has none.
"""

from __future__ import annotations

import torch

from pml_anticollapse.functional import effective_rank, singular_value_spectrum

from .pml2 import testing

METRIC_LABELS = {
    "precision_at_1": "P@1",
    "r_precision": "R-Prec",
    "mean_average_precision_at_r": "MAP@R",
    "NMI": "NMI",
    "effective_rank": "eff. rank",
}


class Evaluator:
    """A tester whose end-of-testing hook captures metrics and diagnostics (and forwards to the
    record-keeper's hook, if given)."""

    def __init__(self, metrics, batch_size: int, num_workers: int, device: torch.device,
                 hooks=None):
        self.metrics = tuple(metrics)
        self.hooks = hooks
        self.captured: dict = {}
        self.tester = testing.make_tester(
            metrics=self.metrics,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            end_of_testing_hook=self._end_of_testing,
        )

    def _end_of_testing(self, tester) -> None:
        if self.hooks is not None:
            self.hooks.end_of_testing_hook(tester)
        emb, metrics = testing.embeddings_and_accuracies(tester, self.metrics)
        emb = emb.detach().float().cpu().contiguous()
        self.captured["metrics"] = metrics
        self.captured["metrics"]["effective_rank"] = float(effective_rank(emb))
        self.captured["spectrum"] = [float(s) for s in singular_value_spectrum(emb)]
        self.captured["num_test"] = int(emb.shape[0])
        self.captured["dim"] = int(emb.shape[1])

    def run(self, query_set, reference_set, epoch: int, trunk, embedder) -> dict:
        """Metrics of ``query_set`` ranked against ``reference_set`` (None: against itself).

        faiss asserts on non-contiguous tensors; the tester builds fresh contiguous buffers.
        """
        self.captured.clear()
        testing.run(self.tester, query_set, reference_set, epoch, trunk, embedder)
        out = dict(self.captured)
        if reference_set is not None:
            out["num_reference"] = len(reference_set)
        return out

    def effective_rank_of(self, dataset, trunk, embedder) -> float:
        """The effective rank of ``dataset``'s embeddings, computed as the query embeddings are
        (the tester's forward pass in eval mode, L2-normalised), without ranking them and without
        the record-keeper: e.g. the training set, to see collapse on the training classes."""
        emb = testing.embed(self.tester, dataset, trunk, embedder)
        return float(effective_rank(emb.detach().float().cpu().contiguous()))
