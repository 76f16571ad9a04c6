"""The ``imtl_log`` weighting: IMTL-G on the gradients of the log-losses."""

from __future__ import annotations

import tensorflow as tf

from .balance_util import log_loss_scale, scale_rows
from .imtl import IMTLG

EPSILON = 1e-8  # the reference's EPS: log(L + 1e-8)


class IMTLGLog(IMTLG):
    """IMTL-G on log-losses: ``log_imtl`` of the code base of Liu, Feng, Stone and Liu, "FAMO:
    Fast Adaptive Multitask Optimization", NeurIPS 2023 (``methods/weight_methods.py``,
    ``LOG_IMTLG``), built on :class:`~.imtl.IMTLG` (Liu et al., ICLR 2021).

    With ``h_t = grad log(L_t + 1e-8) = g_t / (L_t + 1e-8)``, ``a`` is IMTL-G's weights of the
    ``h_t`` (``sum_t a_t = 1``; equal projections of ``sum_t a_t h_t`` on every unit ``h_t``)
    and the update is ``sum_t a_t h_t``, the gradient of the reference's objective
    ``sum_t a_t log(L_t + 1e-8)``. On the task gradients this is ``sum_t w_t g_t`` with
    ``w_t = a_t / (L_t + 1e-8)``; the logged weights are these ``w_t``.

    Differences from the reference code: task-specific heads are trained on their own loss
    ``L_t``, as for every mtbench method (the reference back-propagates the weighted
    log-losses into the heads too, scaling head t's gradient by ``w_t``); ``a`` comes from the
    pseudo-inverse form of :func:`~.imtl.imtl_weights` in float64 (the reference inverts
    ``D U'`` in float32, adding ``1e-8 I`` when it is singular, and divides by zero for a zero
    gradient); ``upper_bound`` is mtbench's addition. The reference's gradient-norm clipping
    runs before the backward pass, on zeroed gradients, so it changes nothing and is not
    reproduced.

    Cost: that of ``imtl`` (T backward passes, an O(T^2 P) Gram matrix, a T x T
    pseudo-inverse) plus one O(T P) scaling of the gradients.

    Example:
        ``python -m mtbench weighting=imtl_log``
    """

    def aggregate(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        scale = log_loss_scale(losses, EPSILON)
        update, weights = super().aggregate(scale_rows(grads, scale), losses)
        return update, tf.cast(tf.cast(weights, tf.float64) * scale, tf.float32)
