"""Pure functions on tensors: the one source of the package's math."""

from .coding_rate import (
    CholeskyFallbackWarning,
    RateReduction,
    coding_rate,
    coding_rate_reduction,
    half_logdet_gram,
)
from .diagnostics import (
    effective_rank,
    intra_inter_distance_ratio,
    rho_spectrum,
    singular_value_spectrum,
)
from .koleo import mean_log_nn_distance
from .penalties import rate_penalty
from .ranked_list import ranked_list_loss
from .uniformity import uniformity

__all__ = [
    "CholeskyFallbackWarning",
    "RateReduction",
    "coding_rate",
    "coding_rate_reduction",
    "effective_rank",
    "half_logdet_gram",
    "ranked_list_loss",
    "rate_penalty",
    "intra_inter_distance_ratio",
    "mean_log_nn_distance",
    "rho_spectrum",
    "singular_value_spectrum",
    "uniformity",
]
