"""The ``dense`` head: one linear classifier per task on the shared features."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras

from mtbench import register
from mtbench.data import TaskHierarchy, TaskSpec
from mtbench.model import task_seed


@register("head", "dense")
@keras.saving.register_keras_serializable(package="mtbench_plugins")
class DenseHeads(keras.layers.Layer):
    """A ``Dense(num_classes)`` per task, producing logits.

    Args:
        tasks: The tasks to predict (``TaskSpec`` or its ``get_config()`` dict).
        hierarchy: Unused; accepted because every head plugin is offered the dataset's hierarchy.
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
        hierarchy: TaskHierarchy | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tasks = [TaskSpec.coerce(t) for t in tasks]
        self.seed = None if seed is None else int(seed)
        self.classifiers = {
            t.name: keras.layers.Dense(
                t.num_classes,
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
        return {name: classifier(features) for name, classifier in self.classifiers.items()}

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(tasks=[t.get_config() for t in self.tasks], seed=self.seed)
        return config
