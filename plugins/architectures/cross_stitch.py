"""The ``cross_stitch`` architecture: one backbone per task, linearly mixed after every stage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import keras
import numpy as np

from mtbench.architecture import ModelParts, PerTaskHeads, features_of, with_features

from .options import CrossStitchConfig


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class CrossStitchUnit(keras.layers.Layer):
    """``x'_t = sum_s alpha[t, s] x_s`` over the ``T`` tasks' activations of one stage, with a
    learned ``T x T`` matrix ``alpha`` initialised to ``self_weight`` on the diagonal and
    ``(1 - self_weight) / (T - 1)`` elsewhere.

    Args:
        tasks: ``T``.
        self_weight: The initial diagonal.

    Example:
        >>> unit = CrossStitchUnit(2, 0.9)
        >>> [y.shape for y in unit([keras.ops.ones((4, 8)), keras.ops.zeros((4, 8))])]
        [(4, 8), (4, 8)]
    """

    def __init__(self, tasks: int, self_weight: float = 0.9, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tasks, self.self_weight = int(tasks), float(self_weight)
        other = (1.0 - self.self_weight) / (self.tasks - 1) if self.tasks > 1 else 0.0
        initial = np.full((self.tasks, self.tasks), other, np.float32)
        np.fill_diagonal(initial, self.self_weight)
        self.alpha = self.add_weight(
            shape=(self.tasks, self.tasks),
            initializer=keras.initializers.Constant(initial),
            name="alpha",
        )

    def call(self, inputs: Sequence[Any]) -> list[Any]:
        inputs = list(inputs)
        alpha = keras.ops.cast(self.alpha, inputs[0].dtype)
        # A weighted sum of the T inputs per task, not an einsum over them stacked: TensorFlow
        # runs "ts,s...->t..." forward and backward 25-33x slower on CPU for two tasks (5x for
        # eight), which made a cross-stitch step 27-32x a hard-sharing one on seed_cnn
        # (tests/benchmarks/architecture_ratios.py); the gradient of alpha keeps its static
        # T x T shape (weighting methods stack per-task gradients)
        mixed = []
        for t in range(self.tasks):
            y = alpha[t, 0] * inputs[0]
            for s in range(1, self.tasks):
                y = y + alpha[t, s] * inputs[s]
            mixed.append(y)
        return mixed

    def compute_output_shape(self, input_shape: Sequence[Any]) -> list[Any]:
        return list(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(tasks=self.tasks, self_weight=self.self_weight)
        return config


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class CrossStitch(PerTaskHeads):
    """Cross-stitch networks (Misra et al. 2016): one copy of the backbone per task, its stages
    ``f^t_1..f^t_n``; after every stage a cross-stitch unit mixes the tasks' activations,

        x^t_0 = x,   x^t_j = sum_s alpha_j[t, s] f^s_j(x^s_{j-1}),   y_t = h_t(x^t_n),

    with ``alpha_j`` a learned ``T x T`` matrix per stage, initialised near the identity as in the
    paper (``self_weight`` on the diagonal, 0.9 by default; the rest of each row shared equally:
    the paper's (alpha_S, alpha_D) = (0.9, 0.1) for two tasks). Every copy and unit reaches every
    task's loss through the mixing, so all are shared (the model has ``T`` times the backbone's
    parameters); task ``t``'s own: its head. Needs a backbone with stages; a stage that passes a
    dict state is stitched by its features, each copy keeping its own context (the same in
    every copy: see :mod:`mtbench.architecture`). Each task reads its own representation, so
    feature-level weighting methods are refused.

    Reference: I. Misra, A. Shrivastava, A. Gupta, M. Hebert, "Cross-stitch Networks for
    Multi-task Learning", CVPR 2016.

    Args:
        parts: What the network assembles (:class:`~mtbench.architecture.ModelParts`).
        preprocessing: The dataset's preprocessing layer, or ``None``.
        **options: :class:`~mtbench_plugins.architectures.options.CrossStitchConfig`'s fields
            (``self_weight``).

    Example:
        >>> build_model({"name": "resnet", "depth": 20}, {"name": "dense"}, tasks, example,
        ...             architecture={"name": "cross_stitch"})
    """

    options_class: ClassVar[type] = CrossStitchConfig
    architecture: ClassVar[str] = "cross_stitch"

    def __init__(
        self,
        parts: ModelParts | dict[str, Any],
        preprocessing: keras.layers.Layer | None = None,
        **options: Any,
    ) -> None:
        super().__init__(parts, preprocessing, **options)
        parts, count = self.parts, len(self.parts.tasks)
        columns = [parts.stages(self.architecture) for _ in range(count)]  # task-major
        self.num_stages = len(columns[0])
        self.stage_layers = [stage.layer for column in columns for stage in column]
        self.units = [
            CrossStitchUnit(count, self.options.self_weight, name=f"cross_stitch{j + 1}")
            for j in range(self.num_stages)
        ]
        self.make_heads()

    def features(self, inputs: Any, training: bool = False) -> dict[str, Any]:
        x = self.preprocess(inputs)
        tasks = self.parts.task_names
        activations = [x] * len(tasks)
        for j, unit in enumerate(self.units):
            outputs = [
                self.stage_layers[t * self.num_stages + j](activations[t], training=training)
                for t in range(len(tasks))
            ]
            mixed = unit([features_of(o) for o in outputs])
            activations = [with_features(o, m) for o, m in zip(outputs, mixed, strict=True)]
        return dict(zip(tasks, activations, strict=True))

    def shared_layers(self) -> list[Any]:
        return [*self.stage_layers, *self.units]

    def task_layers(self, task: str) -> list[Any]:
        return [self.heads[task]]
