"""Helpers shared by the weighting plugins: option checks, state variables, seeded randomness,
Gram-matrix algebra and the small in-graph Adam that methods with learnable weights use.

Nothing here is a plugin; the modules next to it are the methods.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

import keras
import tensorflow as tf


# ------------------------------------------------------------------------------------ options
def check_choice(key: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise ``ValueError`` naming ``weighting.<key>`` unless ``value`` is one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"weighting.{key}={value!r}; choose one of {choices}")


def choice(key: str, value: Any, choices: type[StrEnum]) -> str:
    """The plain string of option ``weighting.<key>``, a choice typed by ``choices``: ``value``
    is one of its members (as Hydra composes it) or a member's value (as Python callers pass it).
    Raises ``ValueError`` naming the key and listing the choices otherwise."""
    try:
        return choices(value).value
    except ValueError:
        check_choice(key, value, [member.value for member in choices])
        raise


def check_range(
    key: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise ``ValueError`` naming ``weighting.<key>`` unless ``value`` lies in the interval."""
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "-inf" if low is None else f"{low:g}"
        right = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open or low is None else '['}{left}, {right}"
        interval += ")" if high_open or high is None else "]"
        raise ValueError(f"weighting.{key}={value!r}; it must lie in {interval}")


def check_seed(value: int | None) -> None:
    if value is not None and not 0 <= value < 2**31:
        raise ValueError(f"weighting.seed={value!r}; use an integer in [0, 2**31) or null")


def options_of(layer: Any, config: type) -> dict[str, Any]:
    """The values of ``config``'s fields held by ``layer`` (for ``get_config``)."""
    return {f.name: getattr(layer, f.name) for f in dataclasses.fields(config)}


# -------------------------------------------------------------------------------------- state
def state(
    layer: keras.layers.Layer,
    name: str,
    shape: tuple[int, ...] = (),
    initializer: Any = "zeros",
    dtype: str = "float32",
) -> keras.Variable:
    """A non-trainable variable the method updates itself, tracked (and so checkpointed) by
    ``layer``. Call it from ``build_state``.

    Every replica of a multi-replica strategy computes the same update from the same global
    losses, so each keeps its own copy, updated without synchronisation (which also works inside
    ``tf.cond``, where the trainer calls some methods), and a read outside the replicas (a
    checkpoint) takes the first replica's.
    """
    initializer = keras.initializers.get(initializer)
    with keras.name_scope(layer.name):
        variable = keras.Variable(
            initializer,
            shape=shape,
            dtype=dtype,
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
            synchronization="on_read",
            name=name,
        )
    setattr(layer, f"_state_{name}", variable)  # a Keras layer tracks the variables it holds
    return variable


class SeededStream:
    """Reproducible randomness: stateless ops keyed by ``(seed, draw counter)``.

    ``seed=None`` takes one from Python's ``random`` module, which ``keras.utils.set_random_seed``
    (called with the run's seed when the model is built) has seeded, so each run seed gives its
    own stream. The seed and the counter are layer weights, so a resumed run continues the
    stream where it stopped.
    """

    def __init__(self, layer: keras.layers.Layer, seed: int | None) -> None:
        value = random.randint(0, 2**31 - 1) if seed is None else int(seed)
        constant = keras.initializers.Constant(value)
        self.seed = state(layer, "seed", initializer=constant, dtype="int64")
        self.draws = state(layer, "draws", dtype="int64")

    def next_key(self) -> tf.Tensor:
        """A fresh ``[2]`` int64 key for ``tf.random.stateless_*`` (advances the counter)."""
        key = tf.stack([tf.convert_to_tensor(self.seed), tf.convert_to_tensor(self.draws)])
        self.draws.assign_add(1)
        return key

    def uniform(self, shape: Any) -> tf.Tensor:
        return tf.random.stateless_uniform(shape, seed=self.next_key(), dtype=tf.float32)

    def normal(self, shape: Any) -> tf.Tensor:
        return tf.random.stateless_normal(shape, seed=self.next_key(), dtype=tf.float32)


# -------------------------------------------------------------------------------- the algebra
def gramian(grads: tf.Tensor) -> tf.Tensor:
    """``G[i, j] = <g_i, g_j>`` of the rows of ``grads`` ``[T, P]``, float64 ``[T, T]``.

    float64 because methods read lengths of combinations from it: ``|sum_t a_t g_t|^2 = a'Ga``
    cancels down from the size of the squared gradient norms, so a float32 Gram matrix (error
    about ``1e-7 |g|^2``) cannot resolve a combination shorter than about ``3e-4 |g|``; float64
    resolves about ``1e-8 |g|``. The product of two float32 numbers is exact in float64, so only
    the sums round. Solve anything derived from it in float64 too.
    """
    grads = tf.cast(grads, tf.float64)
    return tf.matmul(grads, grads, transpose_b=True)


def combine(grads: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """``sum_t weights[t] * grads[t]``, ``[P]`` in the dtype of ``grads``, accumulated in
    float64 (with large weights on nearly cancelling gradients, as CAGrad can have, a float32
    sum would lose the small difference that is the update).
    """
    total = tf.linalg.matvec(
        tf.cast(grads, tf.float64), tf.cast(weights, tf.float64), transpose_a=True
    )
    return tf.cast(total, grads.dtype)


def safe_divide(x: tf.Tensor, y: tf.Tensor, eps: float = 1e-12) -> tf.Tensor:
    """``x / y`` where ``|y| > eps``, 0 elsewhere (a zero gradient has no direction)."""
    ok = tf.abs(y) > eps
    return tf.where(ok, x / tf.where(ok, y, tf.ones_like(y)), tf.zeros_like(x))


# ------------------------------------------------------------------------------------- adam
class Adam:
    """Adam (Kingma and Ba 2015) on one variable, in TensorFlow ops, with its moments as layer
    weights. ``weight_decay`` is PyTorch's coupled L2 term (added to the gradient), as the FAMO
    reference uses.
    """

    def __init__(
        self,
        layer: keras.layers.Layer,
        variable: keras.Variable,
        learning_rate: float,
        weight_decay: float = 0.0,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
    ) -> None:
        self.variable = variable
        self.learning_rate, self.weight_decay = learning_rate, weight_decay
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        name = variable.name.split("/")[-1].split(":")[0]
        self.m = state(layer, f"{name}_adam_m", tuple(variable.shape))
        self.v = state(layer, f"{name}_adam_v", tuple(variable.shape))
        self.steps = state(layer, f"{name}_adam_steps")

    def apply(self, gradient: tf.Tensor) -> None:
        gradient = gradient + self.weight_decay * tf.convert_to_tensor(self.variable)
        self.steps.assign_add(1.0)
        step = tf.convert_to_tensor(self.steps)
        self.m.assign(self.beta_1 * self.m + (1.0 - self.beta_1) * gradient)
        self.v.assign(self.beta_2 * self.v + (1.0 - self.beta_2) * tf.square(gradient))
        m_hat = self.m / (1.0 - tf.pow(self.beta_1, step))
        v_hat = self.v / (1.0 - tf.pow(self.beta_2, step))
        self.variable.assign_sub(self.learning_rate * m_hat / (tf.sqrt(v_hat) + self.epsilon))
