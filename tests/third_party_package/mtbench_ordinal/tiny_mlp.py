"""The ``tiny_mlp`` backbone: one hidden layer on flattened inputs."""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="mtbench_ordinal")
class TinyMLP(keras.layers.Layer):
    """Flatten -> Dense(width, relu): features ``[batch, width]`` for feature-vector datasets.

    Args:
        width: Units of the hidden layer (>= 1).

    Example:
        >>> TinyMLP(width=8)(keras.ops.zeros((4, 12))).shape
        (4, 8)
    """

    def __init__(self, width: int = 16, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(width) < 1:
            raise ValueError(f"backbone.width={width} is out of range: it must be >= 1")
        self.width = int(width)
        self.flatten = keras.layers.Flatten(name="flatten", dtype=self.dtype_policy)
        self.hidden = keras.layers.Dense(
            self.width, activation="relu", name="hidden", dtype=self.dtype_policy
        )

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.flatten.build(input_shape)
        self.hidden.build(self.flatten.compute_output_shape(input_shape))
        self.built = True

    def call(self, inputs: Any, training: bool = False) -> Any:
        return self.hidden(self.flatten(inputs))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], self.width)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "width": self.width}
