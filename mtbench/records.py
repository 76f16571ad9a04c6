"""The results file: its schema, records, reader and writer, and what makes a run's identity.

Every module that writes or reads ``results.json`` goes through this one: :func:`new_results`
starts the record, :func:`task_record` describes a task, :func:`compare` computes the comparison,
:func:`write` writes it and :func:`load` reads it back (upgrading older schemas). Which config keys
make a run's identity is decided here too (:func:`identity`).

``results.json``, schema ``mtbench.results/2`` (written atomically at the start and after every
run, so a crash keeps what was finished; a value that is not a finite number is written as null)::

    {"schema": "mtbench.results/2",
     "status": "running" | "complete" | "failed" | "interrupted",
     "error": null | "<message>",                  # why the benchmark failed or stopped
     "config": {...},                              # the full resolved config
     "location_keys": ["dataset.root", ...],       # config keys that say where data is, not
                                                   # what it is (see "Identity" below)
     "environment": {...},                         # library versions, git commit, machine
     "resolved": {"precision": "mixed_bfloat16",   # what trainer.precision resolved to
                  "precision_native": true,        # false: emulated by this hardware (slow)
                  "device_class": "CPU AMD EPYC [avx2 avx512f avx512_bf16 ...]"},
     "tasks": {"<task>": {                         # task_record(): what each task reports
         "kind": "classification" | "regression" | "multilabel" | "segmentation" | ...,
         "primary": "accuracy",                    # model selection and delta_m
         "metrics": {"<metric>": {"unit": "fraction" | "eV" | ..., "higher_is_better": true,
                                  "description": "..."}},
         "labelled": {"train": 0, "val": 0, "test": 0},   # examples with a label
         "examples": {"train": 0, "val": 0, "test": 0}}}, # ({}: not recorded, /1 files)
     "inputs": null | {"type": "ImageInputs", ...},       # what the dataset declared
     "hierarchy": null | {"child": "fine", "parent": "coarse"},   # declared by the dataset
     "notes": ["..."],                             # e.g. a one-task benchmark's
     "budget": null | {"time_budget_s": 60.0, "steps": {"<run>": 123}, "load_dependent": true,
                       "note": "..."},            # equal-budget mode only
     "runs": [{"name": "single:<task>" | "joint",  # single_run_name(), JOINT_RUN
               "tasks": [...],
               "weighting": "<plugin>" | "plain loss",
               "status": "complete" | "failed",     # failed: a NaN/Inf loss or gradient
               "error": null | "<message>",
               "test": null | {"<task>": {"<metric>": 0.0 | null}},
               "best_epoch": 1,                    # 1-based, chosen on validation:
               "selection": {"rule": "<how>", "score": 0.0},
               "val": {"<task>": {"<metric>": 0.0 | null}},
               "stopped_by": "epochs" | "time_budget" | "target",
               "time_to_target": null | {"epoch": 1, "train_seconds": 0.0, "target": {...},
                                         "load_dependent": true},
               "skipped_steps": 0, "resumed_from": null | {"epoch": 1, "batch": 0},
               "reused_from": "<folder>",          # only for a baseline from the cache
               "history": [{"epoch": 1, "train_loss": {...}, "loss_weights": {...},
                            "val": {"<task>": {"<metric>": 0.0 | null}}, "seconds": 0.0,
                            "steps": 0, "train_seconds_so_far": 0.0, "learning_rate": 0.0,
                            "skipped_steps": 0, "cpu_seconds": 0.0, "others_utilisation": 0.0,
                            "share": 1.0, "cpu_utilisation": 0.5, "load_average": 1.0,
                            "gpu_utilisation": null}],
               "timing": {"epoch_seconds": [...], "train_seconds": 0.0,
                          "seconds_per_epoch": 0.0, "steps": 0, "steps_per_epoch": 0,
                          "examples_per_second": 0.0, "trace_seconds": 0.0,
                          "eval_seconds": 0.0, "test_seconds": 0.0},
               "load": {"wall_seconds": 0.0, "cpu_seconds": 0.0, "share": 1.0,
                        "lowest_epoch_share": 1.0, "load_average": 1.0,
                        "gpu_utilisation": null, "flagged": false, "reasons": []},
               "architecture": "hard_sharing",     # single-task runs: always hard_sharing
               "parameters": 0,                    # model.count_params(): every variable
               "parameter_counts": {"trainable": 0, "shared": 0, "task_specific": 0,
                                    "per_task": {"<task>": 0},
                                    "task_specific_unattributed": 0},
               "peak_memory_mb": 0.0, "peak_memory_scope": "run" | "process",
               "peak_device_memory_mb": null | 0.0, "device": "...",
               "distribution": {"strategy": "default", "replicas": 1}, "precision": "..."}],
     "comparison": null | {                        # compare(); null with one task
         "metrics": "primary" | "all",             # benchmark.delta_m_metrics
         "formula": "<DELTA_M_FORMULA>",
         "delta_m_percent": 0.0 | null,
         "delta_m_undefined": null | "<why>",       # e.g. a single-task value of 0
         "entries": [{"task": "fine", "metric": "accuracy", "unit": "fraction",
                      "higher_is_better": true, "single": 0.0, "joint": 0.0,
                      "delta_percent": 0.0 | null, "counted": true}],  # counted in delta_m
         "tasks": {"<task>": {"metric": "<primary>", "single": 0.0, "joint": 0.0,
                              "delta_percent": 0.0 | null}},
         "hierarchy": null | {"child": "fine", "parent": "coarse"},
         "hierarchy_consistency": null | 0.0,        # joint model
         "hierarchy_consistency_single": null | 0.0, # the two single-task models together
         "cost": null | {"method": "...", "step_seconds": {"<run>": 0.0}, "probe_seconds": 0.0,
                         "rounds": 5, "steps": 20,            # the probe's interleaved rounds
                         "timed": ["single:<task>", "joint", "joint (hard_sharing)"],
                         "joint_over_singles": 0.0, "joint_over_single": {"<task>": 0.0},
                         "joint_epoch_over_singles": 0.0, "steps_per_epoch": {"<run>": 0},
                         "joint_architecture": "mmoe",
                         "hard_sharing_step_seconds": null | 0.0,
                         "joint_over_hard_sharing": null | 0.0,
                         "joint_over_hard_sharing_undefined": null | "<why>",
                         "joint_over_hard_sharing_method": null | "..."},
         "cost_undefined": null | "<why>"}}          # why "cost" is null (probe off; runs missing)

A failed run keeps ``name``, ``tasks``, ``status`` and ``error`` (``test`` is null); it is never
reported as a number. ``comparison.cost`` is :func:`mtbench.cost.cost_comparison`'s record:
``joint_over_hard_sharing`` (median joint step / median step of a hard-sharing joint model timed in
the same rounds, ``"joint (hard_sharing)"`` in ``timed``) is null, with the reason in
``joint_over_hard_sharing_undefined``, for a hard-sharing joint run (1 by definition, not reported);
cost records written before it lack these keys. ``probe_seconds`` is the wall clock the probe added
to the benchmark: building what it times that was not trained in this process (resumed or cached
runs, the hard-sharing counterpart) and the timed rounds. ``parameter_counts`` (numbers of scalars,
trainable only): ``shared`` are the variables the architecture declares shared (more than one task's
loss reaches them); ``per_task[t]`` the task variables only task ``t``'s loss reaches,
``task_specific_unattributed`` task variables several tasks' losses reach (e.g. a hierarchical
head); see :func:`mtbench.architecture.parameter_counts`. Units: each metric says its own
(``fraction``: 0..1, shown as %); times are wall-clock seconds; memory is MiB.

**Older files.** Files written before architectures existed were trained with hard sharing:
:func:`load` gives their ``config`` ``architecture: {name: hard_sharing}`` and their runs
``"architecture": "hard_sharing"`` (``parameter_counts`` stays absent). :func:`load` reads
``mtbench.results/1`` files as ``/2``: their tasks become
classification tasks reporting ``accuracy`` and ``top5_accuracy`` (higher-is-better fractions),
``comparison.entries`` is built from ``comparison.tasks``, ``timing.images_per_second`` becomes
``examples_per_second``, ``selection`` states the rule ``/1`` used, and ``location_keys`` lists
the keys ``/1`` leaderboards ignored (:data:`V1_LOCATION_KEYS`). The result says
``"upgraded_from": "mtbench.results/1"``. Only ``/2`` is written.

**Identity.** :func:`identity` is the one place that decides which config keys make a run what
it is, for three purposes (``same``: must be equal; ``free``: may differ)::

    key                                resume  baseline  leaderboard  why
    location options (see below)       free    free      free         where data is
    resume                             free    free      free         which directory continues
    trainer.progress                   free    free      free         display only
    trainer.checkpoint_every           free    free      free         how often state is saved
    benchmark.baseline_cache           free    free      free         where baselines are kept
    seed                               same    same      free         rows summarize over seeds
    weighting (and its options)        same    free      same         baselines: the plain loss
    architecture (and its options)     same    free      same         baselines: hard sharing
    benchmark.tasks                    same    free      same         a baseline's task is its key
    benchmark.single_task              same    free      same         whether baselines are trained
    benchmark.delta_m_metrics          same    free      same         read by the comparison only
    benchmark.cost_rounds, cost_steps  same    free      same         the cost probe after training
    every other key                    same    same      same

- ``resume``: the keys that may differ when a run directory is continued;
- ``baseline``: what a single-task run depends on (the baseline cache's key);
- ``leaderboard``: what makes a leaderboard row.

For ``baseline`` and ``leaderboard``, the ``resolved`` record replaces ``trainer.precision`` with
the precision actually used and adds the ``device_class``. A **location option** is a field of a
plugin's config dataclass marked ``field(..., metadata={"mtbench": "location"})``
(:func:`location_fields`); mtbench knows no option by name.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mtbench.config import DEFAULT_ARCHITECTURE
from mtbench.io import atomic_write_json
from mtbench.tasks import Metric

if TYPE_CHECKING:
    from mtbench.tasks import TaskKind

SCHEMA = "mtbench.results/2"
SCHEMA_V1 = "mtbench.results/1"
#: The schemas :func:`load` reads.
READABLE = (SCHEMA, SCHEMA_V1)
#: The file's name in a run directory.
FILENAME = "results.json"

# ------------------------------------------------------------------------------------ run names
#: The name of the run that trains every task with the weighting method.
JOINT_RUN = "joint"
_SINGLE = "single:"


def single_run_name(task: str) -> str:
    """The name of the single-task run of ``task``: ``single:<task>``."""
    return _SINGLE + task


def task_of_single(name: str) -> str | None:
    """The task of a single-task run's name, or ``None`` for any other name (``joint``)."""
    return name[len(_SINGLE) :] if name.startswith(_SINGLE) else None


def run_slug(name: str) -> str:
    """A run's name as a folder or file name (``single:fine`` -> ``single_fine``)."""
    return name.replace(":", "_")


# -------------------------------------------------------------------------------------- errors
class RecordError(ValueError):
    """A results file or record that cannot be read: the message says what is wrong."""


# --------------------------------------------------------------------------------- task records
@dataclass(frozen=True)
class TaskRecord:
    """What ``results.json`` says about one task (its entry of ``"tasks"``).

    Args:
        name: The task.
        kind: Its task kind (``classification``, ``regression``, ...).
        primary: The name of its primary metric (model selection, delta_m).
        metrics: Every metric it reports, as declared by its kind.
        labelled: Per split, the examples with a label for this task (empty: not recorded).
        examples: Per split, all examples (empty: not recorded).
    """

    name: str
    kind: str
    primary: str
    metrics: tuple[Metric, ...]
    labelled: Mapping[str, int] = dataclasses.field(default_factory=dict)
    examples: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [m.name for m in self.metrics]
        if self.primary not in names:
            raise RecordError(
                f"task '{self.name}': its primary metric '{self.primary}' is not one of its "
                f"metrics {names}"
            )
        if len(set(names)) != len(names):
            raise RecordError(f"task '{self.name}' lists a metric twice: {names}")

    @classmethod
    def of(
        cls, kind: TaskKind, labelled: Mapping[str, int], examples: Mapping[str, int]
    ) -> TaskRecord:
        """The record of a task kind bound to its task (see :func:`task_record`)."""
        return cls(
            name=kind.name,
            kind=kind.spec.kind,
            primary=kind.primary.name,
            metrics=tuple(kind.metrics),
            labelled={str(k): int(v) for k, v in labelled.items()},
            examples={str(k): int(v) for k, v in examples.items()},
        )

    @classmethod
    def from_dict(cls, name: str, record: Mapping[str, Any]) -> TaskRecord:
        """Read ``results["tasks"][name]``."""
        try:
            metrics = tuple(
                Metric(
                    str(metric),
                    str(entry["unit"]),
                    _direction(entry["higher_is_better"], f"task '{name}' metric '{metric}'"),
                    str(entry.get("description", "")),
                )
                for metric, entry in record["metrics"].items()
            )
            return cls(
                name=name,
                kind=str(record["kind"]),
                primary=str(record["primary"]),
                metrics=metrics,
                labelled=dict(record.get("labelled") or {}),
                examples=dict(record.get("examples") or {}),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise RecordError(
                f"the record of task '{name}' is malformed ({type(exc).__name__}: {exc}); a task "
                "record has kind, primary and metrics: {name: {unit, higher_is_better}}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "primary": self.primary,
            "metrics": {
                m.name: {
                    "unit": m.unit,
                    "higher_is_better": m.higher_is_better,
                    "description": m.description,
                }
                for m in self.metrics
            },
            "labelled": dict(self.labelled),
            "examples": dict(self.examples),
        }

    def metric(self, name: str) -> Metric:
        for metric in self.metrics:
            if metric.name == name:
                return metric
        raise KeyError(f"task '{self.name}' reports no metric '{name}'")

    @property
    def primary_metric(self) -> Metric:
        return self.metric(self.primary)

    @property
    def ordered_metrics(self) -> tuple[Metric, ...]:
        """The primary metric first, then the others in the order the kind declares them."""
        return (self.primary_metric, *(m for m in self.metrics if m.name != self.primary))


def _direction(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise RecordError(f"{what}: higher_is_better is {value!r}, not true or false")
    return value


def task_record(
    kind: TaskKind, labelled_counts: Mapping[str, int], example_counts: Mapping[str, int]
) -> dict[str, Any]:
    """The entry of ``results["tasks"]`` for one task.

    Args:
        kind: The task's kind, bound to its task (``mtbench.tasks.task_kind``).
        labelled_counts: Per split (``train``, ``val``, ``test``), the examples labelled for it.
        example_counts: Per split, all its examples.
    """
    return TaskRecord.of(kind, labelled_counts, example_counts).to_dict()


def task_records(results: Mapping[str, Any]) -> dict[str, TaskRecord]:
    """The ``"tasks"`` section of a ``/2`` results dict, typed, in its order."""
    section = results.get("tasks") or {}
    if not isinstance(section, Mapping):
        raise RecordError(f"'tasks' is a {type(section).__name__}, not a mapping of task records")
    return {str(name): TaskRecord.from_dict(str(name), record) for name, record in section.items()}


# ------------------------------------------------------------------------------------- comparison
DeltaMMetrics = Literal["primary", "all"]
DELTA_M_METRICS: tuple[str, ...] = ("primary", "all")

DELTA_M_FORMULA = (
    "delta_m = 100/K * sum_k (-1)^{l_k} (M_joint,k - M_single,k) / |M_single,k|, the mean over "
    "the K counted (task, metric) entries of the joint model's relative change against the "
    "single-task model of that task, M the test value and l_k = 1 where lower is better "
    "(0 where higher is better), so a positive delta_m means the joint model is better. "
    "Counted: each task's primary metric (benchmark.delta_m_metrics=primary) or every metric "
    "of every task (all). delta_m is undefined (null) when a counted entry is: a single-task "
    "value of 0, or a value that could not be computed"
)


@dataclass(frozen=True)
class ComparisonEntry:
    """One (task, metric) of the single-task against joint comparison.

    ``delta_percent`` = 100 (-1)^l (joint - single) / |single|, l = 1 where lower is better:
    **positive means the joint model is better**, whatever the metric's direction; ``None``
    when undefined (``why`` says why). ``counted``: whether delta_m averages it.
    """

    task: str
    metric: str
    unit: str
    higher_is_better: bool
    single: float | None
    joint: float | None
    delta_percent: float | None
    counted: bool
    why: str | None = None  # not written: the comparison's delta_m_undefined says it

    def to_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        del record["why"]
        return record

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> ComparisonEntry:
        return cls(
            task=str(entry["task"]),
            metric=str(entry["metric"]),
            unit=str(entry["unit"]),
            higher_is_better=_direction(entry["higher_is_better"], f"entry {entry}"),
            single=_number(entry.get("single")),
            joint=_number(entry.get("joint")),
            delta_percent=_number(entry.get("delta_percent")),
            counted=bool(entry.get("counted", True)),
        )


def delta_percent(single: float, joint: float, higher_is_better: bool = True) -> float:
    """The joint model's relative change against the single-task model, in percent, signed so
    that positive means better: ``100 (-1)^l (joint - single) / |single|``.

    Raises:
        ValueError: ``single`` is 0 or either value is not a finite number (the message says
            which).
    """
    if not (math.isfinite(single) and math.isfinite(joint)):
        raise ValueError(f"single-task {single}, joint {joint}: not finite numbers")
    if single == 0:
        raise ValueError("the single-task value is 0: the relative change is undefined")
    sign = 1.0 if higher_is_better else -1.0
    return 100.0 * sign * (joint - single) / abs(single)


def _number(value: Any) -> float | None:
    """A finite float, or ``None`` for null, NaN and infinities."""
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _entry(
    task: str,
    metric: Metric,
    single: float | None,
    joint: float | None,
    counted: bool,
) -> ComparisonEntry:
    why = None
    if single is None or joint is None:
        side = "single-task" if single is None else "joint"
        why = f"the {side} {metric.name} of task '{task}' is null (it could not be computed)"
    elif single == 0:
        why = f"the single-task {metric.name} of task '{task}' is 0"
    change = None
    if why is None and single is not None and joint is not None:
        change = delta_percent(single, joint, metric.higher_is_better)
    return ComparisonEntry(
        task, metric.name, metric.unit, metric.higher_is_better, single, joint, change, counted,
        why,
    )  # fmt: skip


def compare(
    runs: Sequence[Mapping[str, Any]],
    tasks_section: Mapping[str, Any],
    metrics: DeltaMMetrics | str = "primary",
) -> dict[str, Any] | None:
    """The single-task against joint comparison (``results["comparison"]``).

    Args:
        runs: The benchmark's runs; failed ones (``status`` failed or ``test`` null) are ignored.
        tasks_section: ``results["tasks"]``: every task's metrics, directions and primary.
        metrics: ``primary`` (delta_m counts each task's primary metric) or ``all`` (every
            metric of every task). ``entries`` always holds every metric; ``counted`` marks
            those delta_m averages.

    Returns:
        The comparison (see the module docstring; ``hierarchy``, ``hierarchy_consistency``,
        ``hierarchy_consistency_single`` and ``cost`` are null for the caller to fill), or
        ``None`` with fewer than two tasks or without the joint run or a single-task run.

    Raises:
        ValueError: ``metrics`` is neither ``primary`` nor ``all``.
    """
    metrics = getattr(metrics, "value", metrics)  # the config's enum or its text
    if metrics not in DELTA_M_METRICS:
        raise ValueError(
            f"delta_m metrics {metrics!r}: choose 'primary' (each task's primary metric) or "
            "'all' (every metric of every task)"
        )
    tasks = task_records({"tasks": tasks_section})
    complete = {run["name"]: run for run in runs if _completed(run)}
    joint = complete.get(JOINT_RUN)
    singles = {t: complete[single_run_name(t)] for t in tasks if single_run_name(t) in complete}
    if len(tasks) < 2 or joint is None or len(singles) < len(tasks):
        return None
    entries = []
    for task, record in tasks.items():
        for metric in record.ordered_metrics:
            entries.append(
                _entry(
                    task,
                    metric,
                    value(singles[task], task, metric.name),
                    value(joint, task, metric.name),
                    counted=metrics == "all" or metric.name == record.primary,
                )
            )
    counted = [e for e in entries if e.counted]
    reasons = [e.why for e in counted if e.why]
    changes = [e.delta_percent for e in counted if e.delta_percent is not None]
    gain = None if reasons else sum(changes) / len(changes)
    primary = {e.task: e for e in entries if e.metric == tasks[e.task].primary}
    return {
        "metrics": metrics,
        "formula": DELTA_M_FORMULA,
        "delta_m_percent": gain,
        "delta_m_undefined": "; ".join(reasons) if reasons else None,
        "entries": [e.to_dict() for e in entries],
        "tasks": {
            t: {
                "metric": e.metric,
                "single": e.single,
                "joint": e.joint,
                "delta_percent": e.delta_percent,
            }
            for t, e in primary.items()
        },
        "hierarchy": None,
        "hierarchy_consistency": None,
        "hierarchy_consistency_single": None,
        "cost": None,
    }


def _completed(run: Mapping[str, Any]) -> bool:
    return run.get("status", "complete") == "complete" and run.get("test") is not None


def comparison_entries(results: Mapping[str, Any]) -> list[ComparisonEntry]:
    """``results["comparison"]["entries"]``, typed (empty without a comparison)."""
    comparison = results.get("comparison") or {}
    return [ComparisonEntry.from_dict(e) for e in comparison.get("entries") or ()]


def one_task_note(task: str) -> str:
    """The note of a benchmark with one task (``results["notes"]``)."""
    return (
        f"one task ({task}): there is no joint model, so no multitask comparison and no "
        "delta_m; choose benchmark.tasks with at least two of the dataset's tasks"
    )


# ------------------------------------------------------------------------------ reading, writing
def new_results(
    config: Mapping[str, Any],
    environment: Mapping[str, Any],
    location_keys: Collection[str] = (),
) -> dict[str, Any]:
    """The record a benchmark starts with: every top-level key, nothing run yet.

    Args:
        config: The full resolved config (plain containers).
        environment: ``mtbench.results.environment()``.
        location_keys: The config keys marked as location options (:func:`location_keys`).
    """
    return {
        "schema": SCHEMA,
        "status": "running",
        "error": None,
        "config": dict(config),
        "location_keys": sorted(location_keys),
        "environment": dict(environment),
        "resolved": None,
        "tasks": {},
        "inputs": None,
        "hierarchy": None,
        "notes": [],
        "budget": None,
        "runs": [],
        "comparison": None,
    }


def write(path: Path, results: Mapping[str, Any]) -> None:
    """Write ``results`` (schema :data:`SCHEMA`) to ``path`` atomically; NaN and infinities
    become null (a number that could not be computed), NumPy scalars plain numbers.

    Raises:
        RecordError: ``results`` is not a ``/2`` record.
    """
    if results.get("schema") != SCHEMA:
        raise RecordError(
            f"results with schema {results.get('schema')!r} cannot be written: mtbench writes "
            f"{SCHEMA} only (start from records.new_results, read old files with records.load)"
        )
    atomic_write_json(Path(path), _plain(results))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        value = value.item()  # a NumPy scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_run(path: Path, run: Mapping[str, Any]) -> None:
    """Write one run record alone (the baseline cache keeps single-task runs so), like
    :func:`write`: atomically, NaN and infinities as null."""
    atomic_write_json(Path(path), _plain(run))


def load_run(path: Path) -> dict[str, Any]:
    """Read a run record written by :func:`write_run` (``/1`` names upgraded).

    Raises:
        RecordError: the file is not JSON or not a run record.
    """
    path = Path(path)
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path} is not JSON ({exc}): a truncated or foreign file") from None
    if not isinstance(run, dict) or "name" not in run:
        raise RecordError(f"{path} holds no run record (a JSON object with a name)")
    _upgrade_run_v1(run)
    run.setdefault("architecture", DEFAULT_ARCHITECTURE)
    return run


def load(path: Path) -> dict[str, Any]:
    """Read a results file in ``/2`` form, whatever schema of :data:`READABLE` it has.

    Raises:
        RecordError: the file is not JSON, not a results file, or of an unknown schema.
        OSError: it cannot be read.
    """
    path = Path(path)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path} is not JSON ({exc}): a truncated or foreign file") from None
    try:
        return upgrade(results)
    except RecordError as exc:
        raise RecordError(f"{path}: {exc}") from None


def upgrade(results: Any) -> dict[str, Any]:
    """``results`` (a parsed results file of a schema in :data:`READABLE`) in ``/2`` form; a
    ``/2`` record is returned as it is."""
    if not isinstance(results, Mapping):
        raise RecordError(f"a results file holds a JSON object, not a {type(results).__name__}")
    schema = results.get("schema")
    if schema == SCHEMA:
        return _with_architecture(dict(results))
    if schema != SCHEMA_V1:
        raise RecordError(
            f"schema {schema!r} is not one mtbench reads ({', '.join(READABLE)}); a newer "
            "mtbench may have written it"
        )
    return _with_architecture(_from_v1(results))


def _with_architecture(results: dict[str, Any]) -> dict[str, Any]:
    """A record written before architectures existed, as hard sharing (what trained it)."""
    config = results.get("config")
    if isinstance(config, Mapping) and "architecture" not in config:
        results["config"] = {**config, "architecture": {"name": DEFAULT_ARCHITECTURE}}
    runs = results.get("runs")
    if isinstance(runs, list) and any(
        isinstance(r, Mapping) and "architecture" not in r for r in runs
    ):
        results["runs"] = [
            {**r, "architecture": r.get("architecture", DEFAULT_ARCHITECTURE)}
            if isinstance(r, Mapping)
            else r
            for r in runs
        ]
    return results


#: The keys a ``/1`` leaderboard treated as saying where data is; ``/1`` files do not record it.
V1_LOCATION_KEYS = ("dataset.root", "dataset.download", "dataset.url")
V1_SELECTION_RULE = (
    "best epoch = the highest mean validation top-1 accuracy over the run's tasks (the earliest "
    "on ties); recorded by mtbench.results/1"
)
V1_DELTA_M_FORMULA = (
    "delta_m = 100/T * sum_t (A_joint,t - A_single,t) / A_single,t, with A the test top-1 "
    "accuracy of task t (higher is better) and T the number of tasks"
)


def _upgrade_run_v1(run: dict[str, Any]) -> None:
    timing = run.get("timing")
    if isinstance(timing, dict) and "images_per_second" in timing:
        timing["examples_per_second"] = timing.pop("images_per_second")


def _v1_task(name: str) -> dict[str, Any]:
    accuracy = Metric("accuracy", "fraction", True, "top-1 accuracy")
    top5 = Metric("top5_accuracy", "fraction", True, "top-5 accuracy")
    return TaskRecord(name, "classification", "accuracy", (accuracy, top5)).to_dict()


def _from_v1(old: Mapping[str, Any]) -> dict[str, Any]:
    results = json.loads(json.dumps(old))  # a deep copy: the caller's dict stays as it was
    runs = results.get("runs") or []
    joint = next((r for r in runs if r.get("name") == JOINT_RUN), None)
    names = joint["tasks"] if joint else [t for r in runs for t in r.get("tasks", ())]
    tasks = list(dict.fromkeys(names))
    for run in runs:
        _upgrade_run_v1(run)
        if run.get("status", "complete") == "complete" and run.get("val"):
            scores = [v.get("accuracy") for v in run["val"].values()]
            score = sum(scores) / len(scores) if None not in scores else None
            run.setdefault("selection", {"rule": V1_SELECTION_RULE, "score": score})
    comparison = results.get("comparison")
    hierarchy = (comparison or {}).get("hierarchy")
    if comparison:
        comparison.pop("metric", None)
        gain = comparison.get("delta_m_percent")
        per_task = comparison.get("tasks", {})
        complete = completed_runs(results)
        top5 = Metric("top5_accuracy", "fraction", True)
        entries = []
        for t, c in per_task.items():
            entries.append(
                {"task": t, "metric": "accuracy", "unit": "fraction", "higher_is_better": True,
                 "single": c.get("single"), "joint": c.get("joint"),
                 "delta_percent": c.get("delta_percent"), "counted": True}
            )  # fmt: skip
            single, joint_run = complete.get(single_run_name(t)), complete.get(JOINT_RUN)
            if single is not None and joint_run is not None:  # not counted: as /2 records it
                values = (value(single, t, top5.name), value(joint_run, t, top5.name))
                entries.append(_entry(t, top5, *values, counted=False).to_dict())
        comparison.update(
            metrics="primary",
            formula=comparison.get("formula") or V1_DELTA_M_FORMULA,
            delta_m_undefined=None if gain is not None else "a single-task accuracy is 0",
            entries=entries,
            tasks={t: {"metric": "accuracy", **c} for t, c in per_task.items()},
        )
        for key in ("hierarchy", "hierarchy_consistency", "hierarchy_consistency_single", "cost"):
            comparison.setdefault(key, None)
    results.update(
        schema=SCHEMA,
        upgraded_from=SCHEMA_V1,
        tasks={t: _v1_task(t) for t in tasks},
        inputs=None,
        hierarchy=hierarchy,
        location_keys=list(V1_LOCATION_KEYS),
        notes=[one_task_note(tasks[0])] if len(tasks) == 1 else [],
    )
    results.setdefault("resolved", None)
    results.setdefault("budget", None)
    return results


# --------------------------------------------------------------------------------- run accessors
def completed_runs(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The runs that completed (with test values), by name."""
    return {run["name"]: run for run in results.get("runs") or () if _completed(run)}


def value(
    run: Mapping[str, Any], task: str, metric: str, split: Literal["test", "val"] = "test"
) -> float | None:
    """A run's value of ``metric`` for ``task`` on ``split``: ``None`` when absent or null."""
    return _number(((run.get(split) or {}).get(task) or {}).get(metric))


# --------------------------------------------------------------------------------------- identity
Purpose = Literal["resume", "baseline", "leaderboard"]
PURPOSES: tuple[str, ...] = ("resume", "baseline", "leaderboard")

#: Options that never change what is trained or measured (free for every purpose).
_BOOKKEEPING = ("resume", "trainer.progress", "trainer.checkpoint_every",
                "benchmark.baseline_cache")  # fmt: skip
#: Per purpose, the config keys (a key frees everything below it) that may differ; location
#: options come on top (see the module docstring's table).
FREE: dict[str, tuple[str, ...]] = {
    "resume": _BOOKKEEPING,
    "baseline": (*_BOOKKEEPING, "weighting", "architecture", "benchmark.tasks",
                 "benchmark.single_task", "benchmark.delta_m_metrics", "benchmark.cost_rounds",
                 "benchmark.cost_steps"),
    "leaderboard": (*_BOOKKEEPING, "seed"),
}  # fmt: skip
#: Where the ``resolved`` record enters an identity (``baseline`` and ``leaderboard``).
RESOLVED_IDENTITY: dict[str, str] = {
    "precision": "trainer.precision",
    "device_class": "device_class",
}
LOCATION = "location"  #: the value of ``metadata["mtbench"]`` that marks a location option


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``. Lists and empty mappings stay whole values (so a
    key whose value is ``{}`` is still a key); an already flat mapping is returned equal."""
    flat: dict[str, Any] = {}
    for key, item in config.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            flat.update(flatten(item, f"{name}."))
        else:
            flat[name] = item
    return flat


def _under(key: str, prefixes: Collection[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def is_free(key: str, purpose: Purpose | str, location: Collection[str] = ()) -> bool:
    """Whether the flat config ``key`` may differ between runs that are the same for
    ``purpose`` (see the table in the module docstring)."""
    if purpose not in FREE:
        raise ValueError(f"identity purpose {purpose!r}: choose one of {', '.join(PURPOSES)}")
    return _under(key, FREE[purpose]) or _under(key, location)


def identity(
    config: Mapping[str, Any],
    purpose: Purpose | str,
    *,
    location: Collection[str] = (),
    resolved: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The flat config keys and values that make a run what it is for ``purpose``.

    Args:
        config: The config, nested (as in ``results.json``) or already flat.
        purpose: ``resume``, ``baseline`` or ``leaderboard`` (see the module docstring).
        location: Flat keys of location options (``results["location_keys"]``, or
            :func:`location_keys` of the plugins' config classes).
        resolved: ``results["resolved"]``: for ``baseline`` and ``leaderboard``, its precision
            replaces ``trainer.precision`` (``auto`` says nothing about what ran) and its
            ``device_class`` is added.
    """
    flat = flatten(config)
    kept = {k: v for k, v in flat.items() if not is_free(k, purpose, location)}
    if purpose != "resume" and isinstance(resolved, Mapping):
        for name, key in RESOLVED_IDENTITY.items():
            if resolved.get(name) is not None:
                kept[key] = resolved[name]
    return kept


def differing_keys(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    purpose: Purpose | str,
    *,
    location: Collection[str] = (),
) -> list[str]:
    """The flat keys whose values (or presence) differ between two configs' identities."""
    a = identity(old, purpose, location=location)
    b = identity(new, purpose, location=location)
    missing = object()
    return sorted(k for k in set(a) | set(b) if a.get(k, missing) != b.get(k, missing))


def location_fields(config_class: type) -> set[str]:
    """The fields of a plugin's config dataclass marked as location options
    (``field(..., metadata={"mtbench": "location"})``), with the fields of nested dataclass
    fields as ``outer.inner``.

    Raises:
        TypeError: ``config_class`` is not a dataclass.
    """
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        raise TypeError(f"location_fields() takes a dataclass type, not {config_class!r}")
    try:
        hints = typing.get_type_hints(config_class)
    except Exception:  # an annotation that cannot be resolved here: no nested fields then
        hints = {}
    found = set()
    for f in dataclasses.fields(config_class):
        if f.metadata.get("mtbench") == LOCATION:
            found.add(f.name)
            continue
        nested = hints.get(f.name)
        if isinstance(nested, type) and dataclasses.is_dataclass(nested):
            found |= {f"{f.name}.{inner}" for inner in location_fields(nested)}
    return found


def location_keys(config_classes: Mapping[str, type]) -> set[str]:
    """Flat config keys of the location options of each config group's plugin.

    Example:
        >>> location_keys({"dataset": registry.get("dataset", "cifar100").config})
        {'dataset.root', 'dataset.download', 'dataset.url'}
    """
    return {
        f"{group}.{name}" for group, cls in config_classes.items() for name in location_fields(cls)
    }
