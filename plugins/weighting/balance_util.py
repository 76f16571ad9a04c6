"""Helpers of the balancing methods ``db_mtl``, ``excess_mtl`` and the log-loss variants
``mgda_log``, ``cagrad_log`` and ``imtl_log``: per-parameter state, log-loss gradients and a
finiteness guard for state updates.

Nothing here is a plugin; the modules next to it are the methods.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from .common import state


def task_buffer(
    layer: keras.layers.Layer, name: str, like: tf.Tensor | tuple[int, int]
) -> keras.Variable:
    """A float32 state variable shaped like the per-task gradients ``like`` ``[T, P]`` (a
    tensor, or the shape itself), zeros at first, tracked (and so checkpointed) by ``layer``.

    The trainer creates it through ``build_gradient_state`` (which knows ``P``) right after
    ``setup``; a method used outside the trainer creates it the first time it sees gradients
    (outside the graph, through ``tf.init_scope``). Later calls return the same variable.
    """
    shape = tuple(like) if isinstance(like, tuple) else tuple(like.shape)
    if any(size is None for size in shape):
        raise ValueError(f"{layer.name}: the per-task gradients need a static shape, got {shape}")
    variable = getattr(layer, f"_state_{name}", None)
    if variable is None:
        with tf.init_scope():
            variable = state(layer, name, shape)
    elif tuple(variable.shape) != shape:
        raise ValueError(
            f"{layer.name}: its {name} holds gradients of shape {tuple(variable.shape)}, "
            f"these have {shape}; use one weighting instance per model"
        )
    return variable


def log_loss_scale(losses: tf.Tensor, epsilon: float) -> tf.Tensor:
    """``1 / (L_t + epsilon)``, float64 ``[T]``: ``grad log(L_t + epsilon)`` is ``grad L_t``
    times this. Where ``L_t + epsilon`` is not positive the logarithm is undefined and the
    factor is 0 (that task contributes no log-loss gradient; the reference codes give NaN)."""
    shifted = tf.cast(losses, tf.float64) + epsilon
    ok = shifted > 0.0
    return tf.where(ok, 1.0 / tf.where(ok, shifted, 1.0), tf.zeros_like(shifted))


def scale_rows(grads: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    """Row ``t`` of ``grads`` ``[T, P]`` times ``scale[t]``, in the dtype of ``grads``."""
    return grads * tf.cast(scale, grads.dtype)[:, None]


def all_finite(*tensors: tf.Tensor) -> tf.Tensor:
    """A boolean scalar: every element of every tensor is finite.

    State is updated only on finite steps, so that a step the trainer skips
    (``trainer.skip_nonfinite_steps``) leaves no NaN behind; the step's own update still
    carries the non-finite values, so the trainer sees them.
    """
    return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(t)) for t in tensors]))
