"""Small exact solvers on ``[T, T]`` Gram matrices, in TensorFlow ops (they run inside the compiled
training step; no ``py_function``, no external solver).

The problems have one variable per task, so they are tiny; they are solved in float64 with a
primal active-set method, which ends at the exact optimum after a few linear solves (at most
``5 T + 10``), instead of an approximate first-order solver.
"""

from __future__ import annotations

import tensorflow as tf

_F64 = tf.float64


def nonnegative_qp(q: tf.Tensor, c: tf.Tensor, *, on_simplex: bool) -> tf.Tensor:
    """``argmin_x 0.5 x'qx + c'x`` subject to ``x >= 0`` (and ``sum(x) = 1`` if ``on_simplex``).

    Batched over a leading axis: ``q`` is ``[B, T, T]`` (positive semi-definite), ``c`` is
    ``[B, T]``; returns ``[B, T]`` float64. A ridge of ``1e-12 * trace(q) / T`` keeps each
    sub-problem's linear system regular when gradients are linearly dependent.

    The primal active-set method (Nocedal and Wright, *Numerical Optimization*, Alg. 16.3): keep
    a feasible ``x`` and a free set; minimise on the free set; if that leaves the feasible region,
    step to its boundary and fix the blocking variable at 0, otherwise free the variable with the
    most negative multiplier, until none is negative.
    """
    q, c = tf.cast(q, _F64), tf.cast(c, _F64)
    t = tf.shape(q)[-1]
    eye = tf.eye(t, dtype=_F64)
    diag = tf.linalg.diag_part(q)
    scale = tf.maximum(tf.reduce_mean(tf.abs(diag), -1) + tf.reduce_max(tf.abs(c), -1), 1e-300)
    q = q + (1e-12 * tf.reduce_mean(tf.abs(diag), -1))[:, None, None] * eye
    tolerance = 1e-10 * scale  # [B]

    if on_simplex:  # start at the best vertex
        x = tf.one_hot(tf.argmin(0.5 * diag + c, axis=-1), t, dtype=_F64)
    else:
        x = tf.zeros_like(c)
    free = x > 0

    def minimise_on(free: tf.Tensor) -> tf.Tensor:
        m = tf.cast(free, _F64)
        system = q * m[:, :, None] * m[:, None, :] + tf.linalg.diag(1.0 - m)
        rhs = -c * m
        if on_simplex:  # bordered by the constraint sum(x_free) = 1
            top = tf.concat([system, m[:, :, None]], axis=2)
            bottom = tf.concat([m[:, None, :], tf.zeros_like(m[:, :1, None])], axis=2)
            system = tf.concat([top, bottom], axis=1)
            rhs = tf.concat([rhs, tf.ones_like(rhs[:, :1])], axis=1)
        solution = tf.linalg.solve(system, rhs[:, :, None])[:, :t, 0]
        return solution * m

    def step(x, free, done):
        s = minimise_on(free)
        blocking = tf.logical_and(free, s < 0.0)
        feasible = tf.logical_not(tf.reduce_any(blocking, axis=-1))
        # infeasible: move towards s until the first free variable reaches 0; fix it there
        ones = tf.ones_like(x)
        ratio = tf.where(blocking, x / tf.where(blocking, x - s, ones), ones)
        first = tf.one_hot(tf.argmin(ratio, axis=-1), t, on_value=True, off_value=False)
        theta = tf.clip_by_value(tf.reduce_min(ratio, axis=-1, keepdims=True), 0.0, 1.0)
        x_blocked = tf.where(first, tf.zeros_like(x), x + theta * (s - x))
        free_blocked = tf.logical_and(free, tf.logical_not(first))
        # feasible: take s; free the fixed variable with the most negative multiplier, if any
        gradient = tf.linalg.matvec(q, s) + c
        m = tf.cast(free, _F64)
        mu = tf.reduce_sum(gradient * m, -1, keepdims=True) / tf.maximum(
            tf.reduce_sum(m, -1, keepdims=True), 1.0
        )
        multiplier = gradient - mu if on_simplex else gradient
        infinite = tf.fill(tf.shape(x), tf.constant(float("inf"), _F64))
        multiplier = tf.where(free, infinite, multiplier)
        entering = tf.argmin(multiplier, axis=-1)
        optimal = tf.reduce_min(multiplier, axis=-1) >= -tolerance
        free_more = tf.logical_or(free, tf.one_hot(entering, t, on_value=True, off_value=False))
        free_feasible = tf.where(optimal[:, None], free, free_more)

        keep = done[:, None]
        x_new = tf.where(keep, x, tf.where(feasible[:, None], s, x_blocked))
        free_new = tf.where(keep, free, tf.where(feasible[:, None], free_feasible, free_blocked))
        done_new = tf.logical_or(done, tf.logical_and(feasible, optimal))
        return x_new, free_new, done_new

    def body(i, x, free, done):
        return (i + 1, *step(x, free, done))

    def running(i, x, free, done):
        return tf.logical_and(i < 5 * t + 10, tf.logical_not(tf.reduce_all(done)))

    done = tf.zeros_like(c[:, 0], dtype=tf.bool)
    _, x, _, _ = tf.while_loop(running, body, (tf.constant(0), x, free, done))
    x = tf.maximum(x, 0.0)
    if on_simplex:
        x = x / tf.reduce_sum(x, axis=-1, keepdims=True)
    return x


def min_norm_weights(gram: tf.Tensor) -> tf.Tensor:
    """The weights ``a`` on the simplex minimising ``|sum_t a_t g_t|^2 = a'Ga`` (float32 ``[T]``):
    the min-norm point of the convex hull of the gradients (Sener and Koltun 2018). A zero Gram
    matrix gives equal weights.
    """
    gram = tf.cast(gram, _F64)
    scale = tf.reduce_mean(tf.linalg.diag_part(gram))
    t = tf.shape(gram)[0]
    uniform = tf.fill([t], 1.0 / tf.cast(t, _F64))
    safe = tf.where(scale > 0.0, gram / tf.where(scale > 0.0, scale, 1.0), tf.eye(t, dtype=_F64))
    weights = nonnegative_qp(safe[None], tf.zeros([1, t], _F64), on_simplex=True)[0]
    return tf.cast(tf.where(scale > 0.0, weights, uniform), tf.float32)
