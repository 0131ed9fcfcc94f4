"""pml-anticollapse: anti-collapse methods for pytorch-metric-learning.

- Anti-Collapse Loss (Jiang et al., arXiv 2407.03106): ``CodingRateRegularizer``,
  ``AntiCollapseLoss``, ``MCR2Loss`` and the functional core in ``pml_anticollapse.functional``.
- Easy Positive Sampling (Levi et al., arXiv 2006.05162): ``EasyPositiveMiner``.
- Ranked List Loss (Wang et al., arXiv 1903.03238): ``RankedListLoss``.
"""

__version__ = "0.1.0.dev0"

from . import functional
from .losses import AntiCollapseLoss, MCR2Loss, RankedListLoss
from .miners import EasyPositiveMiner
from .regularizers import CodingRateRegularizer
from .regularizers.koleo_regularizer import KoLeoRegularizer
from .regularizers.uniformity_regularizer import UniformityRegularizer

__all__ = [
    "AntiCollapseLoss",
    "CodingRateRegularizer",
    "EasyPositiveMiner",
    "KoLeoRegularizer",
    "MCR2Loss",
    "RankedListLoss",
    "UniformityRegularizer",
    "__version__",
    "functional",
]
