"""The ``gls`` weighting: the geometric mean of the task losses."""

from __future__ import annotations

import tensorflow as tf

from mtbench.weighting import LossWeighting


class GeometricLossStrategy(LossWeighting):
    """Geometric loss strategy: Chennupati, Sistu, Yogamani and Rawashdeh, "MultiNet++:
    Multi-Stream Feature Aggregation and Geometric Loss Strategy for Multi-Task Learning", CVPR
    Workshops 2019.

    The objective is the geometric mean ``(prod_t L_t)^(1/T)``, computed as
    ``exp(mean_t log L_t)``. Its gradient is ``sum_t w_t grad L_t`` with
    ``w_t = objective / (T L_t)``: each task is weighted inversely to its loss, which makes the
    objective invariant to rescaling any one loss. The logged weights are these ``w_t``. A task
    whose loss is exactly 0 (no labelled example in the batch) is left out, with weight 0.
    """

    def combine(self, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        objective = self._objective(losses)
        return objective, self._weights(objective, losses)

    def loss_weights(self, losses: tf.Tensor) -> tf.Tensor:
        return self._weights(self._objective(losses), losses)

    @staticmethod
    def _objective(losses: tf.Tensor) -> tf.Tensor:
        """The geometric mean over the tasks with a positive loss: a task without a labelled
        example in the batch (loss exactly 0) is left out, not a zero factor."""
        present = losses > 0
        logs = tf.where(present, tf.math.log(tf.where(present, losses, 1.0)), 0.0)
        count = tf.maximum(tf.reduce_sum(tf.cast(present, losses.dtype)), 1.0)
        return tf.exp(tf.reduce_sum(logs) / count)

    @staticmethod
    def _weights(objective: tf.Tensor, losses: tf.Tensor) -> tf.Tensor:
        present = losses > 0
        count = tf.maximum(tf.reduce_sum(tf.cast(present, losses.dtype)), 1.0)
        safe = tf.where(present, losses, 1.0)
        return tf.stop_gradient(tf.where(present, objective / (count * safe), 0.0))
