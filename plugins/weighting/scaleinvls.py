"""The ``scaleinvls`` weighting: the sum of the log task losses (scale-invariant linear
scalarisation)."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from mtbench.weighting import LossWeighting

from .common import check_range, options_of
from .options import ScaleInvariantConfig


class ScaleInvariantLinearScalarization(LossWeighting):
    """Scale-invariant linear scalarisation: the baseline ``ScaleInvariantLinearScalarization``
    of the Nash-MTL code base (Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik and Fetaya,
    "Multi-Task Learning as a Bargaining Game", ICML 2022) and of the FAMO code base (Liu, Liu,
    Jin, Stone and Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023), both
    ``methods/weight_methods.py``.

    The objective is ``sum_t log(L_t + eps)``; its gradient is ``sum_t grad L_t / (L_t + eps)``,
    so the logged weights are ``1 / (L_t + eps)``. Multiplying one task's loss by a constant
    adds a constant to the objective and leaves the model's gradient unchanged (for
    ``eps = 0``). It is the arithmetic-mean form of ``gls``, whose weights
    ``(prod_s L_s)^(1/T) / (T L_t)`` share the ``1 / L_t`` shape but are rescaled at every step.

    Differences from the reference code: it logs its constant task weights (1); mtbench logs the
    effective weights ``1 / (L_t + eps)``. Its optional fixed task weights (never set in the
    papers' experiments) are not offered; ``epsilon`` is mtbench's (0 reproduces the reference).

    A task whose ``L_t + eps`` is 0 (with ``eps = 0``: no labelled example in the batch) adds
    nothing to the objective and gets weight 0, instead of ``log 0``.

    Example:
        ``python -m mtbench weighting=scaleinvls weighting.epsilon=1e-8``
    """

    def __init__(self, epsilon: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_range("epsilon", epsilon, 0.0)
        self.epsilon = float(epsilon)

    def combine(self, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        shifted = losses + self.epsilon
        present = shifted > 0
        logs = tf.where(present, tf.math.log(tf.where(present, shifted, 1.0)), 0.0)
        return tf.reduce_sum(logs), self.loss_weights(losses)

    def loss_weights(self, losses: tf.Tensor) -> tf.Tensor:
        shifted = losses + self.epsilon
        present = shifted > 0
        return tf.stop_gradient(tf.where(present, 1.0 / tf.where(present, shifted, 1.0), 0.0))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, ScaleInvariantConfig)}
