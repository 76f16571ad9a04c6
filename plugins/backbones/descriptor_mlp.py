"""The ``descriptor_mlp`` backbone: a fixed descriptor of a padded molecule, then an MLP.

A cheap baseline for molecules: nothing is learnt before the descriptor, which is a bag of atoms
(how many atoms of each element) and, for every pair of elements, a smoothed histogram of the
distances between their atoms (a two-body descriptor in the spirit of the bag of bonds and of
MBTR's k=2 term). Inputs are padded molecules ``{"z", "r", "mask"}`` as for ``schnet``; padded
slots take no part, and only distances enter, so the descriptor does not change under a
permutation of the atoms, more padding, a rotation or a translation.

Stages (:meth:`DescriptorMLP.stages`, for architectures that cut the backbone; see
:mod:`mtbench.architecture`): the descriptor (no variables), then one per dense layer of the MLP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from .mlp import MLPBackbone
from .schnet import float32_inputs, molecule_geometry


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class MoleculeDescriptor(keras.layers.Layer):
    """The first stage of ``descriptor_mlp``: a padded molecule ``{"z", "r", "mask"}`` ->
    ``log1p`` of its descriptor [B, descriptor_size], in the compute dtype; no variables.

    Args:
        elements, bins, max_distance: As :class:`DescriptorMLP`'s (checked there).
    """

    def __init__(
        self, elements: Sequence[int], bins: int, max_distance: float, **kwargs: Any
    ) -> None:
        super().__init__(**float32_inputs(kwargs))
        self.elements = [int(e) for e in elements]
        self.bins = int(bins)
        self.max_distance = float(max_distance)
        count = len(self.elements)
        upper = [(a, b) for a in range(count) for b in range(a, count)]
        self._pair_index = [a * count + b for a, b in upper]
        # a pair of one element is counted twice, (i, j) and (j, i): halve it
        self._pair_scale = np.array([0.5 if a == b else 1.0 for a, b in upper], np.float32)

    @property
    def size(self) -> int:
        count = len(self.elements)
        return count + count * (count + 1) // 2 * self.bins

    def build(self, input_shape: Any = None) -> None:
        self.built = True

    def descriptor(self, inputs: dict[str, Any]) -> tf.Tensor:
        """The descriptor before log1p, float32 [B, size]."""
        z, mask, distances, pairs = molecule_geometry(inputs)
        onehot = tf.cast(z[..., None] == tf.constant(self.elements), tf.float32) * mask[..., None]
        centres = tf.linspace(0.0, self.max_distance, self.bins)
        width = self.max_distance / (self.bins - 1)
        smeared = tf.exp(-0.5 * tf.square((distances[..., None] - centres) / width))
        smeared *= pairs[..., None]  # [B, A, A, bins]
        per_element = tf.einsum("bia,bijk->bajk", onehot, smeared)
        histogram = tf.einsum("bajk,bjc->back", per_element, onehot)  # [B, E, E, bins]
        count = len(self.elements)
        flat = tf.reshape(histogram, [-1, count * count, self.bins])
        upper = tf.gather(flat, self._pair_index, axis=1) * self._pair_scale[:, None]
        counts = tf.reduce_sum(onehot, axis=1)
        return tf.concat([counts, tf.reshape(upper, [-1, len(self._pair_index) * self.bins])], 1)

    def call(self, inputs: dict[str, Any], training: bool = False) -> tf.Tensor:
        return tf.cast(tf.math.log1p(self.descriptor(inputs)), self.compute_dtype)

    def compute_output_shape(self, input_shape: Any) -> tuple[int | None, ...]:
        return (None, self.size)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(elements=self.elements, bins=self.bins, max_distance=self.max_distance)
        return config


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class DescriptorMLP(keras.layers.Layer):
    """log1p([counts of each element, distance histogram of each pair of elements]) -> MLP.

    The descriptor has ``E + E (E + 1) / 2 * bins`` values for ``E`` elements: per element its
    number of atoms; per unordered pair of elements ``(a, b)`` (``a`` with itself too) and per
    bin, the sum over the pairs of distinct atoms of those elements of a Gaussian of their distance
    centred on the bin (centres evenly on [0, max_distance], each as wide as their spacing). Atoms
    of other elements are left out.

    Stages (:meth:`stages`): the descriptor (:class:`MoleculeDescriptor`, no variables), then
    the MLP's, one per dense layer.

    Args:
        elements: Atomic numbers described (QM9's H, C, N, O, F by default).
        bins: Distance bins per pair of elements.
        max_distance: Centre of the last bin, in Angstrom.
        hidden_units, activation, dropout: The MLP's (see the ``mlp`` backbone).

    Example:
        >>> batch = {"z": np.array([[6, 1, 1, 1, 1, 0]]), "r": np.random.rand(1, 6, 3),
        ...          "mask": np.array([[1, 1, 1, 1, 1, 0]], bool)}
        >>> DescriptorMLP(bins=8, hidden_units=[32])(batch).shape
        (1, 32)
    """

    def __init__(
        self,
        elements: Sequence[int] = (1, 6, 7, 8, 9),
        bins: int = 32,
        max_distance: float = 8.0,
        hidden_units: Sequence[int] = (256, 128),
        activation: str = "relu",
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**float32_inputs(kwargs))
        self.elements = [int(e) for e in elements]
        self.bins = int(bins)
        self.max_distance = float(max_distance)
        if not self.elements or len(set(self.elements)) != len(self.elements):
            raise ValueError(f"backbone.elements={self.elements}: need distinct atomic numbers")
        if any(e < 1 for e in self.elements):
            raise ValueError(f"backbone.elements={self.elements}: atomic numbers are >= 1")
        if self.bins < 2:
            raise ValueError(f"backbone.bins={bins} must be at least 2")
        if not self.max_distance > 0:
            raise ValueError(f"backbone.max_distance={max_distance} must be > 0 (Angstrom)")
        dtype = self.dtype_policy
        self.describe = MoleculeDescriptor(
            self.elements, self.bins, self.max_distance, name="descriptor", dtype=dtype
        )
        self.mlp = MLPBackbone(hidden_units, activation, dropout, name="mlp", dtype=dtype)

    @property
    def descriptor_size(self) -> int:
        return self.describe.size

    def descriptor(self, inputs: dict[str, Any]) -> tf.Tensor:
        """The descriptor before log1p, float32 [B, descriptor_size]."""
        return self.describe.descriptor(inputs)

    def stages(self) -> list[keras.layers.Layer]:
        """The descriptor, then one stage per dense layer; their composition is this backbone."""
        return [self.describe, *self.mlp.stages()]

    def build(self, input_shape: Any = None) -> None:
        self.describe.build(input_shape)
        self.mlp.build((None, self.descriptor_size))
        self.built = True

    def call(self, inputs: dict[str, Any], training: bool = False) -> tf.Tensor:
        x = inputs
        for stage in self.stages():
            x = stage(x, training=training)
        return x

    def compute_output_shape(self, input_shape: Any) -> tuple[int | None, ...]:
        return (None, self.mlp.hidden_units[-1])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            elements=self.elements,
            bins=self.bins,
            max_distance=self.max_distance,
            hidden_units=self.mlp.hidden_units,
            activation=self.mlp.activation,
            dropout=self.mlp.dropout,
        )
        return config
