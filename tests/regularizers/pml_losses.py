"""Every PML loss that takes a regularizer, built and called the same way by the regularizer
tests (``test_pml_contract.py``, ``test_uniformity_koleo_regularizers.py``)."""

from __future__ import annotations

import inspect

import torch
from pytorch_metric_learning import losses
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.losses.mixins import WeightRegularizerMixin

C, D, M = 6, 16, 24

# Classes that need something more than (num_classes, embedding_size); the margins of the
# LargeMarginSoftmax family are ints, RankedListLoss has required arguments.
EXTRA_KWARGS = {
    "ManifoldLoss": dict(l=D, K=4),
    "P2SGradLoss": dict(descriptors_dim=D, num_classes=C),
    "RankedListLoss": dict(margin=0.4, Tn=10),
}
NOT_APPLICABLE = {
    "GenericPairLoss": "abstract base class",
    "VICRegLoss": "PML refuses regularizers on it ('VICRegLoss cannot use a regularizer')",
}
# How each proxy loss stores its class weights, written independently of the package.
WEIGHT_ROWS = {
    "ProxyAnchorLoss": lambda loss: loss.proxies,
    "ProxyNCALoss": lambda loss: loss.proxies,
    "NormalizedSoftmaxLoss": lambda loss: loss.W.t(),
    "LargeMarginSoftmaxLoss": lambda loss: loss.W.t(),
    "ArcFaceLoss": lambda loss: loss.W.t(),
    "CosFaceLoss": lambda loss: loss.W.t(),
    "SphereFaceLoss": lambda loss: loss.W.t(),
    "SubCenterArcFaceLoss": lambda loss: loss.W.t(),
    "SoftTripleLoss": lambda loss: loss.fc.t(),
}


def loss_classes(predicate=lambda cls: True):
    names = []
    for name, cls in sorted(vars(losses).items()):
        if inspect.isclass(cls) and issubclass(cls, BaseMetricLossFunction):
            if cls is not BaseMetricLossFunction and predicate(cls):
                names.append(name)
    return names


ALL_LOSSES = loss_classes()
WEIGHT_LOSSES = loss_classes(lambda cls: issubclass(cls, WeightRegularizerMixin))


def make_loss(name, **kwargs):
    """PML's loss ``name`` with the arguments it needs here, plus ``kwargs``."""
    cls = getattr(losses, name)
    args = dict(EXTRA_KWARGS.get(name, {}))
    if issubclass(cls, WeightRegularizerMixin):  # CosFace & co. take them through **kwargs
        args.update(num_classes=C, embedding_size=D)
    return cls(**args, **kwargs)


def call_loss(loss, z, y):
    """``loss(z, y)``, reproducibly (and ``loss(z)`` for the loss that takes no labels)."""
    torch.manual_seed(11)  # ManifoldLoss draws random meta-classes: same draw for both calls
    if type(loss).__name__ == "ManifoldLoss":  # takes no labels
        return loss(z)
    return loss(z, y)
