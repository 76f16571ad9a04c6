"""The ``wide_resnet`` backbone: WRN-d-k of Zagoruyko and Komodakis (2016)."""

from __future__ import annotations

from typing import Any

import keras

from mtbench.architecture import Chain

from .building_blocks import FusedBatchNorm, build_in_sequence, conv


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class WideResNet(keras.layers.Layer):
    """WRN-d-k: a 3x3 convolution to 16 channels, then three stages of ``(d-4)/6`` pre-activation
    blocks (BN-ReLU-conv3x3-[dropout]-BN-ReLU-conv3x3) at ``16k``, ``32k`` and ``64k`` channels,
    the last two starting with stride 2, and a final BN-ReLU and global average pooling.

    Where a block changes the shape, its shortcut is a 1x1 convolution of the block's activated
    input (as in the authors' code). Convolutions are bias-free. Returns ``64k`` features.
    Stages (:meth:`stages`, see :mod:`mtbench.architecture`): the stem convolution, then the
    three stages; the last ends with the final batch norm, ReLU and global pooling.
    Trainable parameters without a classifier: WRN-16-4 2,746,320; WRN-28-10 36,472,784, which
    with a 10-class classifier is 36,479,194 (the paper: 2.7M and 36.5M).

    Args:
        depth: ``d``, with ``d - 4`` divisible by 6 and ``d >= 10``.
        widen_factor: ``k >= 1``.
        dropout: Dropout rate inside each block, in ``[0, 1)``.

    Example:
        >>> WideResNet(depth=16, widen_factor=4)(keras.ops.zeros((8, 32, 32, 3))).shape
        (8, 256)
    """

    def __init__(
        self, depth: int = 16, widen_factor: int = 4, dropout: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(
                f"backbone.depth={depth} is not a WRN depth: it needs (depth - 4) divisible by 6 "
                "and depth >= 10 (10, 16, 22, 28, 40, ...)"
            )
        if widen_factor < 1:
            raise ValueError(f"backbone.widen_factor={widen_factor} must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"backbone.dropout={dropout} must be in [0, 1)")
        self.depth = depth
        self.widen_factor = widen_factor
        self.dropout = dropout
        blocks_per_stage = (depth - 4) // 6
        dtype = self.dtype_policy
        stem = conv(16, name="stem_conv", dtype=dtype)
        stage_blocks: list[list[keras.layers.Layer]] = []
        channels = 16
        for stage in range(3):
            filters = 16 * widen_factor * 2**stage
            blocks = []
            for index in range(blocks_per_stage):
                strides = 2 if stage > 0 and index == 0 else 1
                blocks.append(
                    _WideBlock(
                        channels,
                        filters,
                        strides,
                        dropout,
                        name=f"stage{stage + 1}_{index + 1}",
                        dtype=dtype,
                    )
                )
                channels = filters
            stage_blocks.append(blocks)
        self.num_features = channels
        stage_blocks[-1] += [
            FusedBatchNorm(name="final_bn", dtype=dtype),
            keras.layers.ReLU(name="final_relu", dtype=dtype),
            keras.layers.GlobalAveragePooling2D(name="pool", dtype=dtype),
        ]
        self.stage_layers = [Chain([stem], name="stem", dtype=dtype)] + [
            Chain(blocks, name=f"stage{index}", dtype=dtype)
            for index, blocks in enumerate(stage_blocks, start=1)
        ]

    def stages(self) -> list[keras.layers.Layer]:
        """The stem convolution, then the three stages (the last ends with the final batch
        norm, ReLU and global pooling); their composition is this backbone."""
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
        return (input_shape[0], self.num_features)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(depth=self.depth, widen_factor=self.widen_factor, dropout=self.dropout)
        return config


class _WideBlock(keras.layers.Layer):
    """A pre-activation basic block with optional dropout between its convolutions."""

    def __init__(
        self, in_channels: int, filters: int, strides: int, dropout: float, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.bn1 = FusedBatchNorm(name="bn1", dtype=dtype)
        self.conv1 = conv(filters, strides=strides, name="conv1", dtype=dtype)
        self.bn2 = FusedBatchNorm(name="bn2", dtype=dtype)
        self.drop = (
            keras.layers.Dropout(dropout, name="dropout", dtype=dtype) if dropout > 0 else None
        )
        self.conv2 = conv(filters, name="conv2", dtype=dtype)
        self.project = strides != 1 or in_channels != filters
        if self.project:
            self.shortcut_conv = conv(filters, 1, strides, name="shortcut_conv", dtype=dtype)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.bn1.build(input_shape)
        self.conv1.build(input_shape)
        shape = self.conv1.compute_output_shape(input_shape)
        self.bn2.build(shape)
        self.conv2.build(shape)
        if self.project:
            self.shortcut_conv.build(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return self.conv1.compute_output_shape(input_shape)

    def call(self, inputs: Any, training: bool = False) -> Any:
        activated = keras.ops.relu(self.bn1(inputs, training=training))
        shortcut = self.shortcut_conv(activated) if self.project else inputs
        x = keras.ops.relu(self.bn2(self.conv1(activated), training=training))
        if self.drop is not None:
            x = self.drop(x, training=training)
        return self.conv2(x) + shortcut
