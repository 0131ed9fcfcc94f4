from .anti_collapse_loss import AntiCollapseLoss
from .mcr2_loss import MCR2Loss
from .ranked_list_loss import RankedListLoss

__all__ = ["AntiCollapseLoss", "MCR2Loss", "RankedListLoss"]
