"""What the mixture-of-experts architectures (``mmoe``, ``cgc``, ``ple``, ``dselect_k``) share:
experts over a shared bottom, softmax gates, and the gated sum of the experts' outputs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras

from mtbench.architecture import ArchitectureError, Chain, ModelParts, Stage


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
    weighted per example, in the outputs' dtype."""
    stacked = keras.ops.stack(list(outputs), axis=1)  # [B, E, ...]
    shape = (-1, len(outputs)) + (1,) * (len(stacked.shape) - 2)
    w = keras.ops.reshape(keras.ops.cast(weights, stacked.dtype), shape)
    return keras.ops.sum(stacked * w, axis=1)


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


def check_gate_input(shape: Any, architecture: str, parts: ModelParts) -> None:
    """Gates read one tensor: refuse dict inputs reaching them."""
    if isinstance(shape, Mapping):
        backbone = parts.backbone["name"]
        if callable(getattr(parts.make_backbone(), "stages", None)):
            fix = (
                f"Set architecture.expert_stages to fewer than the stages of backbone "
                f"'{backbone}', so that its first stages give the gates one tensor"
            )
        else:
            fix = (
                f"Backbone '{backbone}' has no stages() that could put a shared bottom before the "
                "gates, so with these inputs it works only with architecture=hard_sharing"
            )
        raise ArchitectureError(
            f"architecture={architecture}'s gates read the experts' input as one tensor, but "
            f"this dataset's inputs are a dict ({', '.join(shape)}) and no shared bottom turns "
            f"them into one. {fix}"
        )
