"""The ``mlp`` backbone: a stack of dense layers on flattened inputs (feature vectors, tabular
data, descriptors of molecules, small images)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from mtbench.architecture import Chain

from .building_blocks import build_in_sequence


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class MLPBackbone(keras.layers.Layer):
    """Flatten -> [Dense(units, activation) -> Dropout] per entry of ``hidden_units``.

    Stages (:meth:`stages`, see :mod:`mtbench.architecture`): one per dense layer, with its
    dropout; the first flattens the inputs.

    Args:
        hidden_units: Sizes of the dense layers, input side first; the last is the feature size.
        activation: Keras activation of every layer.
        dropout: Dropout rate after each layer (0: none).

    Example:
        >>> MLPBackbone(hidden_units=[64, 32])(keras.ops.zeros((8, 16))).shape
        (8, 32)
    """

    def __init__(
        self,
        hidden_units: Sequence[int] = (128, 64),
        activation: str = "relu",
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hidden_units = [int(u) for u in hidden_units]
        self.activation = activation
        self.dropout = float(dropout)
        if not self.hidden_units or any(u < 1 for u in self.hidden_units):
            raise ValueError(
                f"backbone.hidden_units={self.hidden_units} must be a non-empty list of sizes >= 1"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"backbone.dropout={dropout} must be in [0, 1)")
        try:
            keras.activations.get(activation)
        except ValueError:
            raise ValueError(
                f"backbone.activation={activation!r} is not a Keras activation (e.g. relu, gelu)"
            ) from None
        dtype = self.dtype_policy
        flatten = keras.layers.Flatten(name="flatten", dtype=dtype)
        self.stage_layers = []
        for index, units in enumerate(self.hidden_units, start=1):
            layers = [flatten] if index == 1 else []
            layers.append(
                keras.layers.Dense(units, activation=activation, name=f"dense{index}", dtype=dtype)
            )
            if self.dropout:
                layers.append(
                    keras.layers.Dropout(self.dropout, name=f"dropout{index}", dtype=dtype)
                )
            self.stage_layers.append(Chain(layers, name=f"stage{index}", dtype=dtype))

    def stages(self) -> list[keras.layers.Layer]:
        """One stage per dense layer (the first flattens the inputs); their composition is this
        backbone."""
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
        return (input_shape[0], self.hidden_units[-1])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            hidden_units=self.hidden_units, activation=self.activation, dropout=self.dropout
        )
        return config
