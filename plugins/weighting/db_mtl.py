"""The ``db_mtl`` weighting: dual-balancing multi-task learning."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from mtbench.weighting import GradientWeighting

from .balance_util import all_finite, log_loss_scale, scale_rows, task_buffer
from .common import check_range, combine, options_of, state
from .options import DBMTLConfig

EPSILON = 1e-8  # the reference's log(L + 1e-8) and u_max / (u_t + 1e-8)


class DBMTL(GradientWeighting):
    """DB-MTL: Lin, Jiang, Ye, Zhang, Chen, Chen, Liu and Kwok, "Dual-Balancing for Multi-Task
    Learning", arXiv 2308.12029, 2023; the reference code is LibMTL's ``DB_MTL``.

    Balances the losses by taking logarithms and the gradients by their norms. At step ``k``,
    with ``h_t = grad log(L_t + 1e-8) = g_t / (L_t + 1e-8)`` the gradient of task t's
    log-loss, each task keeps an average ``m_t <- h_t + beta_k (m_t - h_t)`` (from ``m_t = 0``,
    without bias correction, ``beta_k = beta / k^beta_sigma``), and the update is
    ``sum_t alpha_t m_t`` with ``alpha_t = max_s |m_s| / (|m_t| + 1e-8)``: every task's averaged
    log-loss gradient rescaled to the largest norm among them. The logged weights are
    ``alpha_t`` (the factor on task t's averaged log-loss gradient, not on ``g_t``).

    Differences from the reference code (LibMTL ``weighting/DB_MTL.py``):

    - Task-specific heads are trained on their own loss ``L_t``, as for every mtbench method;
      the reference back-propagates ``log(L_t + 1e-8)`` into the heads too, so there a head's
      gradient is divided by ``L_t + 1e-8``.
    - A task whose average is exactly zero (its gradient has been zero since the start) is
      logged with weight 0; the reference's factor is ``max_s |m_s| / 1e-8`` on a zero vector.
      The update is the same.
    - Norms and the combination are computed in float64 from the float32 averages.
    - A step with a non-finite loss or gradient leaves the averages and the step count as they
      were (its update is still non-finite, so the trainer fails or skips it).

    A task without a labelled example in the batch has loss 0 and gradient 0, so its
    log-loss gradient is ``0 / 1e-8 = 0`` and its average only decays (``m_t <- beta_k m_t``),
    as in the reference.

    Short budgets: the average is a second momentum in front of the model's optimizer. With
    Adam at 1e-3 on the 2-epoch MultiFashion recipe (156 steps) the update's cosine with the
    sum of this step's gradients is 0.5-0.7 (0.99 with ``beta=0``), the training loss after
    80 steps 1.7 against 1.2, and the test accuracy about 20 points below ``ew``; ``beta=0``
    keeps no average and trains like ``ew``, and ``ew`` with the same average falls as far
    (README, "Every method on MultiFashion"). The defaults stay the reference's.

    The averages are ``[T, P]`` float32 state (created on the first step; see
    :func:`.balance_util.task_buffer`). Like the reference (which refuses ``rep_grad``), it
    works on the gradients of the shared parameters only. Cost per step, beyond the T backward
    passes of every gradient method: O(T P) time and T P floats of state (no Gram matrix).

    Example:
        ``python -m mtbench weighting=db_mtl weighting.beta=0.9 weighting.beta_sigma=0.5``
    """

    def __init__(self, beta: float = 0.9, beta_sigma: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_range("beta", beta, 0.0, 1.0, high_open=True)
        check_range("beta_sigma", beta_sigma, 0.0)
        self.beta, self.beta_sigma = float(beta), float(beta_sigma)

    def build_state(self, num_tasks: int) -> None:
        self.steps = state(self, "steps", dtype="int64")

    def build_gradient_state(self, gradient_size: int) -> None:
        task_buffer(self, "gradient_average", (self.num_tasks, int(gradient_size)))

    def aggregate(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        average = task_buffer(self, "gradient_average", grads)
        log_grads = scale_rows(grads, log_loss_scale(losses, EPSILON))
        step = tf.cast(tf.convert_to_tensor(self.steps) + 1, tf.float64)
        beta = tf.cast(self.beta / tf.pow(step, self.beta_sigma), tf.float32)
        updated = log_grads + beta * (tf.convert_to_tensor(average) - log_grads)
        norms = tf.norm(tf.cast(updated, tf.float64), axis=1)
        largest = tf.reduce_max(norms)
        alpha = tf.where(norms > 0.0, largest / (norms + EPSILON), tf.zeros_like(norms))
        finite = all_finite(grads, losses)
        average.assign(tf.where(finite, updated, average))
        self.steps.assign_add(tf.cast(finite, tf.int64))
        return combine(updated, alpha), tf.cast(alpha, tf.float32)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, DBMTLConfig)}
