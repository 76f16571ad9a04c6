"""The ``mgda_log`` weighting: MGDA on the gradients of the log-losses."""

from __future__ import annotations

import tensorflow as tf

from .balance_util import log_loss_scale, scale_rows
from .mgda import MGDA

EPSILON = 1e-8  # the reference's log(L + 1e-8)


class MGDALog(MGDA):
    """MGDA on log-losses: ``log_mgda`` of the code base of Liu, Feng, Stone and Liu, "FAMO:
    Fast Adaptive Multitask Optimization", NeurIPS 2023 (``methods/weight_methods.py``,
    ``LOG_MGDA``), built on :class:`~.mgda.MGDA` (Sener and Koltun, NeurIPS 2018).

    With ``h_t = grad log(L_t + 1e-8) = g_t / (L_t + 1e-8)``, ``a`` is MGDA's min-norm weights
    of the ``h_t`` (on the simplex, after the optional normalisation), and the update is
    ``sum_t a_t h_t / c`` with ``c = sum_t a_t / (L_t + 1e-8)``: the gradient of the
    reference's objective ``sum_t (a_t / c) log(L_t + 1e-8)``. On the task gradients this is
    ``sum_t w_t g_t`` with ``w_t = a_t / (c (L_t + 1e-8))``, which sum to 1; the logged weights
    are these ``w_t``.

    Differences from the reference code: task-specific heads are trained on their own loss
    ``L_t``, as for every mtbench method (the reference back-propagates the weighted
    log-losses into the heads too, scaling head t's gradient by ``w_t``); the min-norm problem
    is solved exactly (the reference's Frank-Wolfe-type ``MinNormSolver`` stops at a tolerance
    and clamps two-task solutions at 0.001 and 0.999); ``params="last"`` (the last shared layer)
    is not offered. The reference's gradient-norm clipping (``max_norm``) runs before the
    backward pass, on zeroed gradients, so it changes nothing and is not reproduced.

    Cost: that of ``mgda`` (T backward passes, an O(T^2 P) Gram matrix, a T x T quadratic
    program) plus one O(T P) scaling of the gradients.

    Example:
        ``python -m mtbench weighting=mgda_log weighting.normalization=loss+``
    """

    def aggregate(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        scale = log_loss_scale(losses, EPSILON)
        update, weights = super().aggregate(scale_rows(grads, scale), losses)
        weights = tf.cast(weights, tf.float64) * scale
        total = tf.reduce_sum(weights)  # c > 0: a is on the simplex
        total = tf.where(total > 0.0, total, 1.0)
        return update / tf.cast(total, update.dtype), tf.cast(weights / total, tf.float32)
