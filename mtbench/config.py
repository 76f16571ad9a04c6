"""The typed schema of mtbench's own configuration (the plugin groups carry their own schemas)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING


class ConfigError(ValueError):
    """A config that cannot work, refused before any training (the message names the key)."""


class Optimizer(Enum):
    adam = "adam"
    adamw = "adamw"
    sgd = "sgd"


class Schedule(Enum):
    constant = "constant"
    cosine = "cosine"
    onecycle = "onecycle"


class Precision(Enum):
    auto = "auto"
    float32 = "float32"
    mixed_bfloat16 = "mixed_bfloat16"
    mixed_float16 = "mixed_float16"


class Distribute(Enum):
    auto = "auto"
    none = "none"
    mirrored = "mirrored"
    multi_worker = "multi_worker"


class DeltaMMetrics(Enum):
    primary = "primary"
    all = "all"


#: The architecture of ``conf/config.yaml``'s defaults and of every single-task baseline: one
#: backbone, one head per task (mtbench.model.MultiTaskModel); results files written before
#: architectures existed were trained with it.
DEFAULT_ARCHITECTURE = "hard_sharing"

#: Trainer options that became the dataset's to declare (mtbench 0.2): old key -> new key.
MOVED_TO_DATASET = {
    "trainer.normalize": "dataset.normalize",
    "trainer.augment": "dataset.augment",
    "trainer.eval_flip": "dataset.eval_flip",
}


@dataclass
class TrainerConfig:
    """How every run of a benchmark is trained.

    Attributes:
        optimizer: ``adam``, ``adamw`` or ``sgd``.
        learning_rate: The peak learning rate.
        momentum: SGD momentum.
        nesterov: Nesterov momentum for SGD.
        weight_decay: Decoupled weight decay (not applied to biases and normalization layers).
        schedule: ``constant``, ``cosine`` (with linear warm-up) or ``onecycle`` (triangular:
            linear warm-up to the peak, then linear decay).
        warmup_epochs: Length of the warm-up (``onecycle`` defaults to a quarter of training).
        label_smoothing: Label smoothing of the cross-entropy of every task whose kind has the
            option (classification) and does not set it itself.
        batch_size: Training images per step (over all devices).
        epochs: Passes over the training split.
        steps_per_call: Training steps run by one call of the compiled function (fewer Python
            round trips; the progress bar and the checks between calls update less often).
        precision: ``auto`` uses mixed bfloat16 where the CPU or GPU computes it natively, mixed
            float16 (with loss scaling) on older GPUs, float32 otherwise.
        normalize, augment, eval_flip: Moved to the dataset, which declares its inputs'
            preprocessing (``dataset.normalize`` etc. for cifar100); setting them here is refused
            with a message saying so.
        eval_batch_size: Batch size for validation and test predictions.
        checkpoint_every: Save a checkpoint every this many epochs (0: never; the last and the
            best-on-validation checkpoints are kept).
        skip_nonfinite_steps: Skip (and count) steps whose loss or gradient is NaN or infinite
            instead of stopping the run.
        deterministic: TensorFlow op determinism, so that the same seed gives the same numbers.
        distribute: ``auto``, ``none``, ``mirrored`` or ``multi_worker`` (see
            :mod:`mtbench.distribute`).
        cpu_replicas: Split the CPU into this many logical devices (for mirrored runs on CPU).
        progress: Show a progress bar per epoch (on a terminal).
    """

    optimizer: Optimizer = Optimizer.adam
    learning_rate: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: Schedule = Schedule.constant
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    batch_size: int = 128
    epochs: int = 10
    steps_per_call: int = 1
    precision: Precision = Precision.auto
    normalize: Any = None
    augment: Any = None
    eval_batch_size: int = 1000
    eval_flip: Any = None
    checkpoint_every: int = 1
    skip_nonfinite_steps: bool = False
    deterministic: bool = True
    distribute: Distribute = Distribute.auto
    cpu_replicas: int = 1
    progress: bool = True


@dataclass
class BenchmarkConfig:
    """What a benchmark compares, and its budget.

    Attributes:
        tasks: The tasks to train (default: every task of the dataset).
        single_task: Train one single-task baseline per task besides the joint model.
        time_budget_s: Equal-budget mode: every run trains for this many seconds of training
            time (at most ``trainer.epochs`` epochs) instead of a fixed number of epochs.
        target: A validation value of each task's primary metric (e.g. ``{fine: 0.5}`` for
            accuracy; reached when at least it, or at most it for lower-is-better metrics);
            each run records the training time and epoch at which it first reaches all of them.
        stop_at_target: Stop a run once it reaches ``target``.
        baseline_cache: A folder where single-task runs are kept and reused by every benchmark
            whose config differs only in the weighting method (or in nothing that affects a
            single-task run): a sweep over methods trains each baseline once.
        cost_rounds: Rounds of the load-robust cost probe after training: every run's step is
            timed in interleaved rounds in one process (0: no probe; see :mod:`mtbench.cost`).
        cost_steps: Training steps per run and round of the cost probe (fewer where the probe
            would exceed about a tenth of a run's training steps).
        delta_m_metrics: The metrics delta_m averages over: ``primary`` (each task's primary
            metric) or ``all`` (every metric of every task), each signed by its direction.
    """

    tasks: list[str] | None = None
    single_task: bool = True
    time_budget_s: float | None = None
    target: dict[str, float] = field(default_factory=dict)
    stop_at_target: bool = False
    baseline_cache: str | None = None
    cost_rounds: int = 5
    cost_steps: int = 10
    delta_m_metrics: DeltaMMetrics = DeltaMMetrics.primary


@dataclass
class MTBenchConfig:
    """The root config. ``dataset``, ``backbone``, ``head``, ``architecture`` and ``weighting``
    are plugin groups.

    Attributes:
        architecture: How the joint model shares parameters between tasks (``hard_sharing``:
            one backbone, one head per task; see :mod:`mtbench.architecture`). Single-task
            baselines always use the plain backbone and head (hard sharing of one task).
        seed: Seeds model initialisation, data order, augmentation and methods' randomness.
        resume: A run directory to continue (its checkpoints and finished runs are reused).
    """

    dataset: Any = MISSING
    backbone: Any = MISSING
    head: Any = MISSING
    architecture: Any = MISSING
    weighting: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    seed: int = 0
    resume: str | None = None


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
            raise ConfigError(
                f"unknown config key '{full}'; the keys of '{path or 'the root'}' are "
                f"{', '.join(sorted(declared))}"
            )
        child = cfg._get_node(key)
        if isinstance(child, DictConfig):
            check_keys(child, full)


def check_values(trainer: TrainerConfig, benchmark: BenchmarkConfig) -> None:
    """Refuse values that cannot work, before any data is read; each error names its key."""
    for old, new in MOVED_TO_DATASET.items():
        if getattr(trainer, old.partition(".")[2]) is not None:
            raise ConfigError(
                f"{old} moved to the dataset, which declares how its inputs are preprocessed: "
                f"use {new} (for a dataset that has that option, e.g. cifar100) instead of {old}"
            )
    rules: list[tuple[str, object, bool, str]] = [
        ("trainer.learning_rate", trainer.learning_rate, trainer.learning_rate > 0, "> 0"),
        ("trainer.momentum", trainer.momentum, 0 <= trainer.momentum < 1, "in [0, 1)"),
        ("trainer.weight_decay", trainer.weight_decay, trainer.weight_decay >= 0, ">= 0"),
        ("trainer.warmup_epochs", trainer.warmup_epochs, trainer.warmup_epochs >= 0, ">= 0"),
        (
            "trainer.label_smoothing",
            trainer.label_smoothing,
            0 <= trainer.label_smoothing < 1,
            "in [0, 1)",
        ),
        ("trainer.batch_size", trainer.batch_size, trainer.batch_size >= 1, ">= 1"),
        ("trainer.epochs", trainer.epochs, trainer.epochs >= 1, ">= 1"),
        ("trainer.steps_per_call", trainer.steps_per_call, trainer.steps_per_call >= 1, ">= 1"),
        ("trainer.eval_batch_size", trainer.eval_batch_size, trainer.eval_batch_size >= 1, ">= 1"),
        (
            "trainer.checkpoint_every",
            trainer.checkpoint_every,
            trainer.checkpoint_every >= 0,
            ">= 0 (0: never)",
        ),
        ("trainer.cpu_replicas", trainer.cpu_replicas, trainer.cpu_replicas >= 1, ">= 1"),
        ("benchmark.cost_rounds", benchmark.cost_rounds, benchmark.cost_rounds >= 0, ">= 0"),
        ("benchmark.cost_steps", benchmark.cost_steps, benchmark.cost_steps >= 1, ">= 1"),
        (
            "benchmark.time_budget_s",
            benchmark.time_budget_s,
            benchmark.time_budget_s is None or benchmark.time_budget_s > 0,
            "> 0 or null",
        ),
    ]
    for key, value, ok, allowed in rules:
        if not ok:
            raise ConfigError(f"{key}={value} is out of range: it must be {allowed}")
    if benchmark.tasks is not None and len(benchmark.tasks) == 1:
        check_one_task_trains(benchmark.tasks[0], benchmark.single_task)


def check_one_task_trains(task: str, single_task: bool) -> None:
    """A benchmark of one task has no joint model: refuse it when it skips the single-task run
    too, which would train nothing."""
    if not single_task:
        raise ConfigError(
            f"benchmark.single_task=false with one task ({task}) trains nothing: one task has "
            "no joint model, and single_task=false skips its single-task run. Set "
            "benchmark.single_task=true, or choose at least two tasks in benchmark.tasks"
        )
