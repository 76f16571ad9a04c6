"""The ``seed_cnn`` backbone: the shared feature extractor of the notebook mtbench grew from."""

from __future__ import annotations

from typing import Any

import keras

from .building_blocks import build_in_sequence


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class SeedCNN(keras.layers.Layer):
    """Conv2D(32, 3x3, same, relu) -> Conv2D(32, 3x3, valid, relu) -> MaxPooling2D(2) -> Flatten
    -> Dense(128, relu) -> Dense(64, relu).

    Kept exactly as the notebook built it, as the reference point for every other backbone. On
    32x32x3 inputs it has 940,128 parameters and returns 64 features.

    Example:
        >>> SeedCNN()(keras.ops.zeros((8, 32, 32, 3))).shape
        (8, 64)
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stack = [
            keras.layers.Conv2D(
                32, 3, padding="same", activation="relu", name="conv1", dtype=self.dtype_policy
            ),
            keras.layers.Conv2D(
                32, 3, padding="valid", activation="relu", name="conv2", dtype=self.dtype_policy
            ),
            keras.layers.MaxPooling2D(2, name="pool", dtype=self.dtype_policy),
            keras.layers.Flatten(name="flatten", dtype=self.dtype_policy),
            keras.layers.Dense(128, activation="relu", name="dense1", dtype=self.dtype_policy),
            keras.layers.Dense(64, activation="relu", name="dense2", dtype=self.dtype_policy),
        ]

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        build_in_sequence(self.stack, input_shape)
        self.built = True

    def call(self, inputs: Any, training: bool = False) -> Any:
        x = inputs
        for layer in self.stack:
            x = layer(x)
        return x

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], 64)
