"""The ``static`` weighting: fixed per-task loss weights from the config."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from mtbench.weighting import LossWeighting


class StaticWeighting(LossWeighting):
    """Objective ``sum_t w_t * L_t`` with fixed ``w_t``.

    Example:
        ``python -m mtbench weighting=static +weighting.weights.coarse=0.5``
    """

    def __init__(
        self, weights: dict[str, float] | None = None, default: float = 1.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.task_weights = dict(weights or {})
        self.default = float(default)
        negative = {t: w for t, w in self.task_weights.items() if w < 0}
        if negative or self.default < 0:
            raise ValueError(f"weighting.weights must be >= 0; got {negative or self.default}")

    def build_state(self, num_tasks: int) -> None:
        unknown = sorted(set(self.task_weights) - set(self.tasks))
        if unknown:
            raise ValueError(
                f"weighting.weights names tasks {unknown} that this run does not train; "
                f"its tasks are {list(self.tasks)}"
            )
        self._fixed_weights = tf.constant(
            [self.task_weights.get(t, self.default) for t in self.tasks], tf.float32
        )

    def loss_weights(self, losses: tf.Tensor) -> tf.Tensor:
        return self._fixed_weights
