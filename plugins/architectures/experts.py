"""What the mixture-of-experts architectures (``mmoe``, ``cgc``, ``ple``, ``dselect_k``) share:
experts over a shared bottom, softmax gates, and the gated sum of the experts' outputs.

Experts read and return stage states (:mod:`mtbench.architecture`): one tensor, or a dict whose
``features`` the gated sum mixes (its context is carried over). Gates read
:func:`~mtbench.architecture.pooled_features` of the experts' input: the features, averaged over
the real elements of a padded set (a molecule's atoms), flattened by the gate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras

from mtbench.architecture import (
    FEATURES,
    ArchitectureError,
    Chain,
    ModelParts,
    Stage,
    features_of,
    with_features,
)


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class SoftmaxGate(keras.layers.Layer):
    """``g(x) = softmax((W flatten(x) + b) / temperature)``: a weight per expert and example,
    computed in float32.

    Args:
        experts: How many experts the gate weighs.
        temperature: Divides the logits (> 0).
        seed: Seeds the initialiser of ``W`` (``None``: Keras's unseeded one).

    Example:
        >>> SoftmaxGate(4, 1.0)(keras.ops.zeros((8, 32, 32, 3))).shape
        (8, 4)
    """

    def __init__(
        self, experts: int, temperature: float = 1.0, seed: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.experts = int(experts)
        self.temperature = float(temperature)
        self.seed = seed
        dtype = self.dtype_policy
        self.flatten = keras.layers.Flatten(name="flatten", dtype=dtype)
        self.logits = keras.layers.Dense(
            self.experts,
            kernel_initializer=keras.initializers.GlorotUniform(seed),
            name="logits",
            dtype=dtype,
        )

    def build(self, input_shape: Any) -> None:
        self.flatten.build(input_shape)
        self.logits.build(self.flatten.compute_output_shape(input_shape))
        self.built = True

    def call(self, inputs: Any) -> Any:
        logits = keras.ops.cast(self.logits(self.flatten(inputs)), "float32")
        return keras.ops.softmax(logits / self.temperature, axis=-1)

    def compute_output_shape(self, input_shape: Any) -> tuple[int | None, ...]:
        return (input_shape[0], self.experts)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(experts=self.experts, temperature=self.temperature, seed=self.seed)
        return config


def mix(weights: Any, outputs: Sequence[Any]) -> Any:
    """``sum_e weights[:, e] * outputs[e]``: the experts' outputs (any shape, batch first)
    weighted per example, in the outputs' dtype. Outputs that are dict states are mixed by their
    features; the context of the first is carried over (every expert carries the same)."""
    stacked = keras.ops.stack([features_of(o) for o in outputs], axis=1)  # [B, E, ...]
    shape = (-1, len(outputs)) + (1,) * (len(stacked.shape) - 2)
    w = keras.ops.reshape(keras.ops.cast(weights, stacked.dtype), shape)
    return with_features(outputs[0], keras.ops.sum(stacked * w, axis=1))


@dataclass
class ExpertPlan:
    """Where experts sit in the backbone: after a shared ``bottom`` (its first stages, or
    nothing), each level's experts cover a consecutive group of the remaining stages (or, with
    no groups, each expert is a whole backbone).

    Attributes:
        bottom: The stages every expert of the first level reads, or ``None``.
        level_inputs: The shape each level's experts (and gates) read.
        make: ``make(level)`` creates a new expert of that level (a new backbone instance each
            time, so experts share nothing).
    """

    bottom: Chain | None
    level_inputs: list[Any]
    make: Callable[[int], keras.layers.Layer]


def plan_experts(
    parts: ModelParts,
    architecture: str,
    expert_stages: int | None,
    levels: int = 1,
    *,
    check: Callable[[str, int, Sequence[Stage]], None],
) -> ExpertPlan:
    """The experts of ``levels`` stacked levels over the backbone's last ``expert_stages``
    stages (``None``: all of them; with one level, whole backbones, which needs no stages).

    Each level takes a consecutive group of those stages, the first levels one more stage when
    they do not divide evenly. ``check(option, value, stages)`` refuses an out-of-range option.
    """
    if expert_stages is None and levels == 1:
        return ExpertPlan(None, [parts.input_shape], lambda level: parts.make_backbone())
    stages = parts.stages(architecture)
    covered = len(stages) if expert_stages is None else expert_stages
    check("expert_stages", covered, stages)
    if levels > covered:
        raise ArchitectureError(
            f"architecture.num_levels={levels} is out of range: each level needs at least one "
            f"of the {covered} stages the experts cover (backbone "
            f"'{parts.backbone['name']}' has {len(stages)}): it must be <= {covered}"
        )
    first = len(stages) - covered
    bottom = Chain([s.layer for s in stages[:first]], name="bottom") if first else None
    sizes = [covered // levels + (1 if i < covered % levels else 0) for i in range(levels)]
    groups, start = [], first
    for size in sizes:
        groups.append(range(start, start + size))
        start += size

    def make(level: int) -> keras.layers.Layer:
        fresh = parts.stages(architecture)
        return Chain([fresh[i].layer for i in groups[level]], name=f"expert_level{level + 1}")

    return ExpertPlan(bottom, [stages[g[0]].input_shape for g in groups], make)


def check_gate_input(plan: ExpertPlan, architecture: str, parts: ModelParts) -> None:
    """Gates read the first level's input: refuse the dataset's dict of inputs (experts over
    whole backbones, or levels that cover every stage), which is not a stage state."""
    shape = plan.level_inputs[0]
    if plan.bottom is not None or not isinstance(shape, Mapping):
        return
    backbone = parts.backbone["name"]
    stages = getattr(parts.make_backbone(), "stages", None)
    levels = len(plan.level_inputs)
    if not callable(stages):
        fix = (
            f"Backbone '{backbone}' has no stages() that could put a shared bottom before the "
            "gates, so with these inputs it works only with architecture=hard_sharing"
        )
    else:
        count = len(list(stages()))
        if count - 1 >= levels:
            fix = (
                f"Set architecture.expert_stages to at most {count - 1} (backbone '{backbone}' "
                f"has {count} stages)"
                + (f" and at least num_levels={levels}" if levels > 1 else "")
                + ", so that its first stages are a shared bottom whose output the gates read"
            )
        elif count > 1:
            fix = (
                f"Backbone '{backbone}' has {count} stages: with one in a shared bottom before "
                f"the gates, {count - 1} are left for the {levels} levels. Set "
                f"architecture.num_levels and architecture.expert_stages to at most {count - 1}"
            )
        else:
            fix = (
                f"Backbone '{backbone}' has a single stage, so no shared bottom can come before "
                "the gates: with these inputs it works only with architecture=hard_sharing"
            )
    raise ArchitectureError(
        f"architecture={architecture}'s gates read the experts' input, but this dataset's "
        f"inputs are a dict ({', '.join(shape)}), which gates cannot read, and no shared bottom "
        f"turns them into a stage state (one tensor, or a dict with '{FEATURES}'). {fix}"
    )
