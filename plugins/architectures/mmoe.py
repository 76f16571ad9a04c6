"""The ``mmoe`` architecture: experts shared by every task, one softmax gate per task."""

from __future__ import annotations

from typing import Any, ClassVar

import keras

from mtbench.architecture import ModelParts, PerTaskHeads, pooled_features
from mtbench.model import task_seed

from .experts import SoftmaxGate, check_gate_input, mix, plan_experts
from .options import MMoEConfig


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class MMoE(PerTaskHeads):
    """Multi-gate Mixture-of-Experts (Ma et al. 2018): ``N`` experts ``f_1..f_N`` read the input
    representation ``x``; task ``t`` reads their mixture under its own gate,

        g_t(x) = softmax((W_t x + b_t) / temperature),
        y_t = h_t( sum_e g_t(x)_e f_e(x) ).

    Each expert is a whole backbone (``expert_stages=null``: ``x`` is the preprocessed input,
    which must be one tensor) or a copy of the backbone's last ``expert_stages`` stages, after
    its first stages shared by all (``x`` is their output). As in the paper the gates read the
    experts' input ``x``, flattened; when ``x`` is a padded set (a molecule's atom features,
    with a mask: see :mod:`mtbench.architecture`), its mean over the real elements, so that the
    gates, like the backbone, do not depend on the order of the atoms or the padding. Shared:
    the experts and the shared bottom; task ``t``'s own: its gate and head. Each task reads its
    own mixture, so feature-level weighting methods are refused.

    Reference: J. Ma, Z. Zhao, X. Yi, J. Chen, L. Hong, E. H. Chi, "Modeling Task Relationships in
    Multi-task Learning with Multi-gate Mixture-of-Experts", KDD 2018.

    Args:
        parts: What the network assembles (:class:`~mtbench.architecture.ModelParts`).
        preprocessing: The dataset's preprocessing layer, or ``None``.
        **options: :class:`~mtbench_plugins.architectures.options.MMoEConfig`'s fields
            (``num_experts``, ``expert_stages``, ``gate_temperature``).

    Example:
        >>> build_model({"name": "seed_cnn"}, {"name": "dense"}, tasks, example,
        ...             architecture={"name": "mmoe", "num_experts": 3, "expert_stages": 2})
    """

    options_class: ClassVar[type] = MMoEConfig
    architecture: ClassVar[str] = "mmoe"

    def __init__(
        self,
        parts: ModelParts | dict[str, Any],
        preprocessing: keras.layers.Layer | None = None,
        **options: Any,
    ) -> None:
        super().__init__(parts, preprocessing, **options)
        o, parts = self.options, self.parts
        plan = plan_experts(parts, self.architecture, o.expert_stages, check=self.check_stage_count)
        check_gate_input(plan, self.architecture, parts)
        self.bottom = plan.bottom
        self.experts = [plan.make(0) for _ in range(o.num_experts)]
        self.gates = {t: self.make_gate(t) for t in parts.task_names}
        self.make_heads()

    def make_gate(self, task: str) -> keras.layers.Layer:
        """Task ``task``'s gate: expert weights ``[batch, num_experts]`` from ``x``."""
        o = self.options
        return SoftmaxGate(
            o.num_experts,
            o.gate_temperature,
            seed=task_seed(self.parts.seed, task, "mmoe_gate"),
            name=f"{task}_gate",
        )

    def gate(self, task: str, x: Any, training: bool) -> Any:
        """Task ``task``'s expert weights from ``x``, what gates read of the experts' input
        (:func:`~mtbench.architecture.pooled_features`)."""
        return self.gates[task](x)

    def features(self, inputs: Any, training: bool = False) -> dict[str, Any]:
        x = self.preprocess(inputs)
        if self.bottom is not None:
            x = self.bottom(x, training=training)
        outputs = [expert(x, training=training) for expert in self.experts]
        read = pooled_features(x)
        return {t: mix(self.gate(t, read, training), outputs) for t in self.parts.task_names}

    def shared_layers(self) -> list[Any]:
        return [*([self.bottom] if self.bottom is not None else []), *self.experts]

    def task_layers(self, task: str) -> list[Any]:
        return [self.gates[task], self.heads[task]]
