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
from .easy_positive import (
    EasyPositiveTriplets,
    distance_weighted_log_weights,
    easy_positive_triplets,
)
from .koleo import mean_log_nn_distance
from .penalties import rate_penalty
from .ranked_list import RankedListParts, ranked_list_loss, ranked_list_loss_parts
from .uniformity import uniformity

__all__ = [
    "CholeskyFallbackWarning",
    "EasyPositiveTriplets",
    "RankedListParts",
    "RateReduction",
    "coding_rate",
    "coding_rate_reduction",
    "distance_weighted_log_weights",
    "easy_positive_triplets",
    "effective_rank",
    "half_logdet_gram",
    "intra_inter_distance_ratio",
    "mean_log_nn_distance",
    "ranked_list_loss",
    "ranked_list_loss_parts",
    "rate_penalty",
    "rho_spectrum",
    "singular_value_spectrum",
    "uniformity",
]
