"""The ``nashmtl`` weighting: multi-task learning as a Nash bargaining game."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from mtbench.weighting import GradientWeighting

from .common import check_range, combine, gramian, options_of, state
from .options import NashMTLConfig

_F64 = tf.float64
LADDER = [0.5**k for k in range(30)]  # backtracking step sizes, all tried at once
MAX_SCALED_WEIGHT = 1e8  # caps the weights when no bargaining solution exists


class NashMTL(GradientWeighting):
    """Nash-MTL: Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik and Fetaya, "Multi-Task
    Learning as a Bargaining Game", ICML 2022.

    The update ``sum_t a_t g_t`` uses the Nash bargaining solution ``a > 0`` of
    ``G a = 1 / a`` (element-wise; ``G`` the Gram matrix), i.e. every task's directional
    derivative ``<g_t, d>`` equals ``1 / a_t``. That equation is the stationarity condition of
    the strictly convex ``f(a) = a'Ga / 2 - sum_t log a_t``, which is minimised here by damped
    Newton steps in the graph, on ``G / |G|_F`` as in the reference (which runs a sequence of
    convex programs through cvxpy instead). The update's norm is then clipped to ``max_norm``.
    The logged weights are ``a`` before the clipping (torchjd logs them after it; the updates
    agree).

    With ``update_weights_every = k > 1`` the per-task gradients are computed only every k-th
    step; the others apply the last weights, scaled by that step's clipping factor (the trainer
    combines them in one backward pass and does not show the method the combined gradient).

    Example:
        ``python -m mtbench weighting=nashmtl weighting.update_weights_every=25``
    """

    def __init__(
        self,
        update_weights_every: int = 1,
        optim_niter: int = 20,
        max_norm: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_range("update_weights_every", update_weights_every, 1)
        check_range("optim_niter", optim_niter, 1)
        check_range("max_norm", max_norm, 0.0)
        self.update_weights_every = int(update_weights_every)
        self.optim_niter = int(optim_niter)
        self.max_norm = float(max_norm)
        # an instance attribute: the trainer reads it from the instance
        self.skips_gradients = self.update_weights_every > 1

    def build_state(self, num_tasks: int) -> None:
        self.alpha = state(self, "alpha", (num_tasks,), "ones")
        self.clip_factor = state(self, "clip_factor", (), "ones")
        self.step = state(self, "step", dtype="int64")

    def gradients_needed(self) -> tf.Tensor:
        step = tf.convert_to_tensor(self.step)
        needed = tf.equal(tf.math.floormod(step, self.update_weights_every), 0)
        self.step.assign_add(1)
        return needed

    def current_weights(self) -> tf.Tensor:
        return tf.convert_to_tensor(self.alpha) * tf.convert_to_tensor(self.clip_factor)

    def aggregate(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        alpha = nash_weights(gramian(grads), self.optim_niter)
        update = combine(grads, alpha)
        factor = tf.constant(1.0)
        if self.max_norm > 0.0:
            norm = tf.norm(update)
            factor = tf.minimum(1.0, self.max_norm / tf.maximum(norm, 1e-12))
        self.alpha.assign(alpha)
        self.clip_factor.assign(factor)
        return update * factor, alpha

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, NashMTLConfig)}


def nash_weights(gram: tf.Tensor, iterations: int) -> tf.Tensor:
    """The positive solution ``a`` of ``G a = 1 / a`` (float32 ``[T]``)."""
    gram = tf.cast(gram, _F64)
    norm = tf.norm(gram)
    ok = norm > 0.0
    k = gram / tf.where(ok, norm, 1.0)
    diag = tf.linalg.diag_part(k)
    alpha = 1.0 / tf.sqrt(tf.maximum(diag, 1e-12))  # exact when the gradients are orthogonal
    steps = tf.constant(LADDER, _F64)

    def objective(a: tf.Tensor) -> tf.Tensor:  # a: [..., T]
        quadratic = 0.5 * tf.reduce_sum(a * tf.linalg.matvec(k, a), -1)
        return quadratic - tf.reduce_sum(tf.math.log(a), -1)

    def newton(i, a, done):
        residual = tf.linalg.matvec(k, a) - 1.0 / a
        hessian = k + tf.linalg.diag(1.0 / tf.square(a))
        direction = -tf.linalg.solve(hessian, residual[:, None])[:, 0]
        # keep a > 0: at most 99% of the way to the boundary, then the best of the ladder
        limits = tf.where(direction < 0.0, -0.99 * a / direction, tf.ones_like(a))
        largest = tf.minimum(tf.constant(1.0, _F64), tf.reduce_min(limits))
        candidates = a[None, :] + (largest * steps)[:, None] * direction[None, :]
        candidates = tf.clip_by_value(candidates, 1e-300, MAX_SCALED_WEIGHT)
        values = objective(candidates)
        best = tf.argmin(values)
        better = values[best] < objective(a)
        new = tf.where(better, candidates[best], a)
        converged = tf.logical_or(
            tf.logical_not(better), tf.norm(residual) < 1e-9 * tf.norm(1.0 / a)
        )
        return i + 1, new, converged

    def running(i, a, done):
        return tf.logical_and(i < iterations, tf.logical_not(done))

    _, alpha, _ = tf.while_loop(running, newton, (tf.constant(0), alpha, tf.constant(False)))
    alpha = alpha / tf.sqrt(tf.where(ok, norm, 1.0))
    return tf.cast(tf.where(ok, alpha, tf.zeros_like(alpha)), tf.float32)
