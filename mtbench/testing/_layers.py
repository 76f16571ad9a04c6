"""Checks shared by the backbone and head suites (Keras layers from a plugin config)."""

from __future__ import annotations

from typing import Any

import numpy as np


def numpy(x: Any) -> np.ndarray:
    """A tensor of any floating dtype (bfloat16 too) as a float64 array."""
    import tensorflow as tf

    return np.asarray(tf.cast(x, tf.float64))


def as_inputs(batch: Any, compute_dtype: str) -> Any:
    """``batch`` as tensors, floating arrays cast to ``compute_dtype`` as the model casts them
    when no preprocessing layer is declared."""
    import tensorflow as tf

    def convert(x: Any) -> Any:
        tensor = tf.constant(x)
        return tf.cast(tensor, compute_dtype) if tensor.dtype.is_floating else tensor

    return tf.nest.map_structure(convert, batch)


def trainable_gradients(layer: Any, inputs: Any, rng: np.random.Generator) -> list[Any]:
    """Gradients of a random linear function of the layer's outputs (in training mode) with
    respect to its trainable variables; checks that every one is reached and finite."""
    import tensorflow as tf

    variables = layer.trainable_variables
    assert variables, f"{type(layer).__name__} has no trainable variable"
    with tf.GradientTape() as tape:
        outputs = tf.nest.flatten(layer(inputs, training=True))
        loss = tf.add_n(
            [
                tf.reduce_sum(
                    tf.cast(y, tf.float32) * tf.constant(rng.normal(size=y.shape), tf.float32)
                )
                for y in outputs
            ]
        )
    grads = tape.gradient(loss, variables)
    unreached = [v.path for v, g in zip(variables, grads, strict=True) if g is None]
    assert not unreached, (
        f"no gradient reaches {unreached}: a trainable variable that the outputs do not depend "
        "on is never trained (make it non-trainable, or use it)"
    )
    for variable, grad in zip(variables, grads, strict=True):
        assert np.isfinite(numpy(grad)).all(), variable.path
    assert any(np.any(np.asarray(g) != 0) for g in grads), "every gradient is zero"
    return grads


def float_variables_are_float32(layer: Any) -> None:
    floats = [v for v in layer.variables if "float" in str(v.dtype)]
    wrong = [(v.path, str(v.dtype)) for v in floats if str(v.dtype) != "float32"]
    assert not wrong, (
        f"variables not in float32 (Keras keeps master weights and statistics in float32 under "
        f"mixed precision; create them with add_weight): {wrong}"
    )


def reloaded(layer: Any) -> Any:
    """``layer`` through Keras serialization (as a saved model stores it), weights copied."""
    import keras

    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is type(layer), f"deserialized as {type(clone).__name__}"
    return clone


def outputs_equal(actual: Any, expected: Any, what: str) -> None:
    import tensorflow as tf

    flat_a, flat_e = tf.nest.flatten(actual), tf.nest.flatten(expected)
    assert len(flat_a) == len(flat_e), f"{what}: {len(flat_a)} outputs, expected {len(flat_e)}"
    for a, e in zip(flat_a, flat_e, strict=True):
        assert a.dtype == e.dtype, f"{what}: dtype {a.dtype.name}, expected {e.dtype.name}"
        a64, e64 = numpy(a), numpy(e)
        scale = max(float(np.abs(e64).max(initial=0.0)), 1e-30)
        error = float(np.abs(a64 - e64).max(initial=0.0))
        assert error <= 1e-6 * scale, f"{what}: outputs differ by {error:.3g} (scale {scale:.3g})"
