"""The ``seed_cnn`` backbone: the shared feature extractor of the notebook mtbench grew from."""

from __future__ import annotations

from typing import Any

import keras

from mtbench.architecture import Chain

from .building_blocks import build_in_sequence


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class SeedCNN(keras.layers.Layer):
    """Conv2D(32, 3x3, same, relu) -> Conv2D(32, 3x3, valid, relu) -> MaxPooling2D(2) -> Flatten
    -> Dense(128, relu) -> Dense(64, relu).

    Kept exactly as the notebook built it, as the reference point for every other backbone. On
    32x32x3 inputs it has 940,128 parameters and returns 64 features.

    Stages (:meth:`stages`, see :mod:`mtbench.architecture`): ``conv1`` (32x32x32 on 32x32
    inputs), ``conv2`` with the pooling (15x15x32), ``dense1`` with the flattening (128) and
    ``dense2`` (64).

    Example:
        >>> SeedCNN()(keras.ops.zeros((8, 32, 32, 3))).shape
        (8, 64)
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        conv1 = keras.layers.Conv2D(
            32, 3, padding="same", activation="relu", name="conv1", dtype=dtype
        )
        conv2 = keras.layers.Conv2D(
            32, 3, padding="valid", activation="relu", name="conv2", dtype=dtype
        )
        pool = keras.layers.MaxPooling2D(2, name="pool", dtype=dtype)
        flatten = keras.layers.Flatten(name="flatten", dtype=dtype)
        dense1 = keras.layers.Dense(128, activation="relu", name="dense1", dtype=dtype)
        dense2 = keras.layers.Dense(64, activation="relu", name="dense2", dtype=dtype)
        self.stage_layers = [
            Chain([conv1], name="stage_conv1", dtype=dtype),
            Chain([conv2, pool], name="stage_conv2", dtype=dtype),
            Chain([flatten, dense1], name="stage_dense1", dtype=dtype),
            Chain([dense2], name="stage_dense2", dtype=dtype),
        ]

    def stages(self) -> list[keras.layers.Layer]:
        """The four stages, in order; their composition is this backbone."""
        return list(self.stage_layers)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        build_in_sequence(self.stage_layers, input_shape)
        self.built = True

    def call(self, inputs: Any, training: bool = False) -> Any:
        x = inputs
        for stage in self.stage_layers:
            x = stage(x, training=training)
        return x

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], 64)
