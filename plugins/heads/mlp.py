"""The ``mlp`` head: per task, a tower of hidden layers before the classifier."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras

from mtbench.model import task_seed
from mtbench.tasks import TaskSpec

from .dense import shaped


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class MLPHeads(keras.layers.Layer):
    """Per task: ``[Dense(units, activation) -> Dropout] * len(hidden_units) -> Dense(outputs)``,
    the last layer sized (and reshaped) to the task's ``output_shape``.

    The towers share nothing; each task's tower and classifier are its own variables.

    Args:
        tasks: The tasks to predict (``TaskSpec`` or its ``get_config()`` dict).
        hidden_units: Hidden layer sizes, input side first (empty: a linear classifier, as
            ``dense``).
        activation: Keras activation of the hidden layers.
        dropout: Dropout rate after each hidden layer, in ``[0, 1)``.
        seed: Seeds each layer of a task's tower (initialisers and dropout) from this, the task's
            name and the layer (see :func:`mtbench.model.task_seed`); ``None``: Keras's unseeded
            initialisers and dropout.

    Example:
        >>> heads = MLPHeads(tasks=[TaskSpec("fine", 100)], hidden_units=[512, 256])
        >>> heads(keras.ops.zeros((8, 64)))["fine"].shape
        (8, 100)
    """

    def __init__(
        self,
        tasks: Sequence[TaskSpec | Mapping[str, Any]],
        hidden_units: Sequence[int] = (256,),
        activation: str = "relu",
        dropout: float = 0.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tasks = [TaskSpec.coerce(t) for t in tasks]
        self.seed = None if seed is None else int(seed)
        self.hidden_units = [int(units) for units in hidden_units]
        self.activation = activation
        self.dropout = float(dropout)
        if any(units < 1 for units in self.hidden_units):
            raise ValueError(f"head.hidden_units={self.hidden_units} must all be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"head.dropout={dropout} must be in [0, 1)")
        try:
            keras.activations.get(activation)
        except ValueError:
            raise ValueError(
                f"head.activation={activation!r} is not a Keras activation (e.g. relu, gelu, silu)"
            ) from None
        self.towers = {t.name: self._tower(t) for t in self.tasks}

    def _tower(self, task: TaskSpec) -> list[keras.layers.Layer]:
        layers: list[keras.layers.Layer] = []
        dtype = self.dtype_policy  # sublayers keep it when a saved model is reloaded

        def seed(part: str) -> int | None:
            return task_seed(self.seed, task.name, part)

        for index, units in enumerate(self.hidden_units, start=1):
            layers.append(
                keras.layers.Dense(
                    units,
                    activation=self.activation,
                    kernel_initializer=keras.initializers.GlorotUniform(seed(f"hidden{index}")),
                    name=f"{task.name}_{index}",
                    dtype=dtype,
                )
            )
            if self.dropout > 0:
                layers.append(
                    keras.layers.Dropout(
                        self.dropout,
                        seed=seed(f"dropout{index}"),
                        name=f"{task.name}_dropout{index}",
                        dtype=dtype,
                    )
                )
        layers.append(
            keras.layers.Dense(
                task.units,
                kernel_initializer=keras.initializers.GlorotUniform(seed("logits")),
                name=f"{task.name}_logits",
                dtype=dtype,
            )
        )
        return layers

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        for tower in self.towers.values():
            shape = input_shape
            for layer in tower:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)
        self.built = True

    def call(self, features: Any, training: bool = False) -> dict[str, Any]:
        outputs = {}
        for task in self.tasks:
            x = features
            for layer in self.towers[task.name]:
                x = layer(x, training=training)
            outputs[task.name] = shaped(x, task.output_shape)
        return outputs

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            tasks=[t.get_config() for t in self.tasks],
            hidden_units=self.hidden_units,
            activation=self.activation,
            dropout=self.dropout,
            seed=self.seed,
        )
        return config
