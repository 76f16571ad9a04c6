"""The ``ew`` weighting: every task's loss with weight 1 (the plain sum of losses)."""

from mtbench import register
from mtbench.weighting import EqualWeights

register("weighting", "ew")(EqualWeights)
