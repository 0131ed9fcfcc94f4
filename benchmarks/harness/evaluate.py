"""Evaluation on PML's machinery: ``GlobalEmbeddingSpaceTester`` + ``AccuracyCalculator`` (faiss),
plus the collapse diagnostics of the plugin on the same test embeddings."""

from __future__ import annotations

import torch
from pytorch_metric_learning.testers import GlobalEmbeddingSpaceTester
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from pml_anticollapse.functional import effective_rank, singular_value_spectrum

METRIC_LABELS = {
    "precision_at_1": "P@1",
    "r_precision": "R-Prec",
    "mean_average_precision_at_r": "MAP@R",
    "NMI": "NMI",
    "effective_rank": "eff. rank",
}


def make_tester(
    cfg: dict, device: torch.device, hooks=None
) -> tuple[GlobalEmbeddingSpaceTester, dict]:
    """The tester and a dict that its end-of-testing hook fills with metrics and diagnostics.

    ``k="max_bin_count"``: a smaller k silently gives wrong MAP@R (REFERENCE.md §4).
    """
    captured: dict = {}
    metrics = tuple(cfg["evaluation"]["metrics"])
    calc = AccuracyCalculator(include=metrics, k="max_bin_count", device=device)

    def end_of_testing_hook(tester):
        if hooks is not None:
            hooks.end_of_testing_hook(tester)
        emb, _ = tester.embeddings_and_labels["test"]
        emb = emb.detach().float().cpu().contiguous()
        acc = tester.all_accuracies["test"]
        captured["metrics"] = {m: float(acc[f"{m}_level0"]) for m in metrics}
        captured["metrics"]["effective_rank"] = float(effective_rank(emb))
        captured["spectrum"] = [float(s) for s in singular_value_spectrum(emb)]
        captured["num_test"] = int(emb.shape[0])
        captured["dim"] = int(emb.shape[1])

    tester = GlobalEmbeddingSpaceTester(
        normalize_embeddings=True,
        batch_size=cfg["evaluation"]["batch_size"],
        dataloader_num_workers=cfg["training"].get("num_workers", 0),
        data_device=device,
        accuracy_calculator=calc,
        end_of_testing_hook=end_of_testing_hook,
    )
    return tester, captured


def run_tester(tester, captured: dict, test_set, epoch: int, trunk, embedder) -> dict:
    """Run the tester on the test split (queries = references, self excluded)."""
    # faiss asserts on non-contiguous tensors; the tester builds fresh contiguous buffers.
    tester.test({"test": test_set}, epoch, trunk, embedder, splits_to_eval=[("test", ["test"])])
    return dict(captured)
