"""The ``pcgrad`` weighting: projecting conflicting gradients (gradient surgery)."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from mtbench.weighting import GradientWeighting

from .common import (
    SeededStream,
    check_seed,
    choice,
    combine,
    gramian,
    options_of,
    safe_divide,
)
from .options import PCGradConfig, Reduction


class PCGrad(GradientWeighting):
    """PCGrad: Yu, Kumar, Gupta, Levine, Hausman and Finn, "Gradient Surgery for Multi-Task
    Learning", NeurIPS 2020 (Algorithm 1).

    For each task i, starting from ``g_i^PC = g_i``, for every other task j in a random order: if
    ``<g_i^PC, g_j> < 0``, ``g_i^PC -= <g_i^PC, g_j> / |g_j|^2 g_j`` (the conflicting component
    is removed, so afterwards ``<g_i^PC, g_j> = 0``). The update is ``sum_i g_i^PC``.

    Every ``g_i^PC`` is a combination of the task gradients, so the projections are carried out
    on the ``[T, T]`` coefficients with the (float64) Gram matrix and the update is one weighted
    sum; the logged weights are each task gradient's total coefficient.

    Example:
        ``python -m mtbench weighting=pcgrad weighting.seed=0``
    """

    def __init__(
        self, reduction: Reduction | str = "sum", seed: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        check_seed(seed)
        self.reduction, self.seed = choice("reduction", reduction, Reduction), seed

    def build_state(self, num_tasks: int) -> None:
        self.random = SeededStream(self, self.seed)

    def random_orders(self, num_tasks: int) -> tf.Tensor:
        """``[T, T-1]``: row i lists the other tasks in the order task i is projected on them."""
        keys = self.random.uniform([num_tasks, num_tasks]) + 2.0 * tf.eye(num_tasks)
        return tf.argsort(keys, axis=1)[:, :-1]  # the task itself sorts last

    def coefficients(self, gram: tf.Tensor, orders: tf.Tensor) -> tf.Tensor:
        """``C`` with ``g_i^PC = sum_k C[i, k] g_k`` (float64), given the Gram matrix and the
        orders. In float64: after a projection ``g_i^PC`` can nearly cancel, and its dot products
        are read from the Gram matrix."""
        num_tasks = gram.shape[0]
        gram = tf.cast(gram, tf.float64)
        scale = tf.reduce_mean(tf.linalg.diag_part(gram))
        gram = gram / tf.where(scale > 0.0, scale, 1.0)  # so safe_divide's guard is relative
        norms2 = tf.linalg.diag_part(gram)
        coefficients = tf.eye(num_tasks, dtype=tf.float64)
        for position in range(num_tasks - 1):
            onto = tf.one_hot(orders[:, position], num_tasks, dtype=tf.float64)  # row i: task j
            dots = tf.reduce_sum(tf.matmul(coefficients, gram) * onto, axis=1)  # <g_i^PC, g_j>
            squared = tf.reduce_sum(onto * norms2[None, :], axis=1)  # |g_j|^2
            shift = tf.where(dots < 0.0, safe_divide(dots, squared), tf.zeros_like(dots))
            coefficients -= shift[:, None] * onto
        return coefficients

    def project(self, grads: tf.Tensor, orders: tf.Tensor | None = None) -> tf.Tensor:
        """The projected gradients ``g_i^PC``, ``[T, P]`` (random orders unless given)."""
        num_tasks = grads.shape[0]
        orders = self.random_orders(num_tasks) if orders is None else orders
        coefficients = self.coefficients(gramian(grads), orders)
        return tf.cast(tf.matmul(coefficients, tf.cast(grads, tf.float64)), grads.dtype)

    def aggregate(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        num_tasks = grads.shape[0]
        coefficients = self.coefficients(gramian(grads), self.random_orders(num_tasks))
        weights = tf.reduce_sum(coefficients, axis=0)
        if self.reduction == "mean":
            weights /= num_tasks
        return combine(grads, weights), tf.cast(weights, tf.float32)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, PCGradConfig)}
