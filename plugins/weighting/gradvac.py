"""The ``gradvac`` weighting: gradient vaccine, aligning task gradients to target similarities."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from mtbench.weighting import GradientWeighting

from .common import (
    SeededStream,
    check_range,
    check_seed,
    combine,
    gramian,
    options_of,
    safe_divide,
    state,
)
from .options import GradVacConfig


class GradVac(GradientWeighting):
    """Gradient Vaccine: Wang, Tsvetkov, Firat and Cao, "Gradient Vaccine: Investigating and
    Improving Multi-task Optimization in Massively Multilingual Models", ICLR 2021 (Algorithm 2),
    on the whole shared-parameter gradient.

    For each task i, starting from ``g_i' = g_i``, for every other task j in a random order: with
    ``phi = cos(g_i', g_j)`` and the target ``phi_hat_ij``, if ``phi < phi_hat_ij``,
    ``g_i' += |g_i'| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2))
    / (|g_j| sqrt(1 - phi_hat^2)) g_j`` (afterwards ``cos(g_i', g_j) = phi_hat_ij``); then
    ``phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi``. The update is ``sum_i g_i'``. Targets
    start at 0, where the first step is PCGrad.

    As in PCGrad, the updates are carried out on the coefficients of the task gradients with the
    (float64) Gram matrix; the logged weights are each task gradient's total coefficient.

    Example:
        ``python -m mtbench weighting=gradvac weighting.beta=0.01``
    """

    def __init__(self, beta: float = 0.01, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_range("beta", beta, 0.0, 1.0)
        check_seed(seed)
        self.beta, self.seed = float(beta), seed

    def build_state(self, num_tasks: int) -> None:
        self.target = state(self, "target_similarity", (num_tasks, num_tasks))
        self.random = SeededStream(self, self.seed)

    def aggregate(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        num_tasks = grads.shape[0]
        keys = self.random.uniform([num_tasks, num_tasks]) + 2.0 * tf.eye(num_tasks)
        orders = tf.argsort(keys, axis=1)[:, :-1]
        coefficients, target = self.coefficients(gramian(grads), orders, self.target)
        self.target.assign(target)
        weights = tf.reduce_sum(coefficients, axis=0)
        return combine(grads, weights), tf.cast(weights, tf.float32)

    def coefficients(
        self, gram: tf.Tensor, orders: tf.Tensor, target: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """``C`` with ``g_i' = sum_k C[i, k] g_k`` (float64), and the updated targets (float32).

        In float64 throughout: ``|g_i'|`` is read from the Gram matrix, and after a correction
        ``g_i'`` can be much shorter than the gradients it is made of.
        """
        num_tasks = gram.shape[0]
        gram = tf.cast(gram, tf.float64)
        scale = tf.reduce_mean(tf.linalg.diag_part(gram))
        gram = gram / tf.where(scale > 0.0, scale, 1.0)  # so safe_divide's guard is relative
        target = tf.cast(tf.convert_to_tensor(target), tf.float64)
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
        coefficients = tf.eye(num_tasks, dtype=tf.float64)
        for position in range(num_tasks - 1):
            onto = tf.one_hot(orders[:, position], num_tasks, dtype=tf.float64)  # row i: task j
            dots = tf.reduce_sum(tf.matmul(coefficients, gram) * onto, axis=1)
            own2 = tf.einsum("ik,kl,il->i", coefficients, gram, coefficients)
            own = tf.sqrt(tf.maximum(own2, 0.0))  # |g_i'|
            other = tf.reduce_sum(onto * norms[None, :], axis=1)
            phi = tf.clip_by_value(safe_divide(dots, own * other), -1.0, 1.0)
            phi_hat = tf.reduce_sum(onto * target, axis=1)
            root_hat = tf.sqrt(tf.maximum(1.0 - phi_hat**2, 0.0))
            shift = safe_divide(
                own * (phi_hat * tf.sqrt(tf.maximum(1.0 - phi**2, 0.0)) - phi * root_hat),
                other * root_hat,
            )
            coefficients += tf.where(phi < phi_hat, shift, tf.zeros_like(shift))[:, None] * onto
            updated = (1.0 - self.beta) * phi_hat + self.beta * phi
            target = target + onto * (updated - phi_hat)[:, None]
        return coefficients, tf.cast(target, tf.float32)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, GradVacConfig)}
