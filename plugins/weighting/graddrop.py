"""The ``graddrop`` weighting: gradient sign dropout."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from mtbench.weighting import GradientWeighting

from .common import (
    SeededStream,
    check_range,
    check_seed,
    choice,
    options_of,
    safe_divide,
)
from .options import GradDropConfig, GradientOf

EPSILON = 1e-7  # in the sign purity's denominator, as in common implementations


class GradDrop(GradientWeighting):
    """GradDrop: Chen, Ngiam, Huang, Luong, Kretzschmar, Chai and Anguelov, "Just Pick a Sign:
    Optimizing Deep Multitask Models with Gradient Sign Dropout", NeurIPS 2020 (Algorithm 1).

    Per gradient element, the positive sign purity is
    ``P = (1 + sum_t g_t / sum_t |g_t|) / 2``. One uniform draw ``U`` per element keeps the
    positive task gradients where ``P > U`` and the negative ones where ``P < U``:
    ``M_t = [P > U][g_t > 0] + [P < U][g_t < 0]``. The update is
    ``sum_t (l + (1 - l) M_t) g_t``. The logged weights are the fraction of each task's gradient
    mass (L1) that passes.

    The purity is computed per element of the flattened gradient the trainer passes; the paper,
    acting on a layer's activations, sums over the batch and multiplies by the activations'
    signs first, which the weighting interface does not expose.

    Example:
        ``python -m mtbench weighting=graddrop weighting.leak=0.2``
    """

    def __init__(
        self,
        leak: float = 0.0,
        gradient_of: GradientOf | str = "features",
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_range("leak", leak, 0.0, 1.0)
        check_seed(seed)
        self.leak, self.seed = float(leak), seed
        # an instance attribute: the trainer reads it from the instance
        self.gradient_of = choice("gradient_of", gradient_of, GradientOf)

    def build_state(self, num_tasks: int) -> None:
        self.random = SeededStream(self, self.seed)

    def aggregate(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self.drop(grads, self.random.uniform(tf.shape(grads)[1:]))

    def drop(self, grads: tf.Tensor, draws: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The update and weights for given uniform ``draws`` ``[P]``."""
        magnitude = tf.abs(grads)
        purity = 0.5 * (1.0 + tf.reduce_sum(grads, 0) / (tf.reduce_sum(magnitude, 0) + EPSILON))
        keep_positive = (purity > draws)[None, :]
        keep_negative = (purity < draws)[None, :]
        mask = tf.logical_or(
            tf.logical_and(keep_positive, grads > 0.0), tf.logical_and(keep_negative, grads < 0.0)
        )
        factor = self.leak + (1.0 - self.leak) * tf.cast(mask, grads.dtype)
        kept = factor * grads
        weights = safe_divide(tf.reduce_sum(tf.abs(kept), axis=1), tf.reduce_sum(magnitude, axis=1))
        return tf.reduce_sum(kept, axis=0), weights

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, GradDropConfig)}
