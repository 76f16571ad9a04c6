"""Projection onto the probability simplex, shared by the sampling methods (MoDo, SDMGrad)."""

from __future__ import annotations

import tensorflow as tf


def project_to_simplex(v: tf.Tensor) -> tf.Tensor:
    """The Euclidean projection of ``v`` ``[T]`` onto ``{w >= 0, sum w = 1}`` (Duchi et al. 2008,
    the sort-based algorithm the reference implementations use), in ``v``'s dtype."""
    u = tf.sort(v, direction="DESCENDING")
    cumulative = tf.cumsum(u) - 1.0
    index = tf.range(1, tf.size(v) + 1, dtype=v.dtype)
    support = tf.cast(u - cumulative / index > 0, tf.int32)
    rho = tf.reduce_sum(support)  # the number of positive entries of the projection (>= 1)
    theta = cumulative[rho - 1] / tf.cast(rho, v.dtype)
    return tf.maximum(v - theta, 0.0)
