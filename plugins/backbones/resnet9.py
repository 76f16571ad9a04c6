"""The ``resnet9`` backbone: the fast ResNet-9 of DAWNBench-style CIFAR training."""

from __future__ import annotations

from typing import Any

import keras

from mtbench.architecture import Chain

from .building_blocks import FusedBatchNorm, build_in_sequence, conv
from .options import GlobalPool


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class ResNet9(keras.layers.Layer):
    """ResNet-9 (D. Page's DAWNBench CIFAR network), ``w`` = ``width``:

    - prep: conv 3x3 to ``w`` channels
    - layer1: conv to ``2w``, max-pool 2, plus a residual of two convs
    - layer2: conv to ``4w``, max-pool 2
    - layer3: conv to ``8w``, max-pool 2, plus a residual of two convs
    - global max (or average) pooling: ``8w`` features.

    Every conv is a bias-free 3x3 convolution followed by batch normalization and ReLU; where a
    max-pool follows the convolution it is applied before the batch norm (as airbench does),
    so that normalization and ReLU run on a quarter of the activations. The two orders differ
    only through the batch statistics (ReLU commutes with max-pooling; a batch norm with
    positive scale does too).

    Trainable parameters: 6,568,000 at ``width=64``, 1,643,552 at ``width=32``.

    Stages (:meth:`stages`, see :mod:`mtbench.architecture`): prep; layer1 with its residual;
    layer2; layer3 with its residual and the global pooling.

    Args:
        width: Channels of the prep convolution.
        global_pool: ``"max"`` or ``"avg"`` (a :class:`GlobalPool` or its value).

    Example:
        >>> ResNet9(width=16)(keras.ops.zeros((8, 32, 32, 3))).shape
        (8, 128)
    """

    def __init__(
        self, width: int = 64, global_pool: GlobalPool | str = "max", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"backbone.width={width!r} must be a positive integer")
        try:
            global_pool = GlobalPool(global_pool).value
        except ValueError:
            choices = ", ".join(repr(member.value) for member in GlobalPool)
            raise ValueError(
                f"backbone.global_pool={global_pool!r}; choose one of {choices}"
            ) from None
        self.width = width
        self.global_pool = global_pool
        dtype = self.dtype_policy
        prep = _ConvBlock(width, pool=False, name="prep", dtype=dtype)
        layer1 = _ConvBlock(2 * width, pool=True, name="layer1", dtype=dtype)
        res1 = _Residual(2 * width, name="res1", dtype=dtype)
        layer2 = _ConvBlock(4 * width, pool=True, name="layer2", dtype=dtype)
        layer3 = _ConvBlock(8 * width, pool=True, name="layer3", dtype=dtype)
        res3 = _Residual(8 * width, name="res3", dtype=dtype)
        pool = (
            keras.layers.GlobalMaxPooling2D
            if global_pool == "max"
            else keras.layers.GlobalAveragePooling2D
        )
        self.stage_layers = [
            Chain([prep], name="stage_prep", dtype=dtype),
            Chain([layer1, res1], name="stage1", dtype=dtype),
            Chain([layer2], name="stage2", dtype=dtype),
            Chain([layer3, res3, pool(name="pool", dtype=dtype)], name="stage3", dtype=dtype),
        ]

    def stages(self) -> list[keras.layers.Layer]:
        """prep, layer1 with its residual, layer2, layer3 with its residual and the global
        pooling; their composition is this backbone."""
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
        return (input_shape[0], 8 * self.width)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(width=self.width, global_pool=self.global_pool)
        return config


class _ConvBlock(keras.layers.Layer):
    """conv 3x3 -> [max-pool 2] -> batch norm -> ReLU."""

    def __init__(self, filters: int, pool: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.conv = conv(filters, name="conv", dtype=dtype)
        self.pool = keras.layers.MaxPooling2D(2, name="pool", dtype=dtype) if pool else None
        self.bn = FusedBatchNorm(name="bn", dtype=dtype)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.conv.build(input_shape)
        self.bn.build(self.compute_output_shape(input_shape))
        self.built = True

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        shape = self.conv.compute_output_shape(input_shape)
        return self.pool.compute_output_shape(shape) if self.pool is not None else shape

    def call(self, inputs: Any, training: bool = False) -> Any:
        x = self.conv(inputs)
        if self.pool is not None:
            x = self.pool(x)
        return keras.ops.relu(self.bn(x, training=training))


class _Residual(keras.layers.Layer):
    """``x + block2(block1(x))`` with two conv blocks at the same width."""

    def __init__(self, filters: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.block1 = _ConvBlock(filters, pool=False, name="block1", dtype=self.dtype_policy)
        self.block2 = _ConvBlock(filters, pool=False, name="block2", dtype=self.dtype_policy)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.block1.build(input_shape)
        self.block2.build(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def call(self, inputs: Any, training: bool = False) -> Any:
        x = self.block2(self.block1(inputs, training=training), training=training)
        return inputs + x
