"""The trainer's public names; the code lives in :mod:`mtbench.training`, one idea per module."""

from mtbench.training.records import EpochRecord, FitResult
from mtbench.training.selection import SELECTION_RULE, selection_score
from mtbench.training.trainer import Budget, Interrupted, NonFiniteError, Trainer

__all__ = [
    "SELECTION_RULE",
    "Budget",
    "EpochRecord",
    "FitResult",
    "Interrupted",
    "NonFiniteError",
    "Trainer",
    "selection_score",
]
