"""The ``rlw`` weighting: random loss weights, drawn afresh at every step."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from mtbench.weighting import LossWeighting

from .common import SeededStream, check_seed, choice, options_of
from .options import Distribution, RandomLossWeightingConfig


class RandomLossWeighting(LossWeighting):
    """Random loss weighting: Lin, Ye, Xu, Shi and Zhang, "Reasonable Effectiveness of Random
    Weighting: A Litmus Test for Multi-Task Learning", TMLR 2022.

    At every step the objective is ``sum_t w_t L_t`` with fresh random weights on the simplex:
    ``w = softmax(z)``, ``z ~ N(0, I)`` by default. The weights sum to 1 (``ew``'s sum to ``T``),
    as in the paper.

    Example:
        ``python -m mtbench weighting=rlw weighting.distribution=dirichlet weighting.seed=3``
    """

    def __init__(
        self, distribution: Distribution | str = "normal", seed: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        check_seed(seed)
        self.distribution = choice("distribution", distribution, Distribution)
        self.seed = seed

    def build_state(self, num_tasks: int) -> None:
        self.random = SeededStream(self, self.seed)

    def loss_weights(self, losses: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(losses)
        if self.distribution == "normal":
            return tf.nn.softmax(self.random.normal(shape))
        if self.distribution == "uniform":
            draws = self.random.uniform(shape)
        else:  # Dirichlet(1): normalised standard exponential draws
            draws = -tf.math.log1p(-self.random.uniform(shape))
        return draws / tf.maximum(tf.reduce_sum(draws), 1e-12)

    def combine(self, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        weights = tf.stop_gradient(self.loss_weights(losses))
        return tf.reduce_sum(weights * losses), weights

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, RandomLossWeightingConfig)}
