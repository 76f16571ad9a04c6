"""The ``mtan`` architecture: a shared backbone with task-specific soft attention on its stages."""

from __future__ import annotations

from typing import Any, ClassVar

import keras

from mtbench.architecture import (
    ArchitectureError,
    Chain,
    ModelParts,
    PerTaskHeads,
    elements_of,
    features_of,
    features_shape,
    masked_mean,
)
from mtbench_plugins.backbones.building_blocks import FusedBatchNorm, conv


def _dense_or_conv(channels: int, rank: int, name: str, dtype: Any) -> keras.layers.Layer:
    """A 1x1 convolution on feature maps (rank 4), a dense layer on the channels of sets
    (rank 3) and vectors (rank 2)."""
    if rank == 4:
        return keras.layers.Conv2D(channels, 1, name=name, dtype=dtype)
    return keras.layers.Dense(channels, name=name, dtype=dtype)


def _apply(layer: keras.layers.Layer, x: Any, training: bool, elements: Any) -> Any:
    """``layer(x)``; a batch norm on a padded set takes its statistics over the real elements
    (``elements``, ``[batch, elements]``) only."""
    if elements is not None and isinstance(layer, keras.layers.BatchNormalization):
        return layer(x, training=training, mask=elements)
    return layer(x, training=training)


def _rank_name(rank: int) -> str:
    return {4: "feature maps", 3: "sets", 2: "vectors"}[rank]


class AttentionModule(Chain):
    """One task's attention mask on one stage: ``[1x1 conv, BN, ReLU], [1x1 conv, BN, sigmoid]``
    (dense layers on sets and vectors), from the stage's output (concatenated with the task's
    previous attended features, mapped to the same shape) to a mask of the stage's shape.

    Args:
        channels: The stage's channels (its output's last axis).
        rank: 4 for feature maps ``[B, H, W, C]``, 3 for sets ``[B, N, C]``, 2 for vectors
            ``[B, C]``.
    """

    def __init__(self, channels: int, rank: int, **kwargs: Any) -> None:
        super().__init__([], **kwargs)
        dtype = self.dtype_policy
        self.parts = [
            _dense_or_conv(channels, rank, "project1", dtype),
            FusedBatchNorm(name="bn1", dtype=dtype),
            keras.layers.ReLU(name="relu", dtype=dtype),
            _dense_or_conv(channels, rank, "project2", dtype),
            FusedBatchNorm(name="bn2", dtype=dtype),
            keras.layers.Activation("sigmoid", name="sigmoid", dtype=dtype),
        ]

    def call(self, inputs: Any, training: bool = False, elements: Any = None) -> Any:
        """The mask; ``elements`` (``[batch, elements]``) marks the real elements of a padded
        set, over which the batch norms take their statistics."""
        x = inputs
        for layer in self.parts:
            x = _apply(layer, x, training, elements)
        return x


class SharedTransform(Chain):
    """MTAN's shared ``f``: a task's attended features of one stage mapped to the next stage's
    shape: ``[3x3 conv, BN, ReLU]`` then resized (max pooling by an integer factor, bilinear
    otherwise) between feature maps; ``[dense, BN, ReLU]`` on the channels between sets (of the
    same elements) and between vectors; from feature maps to vectors, global average pooling
    first, from sets to vectors the mean over the real elements first.

    Args:
        source: The shape it reads (batch axis ``None``).
        target: The shape it gives.
    """

    def __init__(self, source: tuple, target: tuple, **kwargs: Any) -> None:
        super().__init__([], **kwargs)
        dtype = self.dtype_policy
        self.source, self.target = tuple(source), tuple(target)
        channels = int(target[-1])
        self.resize_to: tuple[int, int] | None = None
        self.pools_elements = len(source) == 3 and len(target) == 2
        layers: list[keras.layers.Layer] = []
        if len(target) == 4:
            layers += [conv(channels, name="conv", dtype=dtype)]
        else:
            if len(source) == 4:
                layers.append(keras.layers.GlobalAveragePooling2D(name="pool", dtype=dtype))
            layers.append(keras.layers.Dense(channels, use_bias=False, name="dense", dtype=dtype))
        layers += [FusedBatchNorm(name="bn", dtype=dtype), keras.layers.ReLU(dtype=dtype)]
        if len(target) == 4 and source[1:3] != target[1:3]:
            (h, w), (th, tw) = source[1:3], target[1:3]
            if h % th == 0 and w % tw == 0:
                layers.append(keras.layers.MaxPooling2D((h // th, w // tw), dtype=dtype))
            else:
                self.resize_to = (int(th), int(tw))
        self.parts = layers

    def build(self, input_shape: Any) -> None:
        if self.pools_elements:
            input_shape = (input_shape[0], input_shape[-1])
        super().build(input_shape)

    def call(self, inputs: Any, training: bool = False, elements: Any = None) -> Any:
        """``elements`` (``[batch, elements]``) marks the real elements of a padded set: the
        mean and the batch norm's statistics are taken over them only."""
        x = inputs
        if self.pools_elements:
            x = keras.ops.mean(x, axis=1) if elements is None else masked_mean(x, elements)
            elements = None
        for layer in self.parts:
            x = _apply(layer, x, training, elements)
        if self.resize_to is not None:
            x = keras.ops.image.resize(x, self.resize_to, interpolation="bilinear")
        return keras.ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0], *self.target[1:])


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class MTAN(PerTaskHeads):
    """Multi-Task Attention Network (Liu et al. 2019): one shared backbone with stages
    ``s_1..s_n``; every task ``t`` has a soft-attention module ``g^t_j`` on every stage, which
    selects features of the stage's output ``s_j`` with an element-wise mask,

        a^t_1 = g^t_1(s_1) * s_1,
        a^t_j = g^t_j([s_j ; f_j(a^t_{j-1})]) * s_j,      y_t = h_t(a^t_n),

    where ``g`` is ``[1x1 conv, BN, ReLU, 1x1 conv, BN, sigmoid]`` (dense layers on set and
    vector stages) and ``f_j``, shared by the tasks, maps the previous attended features to the
    shape of ``s_j`` (:class:`SharedTransform`). The mask reads the stage output it gates, as in
    the authors' Wide-ResNet MTAN (``visual_decathlon/model_wrn_mtan.py`` in lorenmt/mtan); their
    SegNet MTAN, and LibMTL's, read a block's first layer and gate its output, which the stage
    interface (stage outputs only) does not expose. Shared: the backbone and the ``f_j``; task
    ``t``'s own: its attention modules and head. Needs a backbone with stages whose outputs (the
    features of dict states, see :mod:`mtbench.architecture`) are feature maps ``[B, H, W, C]``,
    sets ``[B, N, C]`` (a molecule's atoms: with a mask, the batch norms and the pooling to
    vectors use the real elements only, and padded elements stay 0) or vectors ``[B, C]``; the
    backbone runs on unattended, as in the paper. Each task reads its own representation, so
    feature-level weighting methods are refused.

    Reference: S. Liu, E. Johns, A. J. Davison, "End-to-End Multi-Task Learning with
    Attention", CVPR 2019.

    Args:
        parts: What the network assembles (:class:`~mtbench.architecture.ModelParts`).
        preprocessing: The dataset's preprocessing layer, or ``None``.

    Example:
        >>> build_model({"name": "resnet9", "width": 16}, {"name": "dense"}, tasks, example,
        ...             architecture={"name": "mtan"})
    """

    architecture: ClassVar[str] = "mtan"

    def __init__(
        self,
        parts: ModelParts | dict[str, Any],
        preprocessing: keras.layers.Layer | None = None,
        **options: Any,
    ) -> None:
        super().__init__(parts, preprocessing, **options)
        stages = self.parts.stages(self.architecture)
        shapes = [tuple(features_shape(s.output_shape)) for s in stages]
        backbone = self.parts.backbone["name"]
        for stage, shape in zip(stages, shapes, strict=True):
            if len(shape) not in (2, 3, 4):
                raise ArchitectureError(
                    f"architecture=mtan attends to every stage's output, which must be feature "
                    f"maps [batch, height, width, channels], sets [batch, elements, channels] or "
                    f"vectors [batch, channels]; stage '{stage.name}' of backbone '{backbone}' "
                    f"gives {shape}"
                )
        for j in range(1, len(shapes)):
            before, after = shapes[j - 1], shapes[j]
            mappable = len(after) == 2 or (
                len(before) == len(after) and (len(after) == 4 or before[1] == after[1])
            )
            if not mappable:
                raise ArchitectureError(
                    f"architecture=mtan maps each stage's attended features to the next stage's "
                    f"shape; stage '{stages[j - 1].name}' of backbone '{backbone}' gives "
                    f"{_rank_name(len(before))} {before} and the next one "
                    f"{_rank_name(len(after))} {after}, which it cannot map (it maps feature "
                    "maps to feature maps, sets to sets of as many elements, and anything to "
                    "vectors)"
                )
        self.stage_layers = [s.layer for s in stages]
        self.transforms = [
            SharedTransform(before, after, name=f"shared_transform{j + 2}")
            for j, (before, after) in enumerate(zip(shapes, shapes[1:], strict=False))
        ]
        self.attention = [  # task-major
            AttentionModule(int(shape[-1]), len(shape), name=f"{t}_attention{j + 1}")
            for t in self.parts.task_names
            for j, shape in enumerate(shapes)
        ]
        self.make_heads()

    def features(self, inputs: Any, training: bool = False) -> dict[str, Any]:
        x = self.preprocess(inputs)
        outputs, masks = [], []
        for stage in self.stage_layers:
            x = stage(x, training=training)
            outputs.append(features_of(x))
            masks.append(elements_of(x))

        def apply(layer: keras.layers.Layer, value: Any, mask: Any) -> Any:
            if mask is None:
                return layer(value, training=training)
            return layer(value, training=training, elements=mask)

        n, attended = len(outputs), {}
        for i, t in enumerate(self.parts.task_names):
            modules = self.attention[i * n : (i + 1) * n]
            a = apply(modules[0], outputs[0], masks[0]) * outputs[0]
            for j in range(1, n):
                carried = apply(self.transforms[j - 1], a, masks[j - 1])
                joined = keras.ops.concatenate([outputs[j], carried], axis=-1)
                a = apply(modules[j], joined, masks[j]) * outputs[j]
            attended[t] = a
        return attended

    def shared_layers(self) -> list[Any]:
        return [*self.stage_layers, *self.transforms]

    def task_layers(self, task: str) -> list[Any]:
        n, i = len(self.stage_layers), self.parts.task_names.index(task)
        return [*self.attention[i * n : (i + 1) * n], self.heads[task]]
