"""The ``gradnorm`` weighting: loss weights learned to balance the task gradients' norms."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from mtbench.weighting import GradientWeighting

from .common import Adam, check_range, combine, options_of, state
from .options import GradNormConfig

MIN_WEIGHT = 1e-4  # before renormalisation: weights stay positive


class GradNorm(GradientWeighting):
    """GradNorm: Chen, Badrinarayanan, Lee and Rabinovich, "GradNorm: Gradient Normalization for
    Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018 (Algorithm 1).

    Loss weights ``w_t`` (starting at 1) give the update ``sum_t w_t g_t``. With
    ``G_t = w_t |g_t|``, ``r_t = (L_t / L_t(0)) / mean_k (L_k / L_k(0))`` (``L(0)``: the losses of
    the first step) and the target ``mean_k G_k * r_t^alpha`` held constant, each step lowers
    ``L_grad = sum_t |G_t - target_t|`` by an Adam step on ``w`` (gradient
    ``sign(G_t - target_t) |g_t|``), then renormalises ``w`` to sum to ``T``. The update uses the
    weights before this step, as in the paper.

    The norms are those of each task's gradient of all shared parameters (the paper takes the
    last shared layer's; the trainer hands methods the whole backbone's gradient).

    Example:
        ``python -m mtbench weighting=gradnorm weighting.alpha=1.0``
    """

    def __init__(self, alpha: float = 1.5, weight_lr: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_range("alpha", alpha, 0.0)
        check_range("weight_lr", weight_lr, 0.0, low_open=True)
        self.alpha, self.weight_lr = float(alpha), float(weight_lr)

    def build_state(self, num_tasks: int) -> None:
        self.task_weights = state(self, "task_weights", (num_tasks,), "ones")
        self.adam = Adam(self, self.task_weights, self.weight_lr)
        self.initial_losses = state(self, "initial_losses", (num_tasks,), "ones")
        self.has_initial = state(self, "has_initial", (num_tasks,))

    def aggregate(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # each task's first positive loss (a batch without a label for it gives exactly 0)
        first = tf.logical_and(self.has_initial <= 0.0, losses > 0.0)
        self.initial_losses.assign(tf.where(first, losses, self.initial_losses))
        self.has_initial.assign(tf.where(first, 1.0, tf.convert_to_tensor(self.has_initial)))
        weights = tf.convert_to_tensor(self.task_weights)
        update = combine(grads, weights)

        norms = tf.norm(grads, axis=1)
        weighted_norms = weights * norms
        known = tf.logical_and(self.has_initial > 0.0, losses > 0.0)
        training_rate = tf.where(known, losses / self.initial_losses, 1.0)
        inverse_rate = training_rate / tf.reduce_mean(training_rate)
        target = tf.reduce_mean(weighted_norms) * tf.pow(inverse_rate, self.alpha)
        self.adam.apply(tf.sign(weighted_norms - target) * norms)
        positive = tf.maximum(tf.convert_to_tensor(self.task_weights), MIN_WEIGHT)
        count = tf.cast(tf.size(positive), tf.float32)
        self.task_weights.assign(count * positive / tf.reduce_sum(positive))
        return update, weights

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, GradNormConfig)}
