"""pml-anticollapse: anti-collapse methods for pytorch-metric-learning.

- Anti-Collapse Loss (Jiang et al., arXiv 2407.03106): ``CodingRateRegularizer``,
  ``AntiCollapseLoss``, ``MCR2Loss`` and the functional core in ``pml_anticollapse.functional``.
"""

__version__ = "0.1.0.dev0"

from . import functional
from .losses import AntiCollapseLoss, MCR2Loss
from .regularizers import CodingRateRegularizer

__all__ = [
    "AntiCollapseLoss",
    "CodingRateRegularizer",
    "MCR2Loss",
    "__version__",
    "functional",
]
