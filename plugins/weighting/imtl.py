"""The ``imtl`` weighting: IMTL-G, impartial multi-task learning's gradient balancing."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from mtbench.weighting import GradientWeighting

from .common import check_choice, combine, gramian, options_of
from .options import IMTLConfig


class IMTLG(GradientWeighting):
    """IMTL-G: Liu, Li, Kuang, Xue, Chen, Yang, Liao and Zhang, "Towards Impartial Multi-task
    Learning", ICLR 2021.

    Finds the update ``g = sum_t a_t g_t`` with ``sum_t a_t = 1`` whose projections on every unit
    task gradient are equal: ``<g, g_t / |g_t|>`` is the same for all t. The paper's closed form
    ``a_{2:T} = g_1 U' (D U')^-1`` (``D``, ``U``: differences of the gradients and of the unit
    gradients to task 1's) is equivalent to ``a = G^+ n / sum(G^+ n)`` with ``G`` the Gram matrix
    and ``n`` the gradient norms (Quinton and Rey 2024), which is symmetric in the tasks and is
    also defined when gradients are linearly dependent (pseudo-inverse). The weights ``a`` can be
    negative.

    Example:
        ``python -m mtbench weighting=imtl``
    """

    def __init__(self, upper_bound: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_choice("upper_bound", upper_bound, (False, True))
        self.upper_bound = bool(upper_bound)
        # an instance attribute: the trainer reads it from the instance
        self.gradient_of = "features" if self.upper_bound else "shared_parameters"

    def aggregate(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        weights = imtl_weights(gramian(grads))
        return combine(grads, weights), tf.cast(weights, tf.float32)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, IMTLConfig)}


def imtl_weights(gram: tf.Tensor) -> tf.Tensor:
    """``G^+ n / sum(G^+ n)``, float64; zeros if that sum vanishes (every gradient is zero).

    In float64: for nearly parallel gradients ``G`` is ill-conditioned (its smallest eigenvalues
    are about the squared angles between them); a float32 Gram matrix moved the weights by 3% at
    angles of about 1e-3 and by 40% at 3e-4.
    """
    gram = tf.cast(gram, tf.float64)
    scale = tf.reduce_mean(tf.linalg.diag_part(gram))
    gram = gram / tf.where(scale > 0.0, scale, 1.0)
    norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
    v = tf.linalg.matvec(tf.linalg.pinv(gram), norms)
    total = tf.reduce_sum(v)
    ok = tf.abs(total) > 1e-12
    return tf.where(ok, v / tf.where(ok, total, 1.0), tf.zeros_like(v))
