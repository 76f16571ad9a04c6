"""The ``dwa`` weighting: dynamic weight average of the epoch losses' rate of change."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from mtbench.weighting import LossWeighting

from .common import check_range, options_of, state
from .options import DynamicWeightAverageConfig


class DynamicWeightAverage(LossWeighting):
    """Dynamic weight average: Liu, Johns and Davison, "End-to-End Multi-Task Learning with
    Attention", CVPR 2019, Eq. 1.

    With ``L_k(e)`` task k's mean training loss over epoch ``e``, the weights during epoch ``e``
    are ``w_k = K exp(r_k / T) / sum_i exp(r_i / T)`` with ``r_k = L_k(e-1) / L_k(e-2)`` and ``K``
    the number of tasks; ``w_k = 1`` during the first two epochs. A task whose loss fell more
    slowly gets more weight. The epoch means come from the trainer (``on_epoch_end``), as in the
    paper's reference code.

    Example:
        ``python -m mtbench weighting=dwa weighting.temperature=2.0``
    """

    def __init__(self, temperature: float = 2.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_range("temperature", temperature, 0.0, low_open=True)
        self.temperature = float(temperature)

    def build_state(self, num_tasks: int) -> None:
        # rows: the mean losses of the last epoch and of the one before it
        self.history = state(self, "loss_history", (2, num_tasks), "ones")
        self.epochs_seen = state(self, "epochs_seen")

    def on_epoch_end(self, epoch: int, mean_losses: np.ndarray) -> None:
        latest = tf.constant(np.asarray(mean_losses, np.float32)[None])
        self.history.assign(tf.concat([latest, self.history[:1]], axis=0))
        self.epochs_seen.assign_add(1.0)

    def loss_weights(self, losses: tf.Tensor) -> tf.Tensor:
        history = tf.convert_to_tensor(self.history)
        # a task with no labelled example in an epoch has mean loss 0: its ratio counts as 1
        seen = history[1] > 0
        ratio = tf.where(seen, history[0] / tf.where(seen, history[1], 1.0), 1.0)
        count = tf.cast(tf.size(ratio), tf.float32)
        weights = count * tf.nn.softmax(ratio / self.temperature)
        return tf.where(self.epochs_seen >= 2.0, weights, tf.ones_like(weights))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, DynamicWeightAverageConfig)}
