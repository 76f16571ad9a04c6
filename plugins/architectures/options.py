"""The options of the reference architectures, one dataclass per architecture, kept apart from the
architectures (without TensorFlow) so that the command line types them without importing any.
``hard_sharing`` and ``mtan`` have no options.

Each dataclass's ``check()`` refuses values that cannot work, naming the option and the allowed
values; the protocol calls it before any data is read, the architecture again when it is built.
Limits that depend on the backbone (``expert_stages``, ``num_levels``: at most its number of
stages) are checked when the model is built, still before training.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtbench.config import ConfigError


def _refuse(option: str, value: object, allowed: str) -> None:
    raise ConfigError(f"architecture.{option}={value} is out of range: it must be {allowed}")


def _at_least_one(option: str, value: int) -> None:
    if value < 1:
        _refuse(option, value, ">= 1")


def _stages(value: int | None) -> None:
    if value is not None and value < 1:
        _refuse(
            "expert_stages",
            value,
            ">= 1 (the last stages of the backbone) or null (the whole backbone)",
        )


def _temperature(value: float) -> None:
    if not value > 0:
        _refuse("gate_temperature", value, "> 0")


# architecture=mmoe: mmoe.py
@dataclass
class MMoEConfig:
    """Options of the ``mmoe`` architecture.

    Attributes:
        num_experts: Experts every task's gate mixes.
        expert_stages: Each expert is a copy of the backbone's last ``expert_stages`` stages,
            after the other stages shared by all (the shared bottom); ``null``: each expert is a
            whole backbone (any backbone, with or without stages).
        gate_temperature: The gates are ``softmax(logits / gate_temperature)``.
    """

    num_experts: int = 4
    expert_stages: int | None = None
    gate_temperature: float = 1.0

    def check(self) -> None:
        _at_least_one("num_experts", self.num_experts)
        _stages(self.expert_stages)
        _temperature(self.gate_temperature)


# architecture=cgc: cgc.py
@dataclass
class CGCConfig:
    """Options of the ``cgc`` architecture.

    Attributes:
        shared_experts: Experts every task's gate mixes.
        task_experts: Experts of each task alone, mixed by its gate with the shared ones.
        expert_stages: As ``mmoe``'s.
        gate_temperature: As ``mmoe``'s.
    """

    shared_experts: int = 2
    task_experts: int = 1
    expert_stages: int | None = None
    gate_temperature: float = 1.0

    def check(self) -> None:
        _at_least_one("shared_experts", self.shared_experts)
        _at_least_one("task_experts", self.task_experts)
        _stages(self.expert_stages)
        _temperature(self.gate_temperature)


# architecture=ple: ple.py
@dataclass
class PLEConfig:
    """Options of the ``ple`` architecture.

    Attributes:
        shared_experts: Shared experts per level.
        task_experts: Experts of each task per level.
        num_levels: Extraction levels, stacked; the ``expert_stages`` last stages of the
            backbone are split into this many consecutive groups, one per level.
        expert_stages: The backbone's last stages the levels cover (``null``: every stage).
        gate_temperature: As ``mmoe``'s.
    """

    shared_experts: int = 2
    task_experts: int = 1
    num_levels: int = 2
    expert_stages: int | None = None
    gate_temperature: float = 1.0

    def check(self) -> None:
        _at_least_one("shared_experts", self.shared_experts)
        _at_least_one("task_experts", self.task_experts)
        _at_least_one("num_levels", self.num_levels)
        _stages(self.expert_stages)
        if self.expert_stages is not None and self.num_levels > self.expert_stages:
            _refuse("num_levels", self.num_levels, f"<= expert_stages ({self.expert_stages})")
        _temperature(self.gate_temperature)


# architecture=dselect_k: dselect_k.py
@dataclass
class DSelectKConfig:
    """Options of the ``dselect_k`` architecture.

    Attributes:
        num_experts: Experts shared by every task.
        k: Experts each task selects (its number of selectors), ``1 <= k <= num_experts``.
        gamma: Width of the smooth step's transition; a selector's code is binary outside
            ``[-gamma/2, gamma/2]``.
        entropy_weight: Weight of the entropy of the selectors' distributions added to the loss
            while training (pushes them to binary codes sooner; 0: none).
        expert_stages: As ``mmoe``'s.
    """

    num_experts: int = 4
    k: int = 2
    gamma: float = 1.0
    entropy_weight: float = 0.0
    expert_stages: int | None = None

    def check(self) -> None:
        _at_least_one("num_experts", self.num_experts)
        if not 1 <= self.k <= self.num_experts:
            _refuse("k", self.k, f"in 1..num_experts (1..{self.num_experts})")
        if not self.gamma > 0:
            _refuse("gamma", self.gamma, "> 0")
        if not self.entropy_weight >= 0:
            _refuse("entropy_weight", self.entropy_weight, ">= 0")
        _stages(self.expert_stages)


# architecture=cross_stitch: cross_stitch.py
@dataclass
class CrossStitchConfig:
    """Options of the ``cross_stitch`` architecture.

    Attributes:
        self_weight: Initial weight of a task's own activation in its cross-stitch unit; the
            others share ``1 - self_weight`` equally (the paper's (alpha_S, alpha_D) = (0.9, 0.1)
            for two tasks). In ``(0, 1]``.
    """

    self_weight: float = 0.9

    def check(self) -> None:
        if not 0 < self.self_weight <= 1:
            _refuse("self_weight", self.self_weight, "in (0, 1]")
