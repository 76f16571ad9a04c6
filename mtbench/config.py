"""The typed schema of mtbench's own configuration (the plugin groups carry their own schemas)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING


class Optimizer(Enum):
    adam = "adam"
    sgd = "sgd"


class Precision(Enum):
    auto = "auto"
    float32 = "float32"
    mixed_bfloat16 = "mixed_bfloat16"
    mixed_float16 = "mixed_float16"


@dataclass
class TrainerConfig:
    """How every run of a benchmark is trained.

    Attributes:
        optimizer: ``adam`` or ``sgd`` (with momentum 0.9).
        learning_rate: The optimizer's learning rate.
        batch_size: Training batch size (images per step).
        epochs: Passes over the training split.
        precision: ``auto`` uses mixed bfloat16 where the CPU or GPU computes it natively, mixed
            float16 on older GPUs, float32 otherwise.
        eval_batch_size: Batch size for validation and test predictions.
        progress: Show a progress bar per epoch.
    """

    optimizer: Optimizer = Optimizer.adam
    learning_rate: float = 1e-3
    batch_size: int = 128
    epochs: int = 10
    precision: Precision = Precision.auto
    eval_batch_size: int = 1000
    progress: bool = True


@dataclass
class BenchmarkConfig:
    """What a benchmark compares.

    Attributes:
        tasks: The tasks to train (default: every task of the dataset).
        single_task: Train one single-task baseline per task besides the joint model.
    """

    tasks: list[str] | None = None
    single_task: bool = True


@dataclass
class MTBenchConfig:
    """The root config. ``dataset``, ``backbone``, ``head`` and ``weighting`` are plugin groups."""

    dataset: Any = MISSING
    backbone: Any = MISSING
    head: Any = MISSING
    weighting: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    seed: int = 0


def store_schema() -> None:
    """Store the root schema as ``mtbench_schema``; ``conf/config.yaml`` extends it."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="mtbench_schema", node=MTBenchConfig, provider="mtbench")


def check_keys(cfg: Any, path: str = "") -> None:
    """Refuse keys that a structured node's dataclass does not declare.

    Hydra lets ``+trainer.epoch=3`` add a key even to a typed node; such a key would be ignored
    silently, so it is refused here, before any data is read.
    """
    import dataclasses

    from omegaconf import DictConfig, OmegaConf

    if not isinstance(cfg, DictConfig):
        return
    node_type = OmegaConf.get_type(cfg)
    declared = (
        {f.name for f in dataclasses.fields(node_type)}
        if node_type is not None and dataclasses.is_dataclass(node_type)
        else None
    )
    for key in cfg.keys():
        full = f"{path}.{key}" if path else str(key)
        if declared is not None and key not in declared:
            raise ValueError(
                f"unknown config key '{full}'; the keys of '{path or 'the root'}' are "
                f"{', '.join(sorted(declared))}"
            )
        child = cfg._get_node(key)
        if isinstance(child, DictConfig):
            check_keys(child, full)
