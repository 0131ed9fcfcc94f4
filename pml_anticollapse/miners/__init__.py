from .easy_positive_miner import EasyPositiveMiner

__all__ = ["EasyPositiveMiner"]
