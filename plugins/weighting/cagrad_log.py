"""The ``cagrad_log`` weighting: CAGrad on the gradients of the log-losses."""

from __future__ import annotations

import tensorflow as tf

from .balance_util import log_loss_scale, scale_rows
from .cagrad import CAGrad

EPSILON = 0.0  # the reference takes log(L) itself here (LOG_MGDA and LOG_IMTLG add 1e-8)


class CAGradLog(CAGrad):
    """CAGrad on log-losses: ``log_cagrad`` of the code base of Liu, Feng, Stone and Liu, "FAMO:
    Fast Adaptive Multitask Optimization", NeurIPS 2023 (``methods/weight_methods.py``,
    ``LOG_CAGrad``), built on :class:`~.cagrad.CAGrad` (Liu et al., NeurIPS 2021).

    CAGrad's update computed from ``h_t = grad log L_t = g_t / L_t`` (no epsilon, as in the
    reference): ``d = h_0 + sqrt(phi) / |h_w| h_w`` with ``h_0`` the mean of the ``h_t``, then
    rescaled. On the task gradients this is ``sum_t w_t g_t`` with ``w_t`` CAGrad's
    coefficient of ``h_t`` divided by ``L_t``; the logged weights are these ``w_t``.

    Differences from the reference code: task-specific heads are trained on their own loss
    ``L_t``, as for every mtbench method (the reference back-propagates ``log L_t`` into head
    t, dividing its gradient by ``L_t``); the update is not multiplied by T unless
    ``sum_scale`` is set, and it is not clipped (the reference clips the shared parameters'
    gradient to norm ``max_norm = 1`` after ``overwrite_grad``; mtbench's ``cagrad`` does not
    clip either); the dual is solved as :class:`~.cagrad.CAGrad` solves it (exactly, in float64;
    the reference calls SciPy's SLSQP with ``1e-8`` added under the square root, which on badly
    scaled gradients can stop where it starts: with one task's log-loss gradient 1000x the
    other's it returns ``w = (1/2, 1/2)``, reported as a success, far from the optimum
    ``w = (0, 1)``). A task whose loss is exactly 0 contributes no log-loss gradient (the
    reference gives NaN).

    Cost: that of ``cagrad`` (T backward passes, an O(T^2 P) Gram matrix, up to 30 T x T
    quadratic programs) plus one O(T P) scaling of the gradients.

    Example:
        ``python -m mtbench weighting=cagrad_log weighting.c=0.4``
    """

    def aggregate(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        scale = log_loss_scale(losses, EPSILON)
        update, weights = super().aggregate(scale_rows(grads, scale), losses)
        return update, tf.cast(tf.cast(weights, tf.float64) * scale, tf.float32)
