"""The ``resnet`` backbone: CIFAR ResNets (He et al. 2016) and ResNet-18 with a CIFAR stem."""

from __future__ import annotations

from typing import Any

import keras

from mtbench.architecture import Chain

from .building_blocks import FusedBatchNorm, build_in_sequence, conv

# depth -> (blocks per stage, default width of the first stage)
VARIANTS: dict[int, tuple[tuple[int, ...], int]] = {
    18: ((2, 2, 2, 2), 64),
    20: ((3, 3, 3), 16),
    32: ((5, 5, 5), 16),
    44: ((7, 7, 7), 16),
    56: ((9, 9, 9), 16),
    110: ((18, 18, 18), 16),
}


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class ResNet(keras.layers.Layer):
    """ResNet with basic blocks (two 3x3 convolutions, post-activation) for 32x32 images.

    - CIFAR ResNets (depth ``6n+2``): a 3x3 convolution to ``width`` channels, then three stages
      of ``n`` blocks at ``width``, ``2*width`` and ``4*width`` channels (the last two start with
      stride 2). As in the paper's CIFAR experiments, shortcuts are parameter-free ("option A"):
      subsampled and zero-padded to the new channel count.
    - ResNet-18: the ImageNet network with the usual CIFAR stem (a 3x3 stride-1 convolution and
      no max-pool), four stages of two blocks at 64, 128, 256 and 512 channels, and 1x1
      convolution shortcuts where the shape changes ("option B").

    Every convolution is bias-free and followed by batch normalization. The output is the global
    average of the last stage: ``4*width`` features (ResNet-18: ``8*width``).
    Trainable parameters with the default widths, without a classifier: ResNet-20 269,072,
    ResNet-32 463,504, ResNet-56 852,368, ResNet-18 11,168,832. With a 10-class classifier
    these are the literature's 0.27M, 0.46M, 0.85M (He et al.) and 11.2M (11,173,962).

    Stages (:meth:`stages`, see :mod:`mtbench.architecture`): the stem (convolution, batch norm,
    ReLU), then one per width: three for the CIFAR ResNets, four for ResNet-18; the last ends with
    the global average pooling.

    Args:
        depth: One of 18, 20, 32, 44, 56, 110.
        width: Channels of the first stage (``None``: 16, or 64 for ResNet-18).

    Example:
        >>> ResNet(depth=20)(keras.ops.zeros((8, 32, 32, 3))).shape
        (8, 64)
    """

    def __init__(self, depth: int = 20, width: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if depth not in VARIANTS:
            raise ValueError(
                f"backbone.depth={depth} is not a ResNet variant; choose one of "
                f"{', '.join(map(str, VARIANTS))}"
            )
        if width is not None and (not isinstance(width, int) or width < 1):
            raise ValueError(f"backbone.width={width!r} must be a positive integer or null")
        self.depth = depth
        self.width = width
        stages, default_width = VARIANTS[depth]
        base = width if width is not None else default_width
        shortcut = "projection" if depth == 18 else "pad"
        dtype = self.dtype_policy
        stem = [
            conv(base, name="stem_conv", dtype=dtype),
            FusedBatchNorm(name="stem_bn", dtype=dtype),
            keras.layers.ReLU(name="stem_relu", dtype=dtype),
        ]
        stage_blocks: list[list[keras.layers.Layer]] = []
        channels = base
        for stage, count in enumerate(stages):
            filters = base * 2**stage
            blocks = []
            for index in range(count):
                strides = 2 if stage > 0 and index == 0 else 1
                blocks.append(
                    _BasicBlock(
                        channels,
                        filters,
                        strides,
                        shortcut,
                        name=f"stage{stage + 1}_{index + 1}",
                        dtype=dtype,
                    )
                )
                channels = filters
            stage_blocks.append(blocks)
        self.num_features = channels
        stage_blocks[-1].append(keras.layers.GlobalAveragePooling2D(name="pool", dtype=dtype))
        self.stage_layers = [Chain(stem, name="stem", dtype=dtype)] + [
            Chain(blocks, name=f"stage{index}", dtype=dtype)
            for index, blocks in enumerate(stage_blocks, start=1)
        ]

    def stages(self) -> list[keras.layers.Layer]:
        """The stem, then one stage per width (the last ends with the global pooling); their
        composition is this backbone."""
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
        config.update(depth=self.depth, width=self.width)
        return config


class _BasicBlock(keras.layers.Layer):
    """conv-BN-ReLU-conv-BN, plus the shortcut, then ReLU (He et al. 2016, figure 2)."""

    def __init__(
        self, in_channels: int, filters: int, strides: int, shortcut: str, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.conv1 = conv(filters, strides=strides, name="conv1", dtype=dtype)
        self.bn1 = FusedBatchNorm(name="bn1", dtype=dtype)
        self.conv2 = conv(filters, name="conv2", dtype=dtype)
        self.bn2 = FusedBatchNorm(name="bn2", dtype=dtype)
        self.strides = strides
        self.extra_channels = filters - in_channels
        self.reshapes = strides != 1 or in_channels != filters
        self.project = shortcut == "projection" and self.reshapes
        if self.project:
            self.shortcut_conv = conv(filters, 1, strides, name="shortcut_conv", dtype=dtype)
            self.shortcut_bn = FusedBatchNorm(name="shortcut_bn", dtype=dtype)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.conv1.build(input_shape)
        shape = self.conv1.compute_output_shape(input_shape)
        for layer in (self.bn1, self.conv2, self.bn2):
            layer.build(shape)
        if self.project:
            self.shortcut_conv.build(input_shape)
            self.shortcut_bn.build(shape)
        self.built = True

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return self.conv1.compute_output_shape(input_shape)

    def call(self, inputs: Any, training: bool = False) -> Any:
        x = keras.ops.relu(self.bn1(self.conv1(inputs), training=training))
        x = self.bn2(self.conv2(x), training=training)
        return keras.ops.relu(x + self._shortcut(inputs, training))

    def _shortcut(self, inputs: Any, training: bool) -> Any:
        if self.project:
            return self.shortcut_bn(self.shortcut_conv(inputs), training=training)
        if not self.reshapes:
            return inputs
        subsampled = inputs[:, :: self.strides, :: self.strides, :]
        return keras.ops.pad(subsampled, [(0, 0), (0, 0), (0, 0), (0, self.extra_channels)])
