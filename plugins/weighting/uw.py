"""The ``uw`` weighting: homoscedastic uncertainty weighting with learnable log-variances."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from mtbench.weighting import LossWeighting

from .common import choice, options_of
from .options import UncertaintyConfig, UncertaintyForm


class UncertaintyWeighting(LossWeighting):
    """Uncertainty weighting: Kendall, Gal and Cipolla, "Multi-Task Learning Using Uncertainty to
    Weigh Losses for Scene Geometry and Semantics", CVPR 2018.

    Each task has a learnable log-variance ``s_t = log sigma_t^2``, trained with the model by the
    same optimizer. The objective is ``sum_t k exp(-s_t) L_t + s_t / 2`` with ``k = 1`` for
    ``classification`` and ``k = 1/2`` for ``regression``; the logged weights are
    ``k exp(-s_t)``. At the optimum of ``s_t``, ``sigma_t^2 = 2 k L_t``: tasks with a larger loss
    get a smaller weight.

    Example:
        ``python -m mtbench weighting=uw weighting.init_log_variance=0.5``
    """

    def __init__(
        self,
        form: UncertaintyForm | str = "classification",
        init_log_variance: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.form = choice("form", form, UncertaintyForm)
        self.init_log_variance = float(init_log_variance)
        self._factor = 1.0 if self.form == UncertaintyForm.classification else 0.5

    def build_state(self, num_tasks: int) -> None:
        self.log_variance = self.add_weight(
            shape=(num_tasks,),
            initializer=keras.initializers.Constant(self.init_log_variance),
            trainable=True,
            autocast=False,
            name="log_variance",
        )

    def combine(self, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        s = tf.convert_to_tensor(self.log_variance)
        weights = self._factor * tf.exp(-s)
        return tf.reduce_sum(weights * losses + 0.5 * s), tf.stop_gradient(weights)

    def loss_weights(self, losses: tf.Tensor) -> tf.Tensor:
        return self._factor * tf.exp(-tf.convert_to_tensor(self.log_variance))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, UncertaintyConfig)}
