from .coding_rate_regularizer import CodingRateRegularizer
from .koleo_regularizer import KoLeoRegularizer
from .uniformity_regularizer import UniformityRegularizer

__all__ = ["CodingRateRegularizer", "KoLeoRegularizer", "UniformityRegularizer"]
