"""The ``gls`` weighting: the geometric mean of the task losses."""

from __future__ import annotations

import tensorflow as tf

from mtbench import register
from mtbench.weighting import LossWeighting


@register("weighting", "gls")
class GeometricLossStrategy(LossWeighting):
    """Geometric loss strategy: Chennupati, Sistu, Yogamani and Rawashdeh, "MultiNet++:
    Multi-Stream Feature Aggregation and Geometric Loss Strategy for Multi-Task Learning", CVPR
    Workshops 2019.

    The objective is the geometric mean ``(prod_t L_t)^(1/T)``, computed as
    ``exp(mean_t log L_t)``. Its gradient is ``sum_t w_t grad L_t`` with
    ``w_t = objective / (T L_t)``: each task is weighted inversely to its loss, which makes the
    objective invariant to rescaling any one loss. The logged weights are these ``w_t``.
    """

    def combine(self, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        objective = tf.exp(tf.reduce_mean(tf.math.log(losses)))
        return objective, self._weights(objective, losses)

    def loss_weights(self, losses: tf.Tensor) -> tf.Tensor:
        return self._weights(tf.exp(tf.reduce_mean(tf.math.log(losses))), losses)

    @staticmethod
    def _weights(objective: tf.Tensor, losses: tf.Tensor) -> tf.Tensor:
        count = tf.cast(tf.size(losses), losses.dtype)
        return tf.stop_gradient(objective / (count * losses))
