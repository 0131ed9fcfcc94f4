from .coding_rate_regularizer import CodingRateRegularizer

__all__ = ["CodingRateRegularizer"]
