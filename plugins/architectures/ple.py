"""The ``ple`` architecture: stacked levels of shared and task-specific experts."""

from __future__ import annotations

from typing import Any, ClassVar

import keras

from mtbench.architecture import ModelParts, PerTaskHeads, pooled_features
from mtbench.model import task_seed

from .experts import SoftmaxGate, check_gate_input, mix, plan_experts
from .options import PLEConfig


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class PLE(PerTaskHeads):
    """Progressive Layered Extraction (Tang et al. 2020): ``L`` stacked extraction levels, each
    with ``S`` shared experts and ``K`` experts of each task. At level ``l``, task ``t``'s
    experts read ``t``'s input ``u_t``, the shared experts the shared input ``u_s`` (at the first
    level both are the input representation ``x``), and

        u_t <- sum_e softmax(W_t u_t / temperature)_e [shared experts(u_s), t's experts(u_t)]_e
        u_s <- sum_e softmax(W_s u_s / temperature)_e [shared experts(u_s), every task's
               experts(u_task)]_e          (not after the last level)

    and task ``t`` reads ``y_t = h_t(u_t)`` after the last level. The levels cover the
    backbone's last ``expert_stages`` stages (``null``: all), split into ``num_levels``
    consecutive groups; the stages before them are a bottom shared by all. With one level this is
    CGC (architecture ``cgc``). Gates read their input as ``mmoe``'s do (flattened; a padded set
    averaged over its real elements); between levels the gated sums mix the features of stage
    states and carry their context over (:mod:`mtbench.architecture`).

    Task ``t``'s own variables are those only its loss reaches: its experts and gate of the last
    level, its gate of the level before, and its head. Everything else (the bottom, the shared
    experts and gates, and task experts of earlier levels, which the shared gate mixes into every
    task's path) is shared. Each task reads its own representation, so feature-level weighting
    methods are refused.

    Reference: H. Tang, J. Liu, M. Zhao, X. Gong, "Progressive Layered Extraction (PLE): A Novel
    Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020.

    Args:
        parts: What the network assembles (:class:`~mtbench.architecture.ModelParts`).
        preprocessing: The dataset's preprocessing layer, or ``None``.
        **options: :class:`~mtbench_plugins.architectures.options.PLEConfig`'s fields.

    Example:
        >>> build_model({"name": "resnet9", "width": 16}, {"name": "dense"}, tasks, example,
        ...             architecture={"name": "ple", "num_levels": 2, "expert_stages": 2})
    """

    options_class: ClassVar[type] = PLEConfig
    architecture: ClassVar[str] = "ple"

    def __init__(
        self,
        parts: ModelParts | dict[str, Any],
        preprocessing: keras.layers.Layer | None = None,
        **options: Any,
    ) -> None:
        super().__init__(parts, preprocessing, **options)
        o, parts, tasks = self.options, self.parts, self.parts.task_names
        levels = self.num_levels
        plan = plan_experts(
            parts, self.architecture, o.expert_stages, levels, check=self.check_stage_count
        )
        check_gate_input(plan, self.architecture, parts)
        self.bottom = plan.bottom
        # flat lists, level-major (then task-major): see _shared_expert etc.
        self.shared_experts, self.task_experts, self.task_gates, self.shared_gates = [], [], [], []
        temperature = o.gate_temperature
        for level in range(levels):
            self.shared_experts += [plan.make(level) for _ in range(o.shared_experts)]
            for _ in tasks:
                self.task_experts += [plan.make(level) for _ in range(o.task_experts)]
            for t in tasks:
                self.task_gates.append(
                    SoftmaxGate(
                        o.shared_experts + o.task_experts,
                        temperature,
                        seed=task_seed(parts.seed, t, f"ple_gate{level + 1}"),
                        name=f"{t}_gate{level + 1}",
                    )
                )
            if level < levels - 1:
                self.shared_gates.append(
                    SoftmaxGate(
                        o.shared_experts + len(tasks) * o.task_experts,
                        temperature,
                        name=f"shared_gate{level + 1}",
                    )
                )
        self.make_heads()

    @property
    def num_levels(self) -> int:
        return int(self.options.num_levels)

    # ------------------------------------------------------------------------------ lookups
    def _shared(self, level: int) -> list[keras.layers.Layer]:
        count = self.options.shared_experts
        return self.shared_experts[level * count : (level + 1) * count]

    def _own(self, level: int, task: int) -> list[keras.layers.Layer]:
        count, tasks = self.options.task_experts, len(self.parts.tasks)
        start = (level * tasks + task) * count
        return self.task_experts[start : start + count]

    def _gate(self, level: int, task: int) -> SoftmaxGate:
        return self.task_gates[level * len(self.parts.tasks) + task]

    # ------------------------------------------------------------------------------ forward
    def features(self, inputs: Any, training: bool = False) -> dict[str, Any]:
        x = self.preprocess(inputs)
        if self.bottom is not None:
            x = self.bottom(x, training=training)
        tasks = self.parts.task_names
        shared_input, task_inputs = x, [x] * len(tasks)
        for level in range(self.num_levels):
            shared = [e(shared_input, training=training) for e in self._shared(level)]
            own = [
                [e(task_inputs[i], training=training) for e in self._own(level, i)]
                for i in range(len(tasks))
            ]
            if level < self.num_levels - 1:
                everything = shared + [out for outs in own for out in outs]
                weights = self.shared_gates[level](pooled_features(shared_input))
                shared_input = mix(weights, everything)
            task_inputs = [
                mix(self._gate(level, i)(pooled_features(task_inputs[i])), shared + own[i])
                for i in range(len(tasks))
            ]
        return dict(zip(tasks, task_inputs, strict=True))

    # ----------------------------------------------------------------------------- sharing
    def shared_layers(self) -> list[Any]:
        last, tasks = self.num_levels - 1, len(self.parts.tasks)
        earlier_own = [
            e for level in range(last) for i in range(tasks) for e in self._own(level, i)
        ]
        earlier_gates = [self._gate(level, i) for level in range(last - 1) for i in range(tasks)]
        return [
            *([self.bottom] if self.bottom is not None else []),
            *self.shared_experts,
            *earlier_own,
            *earlier_gates,
            *self.shared_gates,
        ]

    def task_layers(self, task: str) -> list[Any]:
        i, last = self.parts.task_names.index(task), self.num_levels - 1
        gates = [self._gate(last - 1, i)] if last >= 1 else []
        return [*self._own(last, i), self._gate(last, i), *gates, self.heads[task]]
