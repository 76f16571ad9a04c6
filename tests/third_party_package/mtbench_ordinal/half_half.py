"""The ``half_half`` weighting: a fixed share of the objective for the first task."""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from mtbench.weighting import LossWeighting


class HalfHalf(LossWeighting):
    """Objective ``s L_1 + (1 - s) / (T - 1) * sum_{t > 1} L_t`` with ``s = first_share``: the
    first task (in the dataset's order) gets a share ``s`` of the weight, the other ``T - 1``
    tasks share the rest equally. The weights sum to 1, so identical task gradients ``g`` give
    the update ``g``. Needs at least two tasks.

    Args:
        first_share: ``s``, in (0, 1); 0.5 (default): half for the first task, half for the rest.

    Example:
        ``python -m mtbench dataset=ordinal_toy weighting=half_half weighting.first_share=0.7``
    """

    def __init__(self, first_share: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 < first_share < 1.0:
            raise ValueError(
                f"weighting.first_share={first_share} is out of range: it is the first task's "
                "share of the weight, in (0, 1)"
            )
        self.first_share = float(first_share)

    def build_state(self, num_tasks: int) -> None:
        if num_tasks < 2:
            raise ValueError(
                f"weighting=half_half splits the weight between the first task and the others; "
                f"it needs at least two tasks, got {list(self.tasks)}"
            )
        rest = (1.0 - self.first_share) / (num_tasks - 1)
        self._task_weights = tf.constant([self.first_share] + [rest] * (num_tasks - 1))

    def loss_weights(self, losses: tf.Tensor) -> tf.Tensor:
        return self._task_weights

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "first_share": self.first_share}
