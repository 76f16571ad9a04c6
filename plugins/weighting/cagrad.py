"""The ``cagrad`` weighting: conflict-averse gradient descent."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from mtbench.weighting import GradientWeighting

from .common import (
    check_choice,
    check_range,
    combine,
    gramian,
    options_of,
)
from .options import CAGradConfig
from .solvers import nonnegative_qp

ROUNDS = 30  # alternating rounds of the inner problem (it usually settles in under ten)
# |g_w| below this share of the root-mean-square task-gradient norm is taken as zero: it has no
# direction to move along (the float64 Gram matrix the dual is solved on resolves about 1e-8).
NEGLIGIBLE = 1e-9


class CAGrad(GradientWeighting):
    """CAGrad: Liu, Liu, Jin, Stone and Liu, "Conflict-Averse Gradient Descent for Multi-task
    Learning", NeurIPS 2021 (Algorithm 1).

    With ``g_0`` the mean gradient and ``phi = c^2 |g_0|^2``, the update
    ``d = argmax_{|d - g_0| <= sqrt(phi)} min_i <g_i, d>`` is found through its dual:
    ``w = argmin_{w in simplex} <g_w, g_0> + sqrt(phi) |g_w|`` with ``g_w = sum_i w_i g_i``,
    then ``d = g_0 + sqrt(phi) / |g_w| g_w``, divided by ``1 + c^2`` (``rescale=1``). The logged
    weights are the coefficients of ``d`` on the task gradients (they sum to 1 when ``c = 0``).

    The dual is solved in the graph, in float64: ``sqrt(q) = min_{s > 0} q / (2s) + s / 2`` turns
    it into alternating exact quadratic programs on the simplex in ``w`` and closed-form updates
    of ``s`` (the reference code calls SciPy's SLSQP, with ``1e-8`` added under the square root).
    ``|g_w|`` is measured on the vector ``g_w`` itself, so ``|d - g_0| = sqrt(phi)`` holds however
    nearly the gradients cancel; where ``g_w`` vanishes (a zero task gradient, exactly opposed
    gradients) its direction is undefined and ``d = g_0``.

    Unlike the authors' code, and like LibMTL, the update is not multiplied by the number of
    tasks unless ``sum_scale`` is set. Where ``g_w`` vanishes mtbench, like the authors' code,
    returns the mean gradient; torchjd's ``CAGrad`` returns a zero update there (weights 0 when
    ``|g_w| < 1e-4``). torchjd does not rescale (``rescale=0`` here).

    Example:
        ``python -m mtbench weighting=cagrad weighting.c=0.5``
    """

    def __init__(
        self, c: float = 0.4, rescale: int = 1, sum_scale: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        check_range("c", c, 0.0)
        check_choice("rescale", rescale, (0, 1, 2))
        check_choice("sum_scale", sum_scale, (False, True))
        self.c, self.rescale, self.sum_scale = float(c), int(rescale), bool(sum_scale)

    def aggregate(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        coefficients = self.coefficients(grads)
        return combine(grads, coefficients), tf.cast(coefficients, tf.float32)

    def coefficients(self, grads: tf.Tensor) -> tf.Tensor:
        """The coefficients of the (rescaled) update on the task gradients, float64 ``[T]``."""
        num_tasks = grads.shape[0]
        gram = gramian(grads)
        scale = tf.reduce_mean(tf.linalg.diag_part(gram))  # mean squared gradient norm
        scale = tf.where(scale > 0.0, scale, 1.0)
        gram = gram / scale
        mean = tf.fill([num_tasks], tf.constant(1.0 / num_tasks, tf.float64))
        radius = self.c * tf.sqrt(tf.maximum(tf.reduce_sum(gram * mean[:, None] * mean), 0.0))
        w = dual_solution(gram, radius)
        # w'Gw cancels: take |g_w| from the vector (in the units of the normalised Gram matrix)
        norm = tf.norm(combine(tf.cast(grads, tf.float64), w)) / tf.sqrt(scale)
        found = norm > NEGLIGIBLE
        step = tf.where(found, radius / tf.where(found, norm, 1.0), tf.zeros_like(norm))
        coefficients = mean + step * w
        divisor = {0: 1.0, 1: 1.0 + self.c**2, 2: 1.0 + self.c}[self.rescale]
        if self.sum_scale:
            divisor /= num_tasks
        return coefficients / divisor

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, CAGradConfig)}


def dual_solution(gram: tf.Tensor, radius: tf.Tensor) -> tf.Tensor:
    """``argmin_{w in simplex} w'G m + radius sqrt(w'Gw)`` (``m``: the uniform weights), float64.

    Both terms are jointly convex in ``(w, s)`` after ``sqrt(q) = min_s q/(2s) + s/2``; exact
    minimisation over each block in turn decreases the objective monotonically.
    """
    num_tasks = gram.shape[0]
    linear = tf.reduce_mean(gram, axis=1)  # G m
    floor = tf.constant(1e-9, tf.float64)

    def round_(i, w, done):
        norm2 = tf.maximum(tf.reduce_sum(w * tf.linalg.matvec(gram, w)), 0.0)
        s = tf.maximum(tf.sqrt(norm2), floor)
        new = nonnegative_qp((radius / s * gram)[None], linear[None], on_simplex=True)[0]
        return i + 1, new, tf.reduce_max(tf.abs(new - w)) < 1e-10

    def running(i, w, done):
        return tf.logical_and(i < ROUNDS, tf.logical_not(done))

    start = tf.fill([num_tasks], tf.constant(1.0 / num_tasks, tf.float64))
    _, w, _ = tf.while_loop(running, round_, (tf.constant(0), start, tf.constant(False)))
    return w
