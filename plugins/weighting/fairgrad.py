"""The ``fairgrad`` weighting: alpha-fair resource allocation among the tasks."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from mtbench.weighting import GradientWeighting

from .common import check_range, combine, gramian, options_of
from .options import FairGradConfig

_F64 = tf.float64
MAX_NEWTON_STEPS = 100  # damped Newton steps at most (it usually converges in under 15)
LADDER = [0.5**k for k in range(40)]  # backtracking step sizes, all tried at once
# Caps the weights, in the units of the normalised Gram matrix, where the system has no solution
# (a vanishing non-negative combination of the gradients: its weights grow without bound).
MAX_SCALED_WEIGHT = 1e8


class FairGrad(GradientWeighting):
    """FairGrad: Ban and Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024
    (Algorithm 1; LibMTL's ``FairGrad.py`` and the authors' ``methods/weight_methods.py``).

    Each task's utility is its directional derivative ``u_t = <g_t, d>`` along the update
    ``d = sum_t w_t g_t``; the update maximises the alpha-fair utility of the tasks, whose
    optimality condition is the non-linear system ``G w = w^(-1/alpha)`` (element-wise; ``G``
    the Gram matrix, ``w > 0``). It is the stationarity condition of the strictly convex
    ``f(w) = w'Gw / 2 - sum_t h(w_t)`` with ``h' = w^(-1/alpha)`` (``h = log`` for alpha = 1, where
    FairGrad is Nash-MTL's bargaining solution), which is minimised here in the graph, in float64,
    by damped Newton steps on ``G / |G|_F`` (the solution for ``G`` is that for ``G / s``
    times ``s^(-alpha / (1 + alpha))``). The references solve the system with SciPy's
    ``least_squares`` from ``w = 1/T`` with ``w >= 0``; where it has a solution the two agree.

    Where it has none (some non-negative combination of the gradients vanishes: a zero
    gradient, or 0 in their convex hull, a Pareto-stationary point), weights grow without bound
    along that combination, which leaves the update unchanged; here they stop at ``1e8`` in the
    normalised units (the references stop where ``least_squares`` does). alpha = 0 gives equal
    weights ``1/T``, as torchjd does (the references divide by 0).

    As in LibMTL, the update is not multiplied by the number of tasks and not clipped; the
    authors' code multiplies it by T "to match the sum loss" and clips the shared parameters'
    gradient to norm 1.

    Example:
        ``python -m mtbench weighting=fairgrad weighting.alpha=2.0``
    """

    def __init__(self, alpha: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_range("alpha", alpha, 0.0)
        self.alpha = float(alpha)

    def aggregate(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        weights = fairgrad_weights(gramian(grads), self.alpha)
        return combine(grads, weights), tf.cast(weights, tf.float32)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, FairGradConfig)}


def fairgrad_weights(gram: tf.Tensor, alpha: float) -> tf.Tensor:
    """The positive solution ``w`` of ``G w = w^(-1/alpha)`` (float64 ``[T]``); zeros when
    every gradient is zero, ``1/T`` for alpha = 0."""
    num_tasks = gram.shape[0]
    gram = tf.cast(gram, _F64)
    if alpha == 0.0:  # utilitarian: linear scalarisation with equal weights
        return tf.fill([num_tasks], tf.constant(1.0 / num_tasks, _F64))
    power = 1.0 / alpha
    norm = tf.norm(gram)
    ok = norm > 0.0
    k = gram / tf.where(ok, norm, 1.0)
    # exact when the gradients are orthogonal: K_tt w_t = w_t^(-1/alpha)
    w = tf.pow(tf.maximum(tf.linalg.diag_part(k), 1e-12), -alpha / (1.0 + alpha))
    steps = tf.constant(LADDER, _F64)

    def utility(v: tf.Tensor) -> tf.Tensor:  # h, with h'(v) = v^(-1/alpha)
        if alpha == 1.0:
            return tf.math.log(v)
        return tf.pow(v, 1.0 - power) / (1.0 - power)

    def objective(v: tf.Tensor) -> tf.Tensor:  # v: [..., T]
        quadratic = 0.5 * tf.reduce_sum(v * tf.linalg.matvec(k, v), -1)
        return quadratic - tf.reduce_sum(utility(v), -1)

    def newton(i, w, done):
        target = tf.pow(w, -power)
        residual = tf.linalg.matvec(k, w) - target
        hessian = k + tf.linalg.diag(power * target / w)
        direction = -tf.linalg.solve(hessian, residual[:, None])[:, 0]
        # keep w > 0: at most 99% of the way to the boundary, then the best of the ladder
        limits = tf.where(direction < 0.0, -0.99 * w / direction, tf.ones_like(w))
        largest = tf.minimum(tf.constant(1.0, _F64), tf.reduce_min(limits))
        candidates = w[None, :] + (largest * steps)[:, None] * direction[None, :]
        candidates = tf.clip_by_value(candidates, 1e-300, MAX_SCALED_WEIGHT)
        values = objective(candidates)
        best = tf.argmin(values)
        better = values[best] < objective(w)
        new = tf.where(better, candidates[best], w)
        converged = tf.logical_or(
            tf.logical_not(better), tf.norm(residual) < 1e-12 * tf.norm(target)
        )
        return i + 1, new, converged

    def running(i, w, done):
        return tf.logical_and(i < MAX_NEWTON_STEPS, tf.logical_not(done))

    _, w, _ = tf.while_loop(running, newton, (tf.constant(0), w, tf.constant(False)))
    w = w * tf.pow(tf.where(ok, norm, 1.0), -alpha / (1.0 + alpha))
    return tf.where(ok, w, tf.zeros_like(w))
