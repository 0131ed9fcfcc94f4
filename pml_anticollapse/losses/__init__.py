from .anti_collapse_loss import AntiCollapseLoss
from .mcr2_loss import MCR2Loss

__all__ = ["AntiCollapseLoss", "MCR2Loss"]
