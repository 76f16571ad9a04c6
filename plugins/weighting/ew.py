"""The ``ew`` weighting: every task's loss with weight 1 (the plain sum of losses)."""

from mtbench.weighting import EqualWeights

__all__ = ["EqualWeights"]
