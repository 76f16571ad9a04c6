"""Conformance tests for ``backbone`` plugins: :class:`BackboneSuite`.

::

    from mtbench.testing import ArraySpec, BackboneSuite

    class TestMine(BackboneSuite):
        config = {"name": "mine", "width": 8}
        inputs = ArraySpec((8, 8, 3))  # what reaches the backbone, per example

``inputs`` describes one example as the backbone receives it: after the dataset's preprocessing
layer, or, without one, as the dataset stores it with floating arrays cast to the compute dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pytest

from mtbench.testing import _layers
from mtbench.testing.arrays import ArraySpec, sample

__all__ = ["BackboneSuite"]


class BackboneSuite:
    """Builds, trains, serialises and runs in mixed precision; subclass it with ``config`` and
    ``inputs``.

    Class attributes:
        config: ``{"name": <registered backbone>, **options}`` (small options keep it fast).
        inputs: One example as the backbone receives it: an :class:`ArraySpec` or a dict of them.
        batch_size: Examples per test batch.
        seed: Seeds Keras before building and the random inputs.
    """

    config: ClassVar[Mapping[str, Any]] = {}
    inputs: ClassVar[ArraySpec | Mapping[str, ArraySpec] | None] = None
    batch_size: ClassVar[int] = 2
    seed: ClassVar[int] = 0

    # ------------------------------------------------------------------------------ helpers
    def batch(self, size: int | None = None, salt: int = 0) -> Any:
        if self.inputs is None:
            pytest.fail(
                f"{type(self).__name__}.inputs is not set: describe one example as the backbone "
                "receives it, e.g. inputs = ArraySpec((32, 32, 3))"
            )
        return sample(
            self.inputs, np.random.default_rng([self.seed, salt]), size or self.batch_size
        )

    def build(self, precision: str = "float32") -> Any:
        """The backbone of :attr:`config`, built under ``precision`` on a test batch."""
        import keras

        from mtbench import registry
        from mtbench.model import dtype_policy

        keras.utils.set_random_seed(self.seed)
        with dtype_policy(precision):
            layer = registry.build("backbone", dict(self.config))
            assert isinstance(layer, keras.layers.Layer), (
                f"backbone '{self.config.get('name')}' built a {type(layer).__name__}, not a "
                "keras.layers.Layer"
            )
            layer(_layers.as_inputs(self.batch(), layer.compute_dtype))
        return layer

    def features(self, layer: Any, batch: Any, training: bool = False) -> Any:
        return layer(_layers.as_inputs(batch, layer.compute_dtype), training=training)

    # -------------------------------------------------------------------------------- tests
    def test_outputs_a_feature_tensor_per_example(self) -> None:
        import tensorflow as tf

        layer = self.build()
        for size in (self.batch_size, self.batch_size + 1):  # no batch size is built in
            features = self.features(layer, self.batch(size, salt=size))
            assert isinstance(features, tf.Tensor), (
                f"the backbone returned a {type(features).__name__}; a backbone returns one "
                "feature tensor (the heads split it per task)"
            )
            assert features.shape.rank >= 2 and features.shape[0] == size, (
                f"features of shape {features.shape} for a batch of {size}: the first axis "
                "must be the batch"
            )
            assert features.dtype == tf.float32
            assert np.isfinite(features.numpy()).all()

    def test_a_gradient_reaches_every_trainable_variable(self) -> None:
        layer = self.build()
        inputs = _layers.as_inputs(self.batch(salt=1), layer.compute_dtype)
        _layers.trainable_gradients(layer, inputs, np.random.default_rng(self.seed))

    def test_serialization_round_trip_gives_identical_outputs(self) -> None:
        layer = self.build()
        batch = self.batch(salt=2)
        clone = _layers.reloaded(layer)
        self.features(clone, batch)  # builds it
        clone.set_weights(layer.get_weights())
        assert clone.get_config() == layer.get_config()
        _layers.outputs_equal(self.features(clone, batch), self.features(layer, batch), "reloaded")

    def test_mixed_bfloat16(self) -> None:
        """Computes in bfloat16 with float32 variables, trains, and reloads (outside the policy,
        as a saved model is loaded) computing in bfloat16 again."""
        import tensorflow as tf

        layer = self.build("mixed_bfloat16")
        _layers.float_variables_are_float32(layer)
        batch = self.batch(salt=3)
        inputs = _layers.as_inputs(batch, layer.compute_dtype)
        _layers.trainable_gradients(layer, inputs, np.random.default_rng(self.seed))
        features = self.features(layer, batch)
        assert features.dtype == tf.bfloat16, (
            f"features in {features.dtype.name} under mixed_bfloat16: build every sublayer with "
            "dtype=self.dtype_policy"
        )
        assert np.isfinite(_layers.numpy(features)).all()
        clone = _layers.reloaded(layer)
        self.features(clone, batch)
        clone.set_weights(layer.get_weights())
        _layers.outputs_equal(self.features(clone, batch), features, "reloaded under float32")
