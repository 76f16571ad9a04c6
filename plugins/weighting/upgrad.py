"""The ``upgrad`` weighting: unconflicting projection of gradients (Jacobian descent)."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from mtbench.weighting import GradientWeighting

from .common import check_range, combine, gramian, options_of
from .options import UPGradConfig
from .solvers import nonnegative_qp


class UPGrad(GradientWeighting):
    """UPGrad: Quinton and Rey, "Jacobian Descent for Multi-Objective Optimization", 2024
    (the torchjd reference implementation).

    Each task gradient ``g_i`` is projected onto the dual cone of the task gradients, the set of
    directions that conflict with none of them (``<g_t, d> >= 0`` for every t), and the update
    is the mean of the projections. In weights: ``v_i = argmin_{v >= e_i / T} v'Gv`` (``G``
    normalised and regularised as above) and the update is ``sum_t a_t g_t`` with
    ``a = sum_i v_i``. Where the gradients do not conflict this is the mean gradient. The
    ``T`` box-constrained quadratic programs are solved exactly in the graph (the reference
    calls quadprog).

    Example:
        ``python -m mtbench weighting=upgrad``
    """

    def __init__(self, norm_eps: float = 1e-4, reg_eps: float = 1e-4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_range("norm_eps", norm_eps, 0.0)
        check_range("reg_eps", reg_eps, 0.0, low_open=True)
        self.norm_eps, self.reg_eps = float(norm_eps), float(reg_eps)

    def aggregate(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        weights = self.weights_from_gram(gramian(grads))
        return combine(grads, weights), weights

    def weights_from_gram(self, gram: tf.Tensor) -> tf.Tensor:
        num_tasks = gram.shape[0]
        gram = tf.cast(gram, tf.float64)
        trace = tf.linalg.trace(gram)
        normalized = tf.where(
            trace < self.norm_eps, tf.zeros_like(gram), gram / tf.where(trace > 0.0, trace, 1.0)
        )
        regularized = normalized + self.reg_eps * tf.eye(num_tasks, dtype=tf.float64)
        lower = tf.eye(num_tasks, dtype=tf.float64) / num_tasks  # row i: e_i / T
        # v_i = lower_i + z_i with z_i = argmin_{z >= 0} z'Gz / 2 + (G lower_i)'z
        batch = tf.tile(regularized[None], [num_tasks, 1, 1])
        shift = nonnegative_qp(batch, tf.matmul(lower, regularized), on_simplex=False)
        return tf.cast(tf.reduce_sum(lower + shift, axis=0), tf.float32)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, UPGradConfig)}
