"""The ``dense`` head: one linear layer per task on the shared features."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras

from mtbench.model import task_seed
from mtbench.tasks import TaskSpec


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class DenseHeads(keras.layers.Layer):
    """A ``Dense`` layer per task producing the outputs its kind needs (``task.output_shape``:
    the logits of a classification task, the values of a regression task's targets, a class map's
    logits reshaped to ``(H, W, classes)``).

    Args:
        tasks: The tasks to predict (``TaskSpec`` or its ``get_config()`` dict).
        seed: Seeds each task's classifier from this and the task's name (see
            :func:`mtbench.model.task_seed`); ``None``: Keras's unseeded initialisers.

    Example:
        >>> heads = DenseHeads(tasks=[TaskSpec("fine", 100), TaskSpec("coarse", 20)])
        >>> {k: v.shape for k, v in heads(keras.ops.zeros((8, 64))).items()}
        {'fine': (8, 100), 'coarse': (8, 20)}
    """

    def __init__(
        self,
        tasks: Sequence[TaskSpec | Mapping[str, Any]],
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tasks = [TaskSpec.coerce(t) for t in tasks]
        self.seed = None if seed is None else int(seed)
        self.classifiers = {
            t.name: keras.layers.Dense(
                t.units,
                kernel_initializer=keras.initializers.GlorotUniform(
                    task_seed(self.seed, t.name, "logits")
                ),
                name=f"{t.name}_logits",
                dtype=self.dtype_policy,
            )
            for t in self.tasks
        }

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        for classifier in self.classifiers.values():
            classifier.build(input_shape)
        self.built = True

    def call(self, features: Any, training: bool = False) -> dict[str, Any]:
        return {
            t.name: shaped(self.classifiers[t.name](features), t.output_shape) for t in self.tasks
        }

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(tasks=[t.get_config() for t in self.tasks], seed=self.seed)
        return config


def shaped(outputs: Any, shape: tuple[int, ...]) -> Any:
    """``[B, prod(shape)]`` outputs as ``[B, *shape]`` (unchanged when ``shape`` has one axis)."""
    if len(shape) == 1:
        return outputs
    return keras.ops.reshape(outputs, (-1, *shape))
