"""The ``linear`` head: one Dense layer per task, shaped as the task's kind asks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
from mtbench.model import task_seed
from mtbench.tasks import TaskSpec


@keras.saving.register_keras_serializable(package="mtbench_ordinal")
class LinearHeads(keras.layers.Layer):
    """Per task, a ``Dense(task.units)`` on the shared features, reshaped to
    ``task.output_shape`` (an ordinal task's K - 1 logits, a regression task's targets, a class
    map's ``(H, W, classes)`` logits).

    Args:
        tasks: The tasks to predict (``TaskSpec`` or its ``get_config()`` dict).
        seed: The run's seed: each task's kernel is initialised from
            ``mtbench.model.task_seed(seed, task, "linear")``, so a task starts alike in its
            single-task model and in the joint one. ``None``: Keras's unseeded initialiser.
        use_bias: Give each Dense layer a bias.

    Example:
        >>> heads = LinearHeads([TaskSpec("grade", 5, kind="ordinal")], seed=0)
        >>> heads(keras.ops.zeros((2, 16)))["grade"].shape
        (2, 4)
    """

    def __init__(
        self,
        tasks: Sequence[TaskSpec | Mapping[str, Any]],
        seed: int | None = None,
        use_bias: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tasks = [TaskSpec.coerce(t) for t in tasks]
        self.seed = None if seed is None else int(seed)
        self.use_bias = bool(use_bias)
        self.layers_by_task = {
            t.name: keras.layers.Dense(
                t.units,
                use_bias=self.use_bias,
                kernel_initializer=keras.initializers.GlorotUniform(
                    task_seed(self.seed, t.name, "linear")
                ),
                name=f"{t.name}_linear",
                dtype=self.dtype_policy,
            )
            for t in self.tasks
        }

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        for layer in self.layers_by_task.values():
            layer.build(input_shape)
        self.built = True

    def call(self, features: Any, training: bool = False) -> dict[str, Any]:
        outputs = {}
        for task in self.tasks:
            values = self.layers_by_task[task.name](features)
            if len(task.output_shape) > 1:
                values = keras.ops.reshape(values, (-1, *task.output_shape))
            outputs[task.name] = values
        return outputs

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "tasks": [t.get_config() for t in self.tasks],
            "seed": self.seed,
            "use_bias": self.use_bias,
        }
