"""The ``excess_mtl`` weighting: task weights from estimated excess risks."""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf

from mtbench.weighting import GradientWeighting

from .balance_util import all_finite, task_buffer
from .common import check_range, combine, options_of, state
from .options import ExcessMTLConfig

EPSILON = 1e-7  # the reference's sqrt(sum of squared gradients + 1e-7)


class ExcessMTL(GradientWeighting):
    """ExcessMTL: He, Zhou, Zhang, Yun, Xu, Zeng, Chilimbi and Zhao, "Robust Multi-Task
    Learning with Excess Risks", ICML 2024; the reference code is LibMTL's ``ExcessMTL``
    (from the authors' repository).

    Each task's excess risk is estimated by a second-order Taylor expansion with a diagonal
    (AdaGrad) preconditioner: with ``S_t`` the running sum of task t's squared gradients
    (elementwise, this step's included), ``e_t = sum_p g_tp^2 / sqrt(S_tp + 1e-7)``. The first
    step records ``e_t^0 = e_t`` (scale normalisation) and keeps the weights at 1; later steps
    update ``w_t <- w_t exp(robust_step_size e_t / e_t^0)`` and renormalise to ``sum_t w_t = T``.
    The update is ``sum_t w_t g_t``: a task further from convergence, relative to where it
    started, gains weight. The logged weights are ``w_t``.

    Differences from the reference code (LibMTL ``weighting/ExcessMTL.py``):

    - Task-specific heads are trained on their own loss ``L_t``, as for every mtbench method;
      the reference back-propagates ``sum_t w_t L_t``, so there head t's gradient is scaled by
      ``w_t``.
    - The weights are kept as logarithms, normalised with a log-sum-exp: the same values,
      without the overflow of ``exp`` when ``e_t / e_t^0`` is large.
    - A task whose ``e_t`` is 0 on the first step (a zero gradient) takes its ``e_t^0`` from its
      first step with a positive estimate and keeps its weight's exponent until then; the
      reference divides by 0 (NaN weights).
    - A step with a non-finite loss or gradient leaves the state as it was (its update is still
      non-finite, so the trainer fails or skips it).
    - It works on the gradients of the shared parameters only: the reference's ``rep_grad``
      variant sums the feature gradients over the batch, which mtbench's flattened feature
      gradients do not support.

    ``S`` is ``[T, P]`` float32 state (created on the first step; see
    :func:`.balance_util.task_buffer`); ``e^0`` and the log-weights are float64 ``[T]``. Cost
    per step, beyond the T backward passes of every gradient method: O(T P) time and T P floats
    of state (no Gram matrix).

    Example:
        ``python -m mtbench weighting=excess_mtl weighting.robust_step_size=0.01``
    """

    def __init__(self, robust_step_size: float = 0.01, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_range("robust_step_size", robust_step_size, 0.0)
        self.robust_step_size = float(robust_step_size)

    def build_state(self, num_tasks: int) -> None:
        self.initial_excess = state(self, "initial_excess", (num_tasks,), dtype="float64")
        self.log_weights = state(self, "log_weights", (num_tasks,), dtype="float64")

    def build_gradient_state(self, gradient_size: int) -> None:
        task_buffer(self, "squared_gradient_sum", (self.num_tasks, int(gradient_size)))

    def aggregate(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        num_tasks = grads.shape[0]
        squares_sum = task_buffer(self, "squared_gradient_sum", grads)
        squares = tf.square(grads)
        summed = tf.convert_to_tensor(squares_sum) + squares
        excess = tf.reduce_sum(tf.cast(squares / tf.sqrt(summed + EPSILON), tf.float64), axis=1)
        initial = tf.convert_to_tensor(self.initial_excess)
        unset = initial <= 0.0
        ratio = tf.where(
            unset, tf.zeros_like(excess), excess / tf.where(unset, tf.ones_like(initial), initial)
        )
        log_weights = tf.convert_to_tensor(self.log_weights) + self.robust_step_size * ratio
        log_weights += math.log(num_tasks) - tf.reduce_logsumexp(log_weights)
        weights = tf.exp(log_weights)
        finite = all_finite(grads, losses)
        squares_sum.assign(tf.where(finite, summed, squares_sum))
        self.initial_excess.assign(tf.where(finite & unset, excess, initial))
        self.log_weights.assign(tf.where(finite, log_weights, self.log_weights))
        return combine(grads, weights), tf.cast(weights, tf.float32)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, ExcessMTLConfig)}
