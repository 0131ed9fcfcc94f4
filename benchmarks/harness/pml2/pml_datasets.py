"""PML 2's dataset readers (``pytorch_metric_learning.datasets``; removed in PML 3)."""

from __future__ import annotations


def dataset_class(class_name: str):
    """``pytorch_metric_learning.datasets.<class_name>`` (``CUB``, ``Cars196``,
    ``StanfordOnlineProducts``): ``(root, split, transform, download)``."""
    from pytorch_metric_learning import datasets

    return getattr(datasets, class_name)
