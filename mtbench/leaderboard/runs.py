"""Run directories: finding them under sweep folders and reading each one into a run.

A *run directory* is a Hydra job directory holding ``results.json`` and ``.hydra/``; results are
read through :func:`mtbench.records.load`, so sweeps written with the older schema
``mtbench.results/1`` still build leaderboards. Anything but a complete, readable benchmark is a
:class:`FailedRun`; a single run's directory without ``results.json`` never started a benchmark
and is skipped (:func:`started_a_benchmark`).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtbench import records
from mtbench.leaderboard import identities
from mtbench.leaderboard.errors import LeaderboardError
from mtbench.records import TaskRecord
from mtbench.results import metric_scale, seconds_per_epoch
from mtbench.tasks import Metric

#: A per-task number's key: (task, metric).
MetricKey = tuple[str, str]


@dataclass(frozen=True)
class Run:
    """The numbers of one complete run: test metrics in their display unit (fractions in %),
    times in wall-clock seconds."""

    path: Path
    seed: int | None
    identity: dict[str, Any]
    tasks: tuple[str, ...]
    joint: dict[MetricKey, float]  # (task, metric) -> the joint model's test value
    single: dict[MetricKey, float]  # (task, metric) -> the single-task model's test value
    delta_m: float | None  # %
    seconds_per_epoch: float | None  # joint run (results.seconds_per_epoch)
    cost_ratio: float | None  # joint step / sum of single-task steps, interleaved in one process
    train_seconds: float | None  # joint run, all epochs
    git_commit: str | None
    device: str | None
    finished: float  # mtime of results.json, to pick the newest of duplicate seeds
    parallel_jobs: int  # the launcher's n_jobs (1: one job at a time; -1: one per CPU)
    failed_parts: tuple[FailedRun, ...] = ()  # training runs of this benchmark that failed
    load_recorded: bool = False  # results.json has a ``load`` record for its runs
    load_flags: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (training run, reasons) flagged
    task_records: dict[str, TaskRecord] = field(default_factory=dict)  # its "tasks" section
    schema: str = records.SCHEMA  # the schema of its file (older ones are read upgraded)
    # size and cost of the joint model (see mtbench.leaderboard.size)
    architecture: str = records.DEFAULT_ARCHITECTURE  # config architecture.name
    #: the joint run's parameter_counts, flat: trainable, shared, task_specific, unattributed
    #: and per_task:<task> (empty where not recorded: files written before architectures)
    parameters: dict[str, int] = field(default_factory=dict)
    over_hard_sharing: float | None = None  # comparison.cost.joint_over_hard_sharing
    over_hard_sharing_undefined: str | None = None  # why there is none, where recorded
    peak_memory_mb: float | None = None  # the joint run's, where its scope is the run alone
    peak_device_memory_mb: float | None = None  # the joint run's GPU peak, where recorded


@dataclass(frozen=True)
class FailedRun:
    """A run that did not complete: failed, still running, or without readable results.

    ``part`` names the one training run (``joint``, ``single:<task>``) that failed inside an
    otherwise complete benchmark; ``None`` means the whole benchmark.
    """

    path: Path
    status: str
    error: str
    seed: int | None
    overrides: tuple[str, ...]
    identity: dict[str, Any] | None
    part: str | None = None


def find_run_dirs(paths: Iterable[Path]) -> list[Path]:
    """Job directories under ``paths``: folders holding ``results.json`` or ``.hydra/``.

    Raises:
        LeaderboardError: a path does not exist or is not a folder, or no run is found.
    """
    found: dict[Path, None] = {}
    roots = [Path(p) for p in paths]
    for root in roots:
        if not root.is_dir():
            raise LeaderboardError(f"{root} is not a folder (give sweep or run directories)")
        for run in _walk_runs(root):
            found.setdefault(run.resolve(), None)
    if not found:
        raise LeaderboardError(
            "no runs found under " + ", ".join(str(r) for r in roots) + ": a run directory holds "
            "results.json or a .hydra/ folder (Hydra's job directory)"
        )
    return sorted(found)


def _walk_runs(root: Path) -> Iterator[Path]:
    for folder, subfolders, files in os.walk(root):
        if "results.json" in files or ".hydra" in subfolders:
            subfolders.clear()  # a run directory holds no other runs (only tensorboard/ etc.)
            yield Path(folder)
        else:
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))


def started_a_benchmark(path: Path) -> bool:
    """Whether a run directory belongs in the leaderboard: it holds ``results.json``, or it is a
    multirun job (which Hydra started as one of a sweep's benchmarks, so a missing
    ``results.json`` means that job failed early). A single run's directory without
    ``results.json`` never started a benchmark: a config refused before training, or the folder
    Hydra made for a ``resume=`` invocation that wrote into the resumed run's directory."""
    if (path / "results.json").is_file():
        return True
    mode = _hydra_mode(path)
    if mode is not None:
        return mode == "MULTIRUN"
    # Hydra before 1.2 records no mode; a sweep directory holds multirun.yaml above its jobs
    return any((folder / "multirun.yaml").is_file() for folder in path.resolve().parents)


def _hydra_mode(path: Path) -> str | None:
    """``hydra.mode`` (``RUN`` or ``MULTIRUN``) from the job's ``.hydra/hydra.yaml``, if any."""
    from omegaconf import OmegaConf

    try:
        mode = OmegaConf.load(path / ".hydra" / "hydra.yaml").hydra.get("mode")
    except Exception:  # no or unreadable record: the caller looks for the sweep's file instead
        return None
    return str(mode).rsplit(".", 1)[-1].upper() if mode is not None else None


@dataclass(frozen=True)
class _Read:
    """A run directory as read: its results (``/2`` form) or why they could not be read."""

    path: Path
    results: dict[str, Any] | None
    error: str | None  # why there are no results ("no results" or "unreadable")
    status: str | None
    mtime: float = 0.0

    @property
    def location(self) -> set[str]:
        return set((self.results or {}).get("location_keys") or ())


def _read(path: Path) -> _Read:
    results_file = path / records.FILENAME
    if not results_file.is_file():
        log_file = path / "mtbench.log"
        hint = f"; see {log_file}" if log_file.is_file() else ""
        error = ("no results.json: the run failed before its first result was written, or is "
                 f"still starting{hint}")  # fmt: skip
        return _Read(path, None, error, "no results")
    try:
        results = records.load(results_file)
        missing = [key for key in ("config", "status", "runs") if key not in results]
        if missing:
            raise KeyError(f"no {', '.join(missing)}")
        return _Read(path, results, None, results["status"], results_file.stat().st_mtime)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        error = f"cannot read {results_file}: {type(exc).__name__}: {exc}"
        return _Read(path, None, error, "unreadable")


def read_run(path: Path, location: Collection[str] | None = None) -> Run | FailedRun:
    """Read one run directory; anything but a complete, readable run is a :class:`FailedRun`.

    ``location``: the config keys that say where data is (default: those its ``results.json``
    lists); :func:`read_runs` passes those of every run it reads.
    """
    read = _read(path)
    return _to_run(read, read.location if location is None else location)


def _to_run(read: _Read, location: Collection[str]) -> Run | FailedRun:
    path, overrides = read.path, _read_overrides(read.path)
    if read.results is None:
        config = _read_hydra_config(path)
        identity = identities.of_config(config, None, location)
        return FailedRun(
            path, str(read.status), str(read.error), _seed(config), overrides, identity
        )
    results = read.results
    config, status = results["config"], results["status"]
    try:
        if status != "complete":
            error = results.get("error") or _UNFINISHED.get(status, f"status {status!r}")
            identity = identities.of_config(config, results.get("resolved"), location)
            return FailedRun(path, status, error, _seed(config), overrides, identity)
        return _complete_run(path, results, read.mtime, location)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        config = _read_hydra_config(path)
        return FailedRun(
            path, "unreadable",
            f"cannot read {path / records.FILENAME}: {type(exc).__name__}: {exc}",
            _seed(config), overrides, identities.of_config(config, None, location),
        )  # fmt: skip


_UNFINISHED = {
    "running": "results.json says running: the run is still going, or its process was killed "
    "before it could record a failure (see its mtbench.log)",
    "failed": "failed without a recorded error",
}


def _shown(run: Mapping[str, Any], task: str, metric: Metric) -> float | None:
    """A run's test value of ``metric``, in the unit it is shown in (fractions in %)."""
    value = records.value(run, task, metric.name)
    return None if value is None else metric_scale(metric) * value


def _complete_run(
    path: Path, results: Mapping[str, Any], finished: float, location: Collection[str]
) -> Run:
    """The numbers of a complete benchmark; a training run in it that failed (a non-finite loss,
    ``test`` null) contributes none and is kept in ``failed_parts``."""
    config = results["config"]
    identity = identities.of_config(config, results.get("resolved"), location) or {}
    runs = records.completed_runs(results)
    failed_parts = [
        FailedRun(
            path,
            "failed",
            run.get("error") or "failed without a recorded error",
            _seed(config),
            (),
            identity,
            run["name"],
        )
        for run in results["runs"]
        if run["name"] not in runs
    ]
    tasks_section = records.task_records(results)
    joint_run = runs.get(records.JOINT_RUN)
    every = {run["name"]: run for run in results["runs"]}
    tasks = tuple(
        every[records.JOINT_RUN]["tasks"]
        if records.JOINT_RUN in every
        else dict.fromkeys(t for run in results["runs"] for t in run["tasks"])
    )
    joint: dict[MetricKey, float] = {}
    single: dict[MetricKey, float] = {}
    for task in tasks:
        record = tasks_section.get(task)
        baseline = runs.get(records.single_run_name(task))
        for metric in record.metrics if record else ():
            key = (task, metric.name)
            if joint_run is not None and (value := _shown(joint_run, task, metric)) is not None:
                joint[key] = value
            if baseline is not None and (value := _shown(baseline, task, metric)) is not None:
                single[key] = value
    timing = joint_run["timing"] if joint_run else {}
    comparison = results.get("comparison") or {}
    cost = comparison.get("cost") or {}
    loads = {run["name"]: run["load"] for run in results["runs"] if run.get("load")}
    flags = tuple(
        (name, tuple(str(r) for r in load.get("reasons") or ()))
        for name, load in loads.items()
        if load.get("flagged")
    )
    return Run(
        path=path,
        seed=_seed(config),
        identity=identity,
        tasks=tasks,
        joint=joint,
        single=single,
        delta_m=comparison.get("delta_m_percent"),
        seconds_per_epoch=seconds_per_epoch(joint_run) if joint_run else None,
        cost_ratio=cost.get("joint_over_singles"),
        train_seconds=timing.get("train_seconds"),
        git_commit=(results.get("environment") or {}).get("git_commit"),
        device=joint_run.get("device") if joint_run else None,
        finished=finished,
        parallel_jobs=_parallel_jobs(path),
        failed_parts=tuple(failed_parts),
        load_recorded=bool(loads),
        load_flags=flags,
        task_records={t: r for t, r in tasks_section.items() if t in tasks},
        schema=str(results.get("upgraded_from") or results["schema"]),
        architecture=str((config.get("architecture") or {}).get("name", "?")),
        parameters=_parameters(joint_run),
        over_hard_sharing=cost.get("joint_over_hard_sharing"),
        over_hard_sharing_undefined=cost.get("joint_over_hard_sharing_undefined")
        or (comparison.get("cost_undefined") if not cost else None),
        peak_memory_mb=_run_memory(joint_run),
        peak_device_memory_mb=(joint_run or {}).get("peak_device_memory_mb"),
    )


def _parameters(run: Mapping[str, Any] | None) -> dict[str, int]:
    """A run's ``parameter_counts`` as one flat mapping (see :attr:`Run.parameters`)."""
    counts = (run or {}).get("parameter_counts") or {}
    flat = {
        name: int(counts[key])
        for name, key in (("trainable", "trainable"), ("shared", "shared"),
                          ("task_specific", "task_specific"),
                          ("unattributed", "task_specific_unattributed"))
        if counts.get(key) is not None
    }  # fmt: skip
    flat |= {f"per_task:{t}": int(n) for t, n in (counts.get("per_task") or {}).items()}
    return flat


def _run_memory(run: Mapping[str, Any] | None) -> float | None:
    """A run's host memory peak where it is the run's own (``peak_memory_scope`` ``run``); a
    peak of the whole process (other platforms) includes the runs before it and is left out."""
    if not run or run.get("peak_memory_scope") != "run":
        return None
    return run.get("peak_memory_mb")


def _read_overrides(path: Path) -> tuple[str, ...]:
    try:
        from omegaconf import OmegaConf

        return tuple(str(o) for o in OmegaConf.load(path / ".hydra" / "overrides.yaml"))
    except Exception:  # overrides only label a failed run; their absence is not an error
        return ()


def _parallel_jobs(path: Path) -> int:
    """How many jobs the launcher ran at once (``hydra.launcher.n_jobs``; 1 when absent)."""
    from omegaconf import OmegaConf

    try:
        n_jobs = OmegaConf.load(path / ".hydra" / "hydra.yaml").hydra.launcher.get("n_jobs", 1)
    except Exception:  # a run directory without Hydra's record: nothing says it was parallel
        return 1
    return n_jobs if isinstance(n_jobs, int) else 1


def _read_hydra_config(path: Path) -> dict[str, Any] | None:
    """The job's config as Hydra saved it (interpolations resolved where possible); a job of a
    version before architectures existed trained with hard sharing, as :func:`records.load`
    reads its results."""
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.load(path / ".hydra" / "config.yaml")
    except Exception:
        return None
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # e.g. a resolver only Hydra's app registers
        config = OmegaConf.to_container(cfg, resolve=False)
    if isinstance(config, dict) and "architecture" not in config:
        config["architecture"] = {"name": records.DEFAULT_ARCHITECTURE}
    return config  # type: ignore[return-value]


def _seed(config: Mapping[str, Any] | None) -> int | None:
    seed = (config or {}).get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


@dataclass(frozen=True)
class SweepRuns:
    """What :func:`read_runs` found: complete runs, failed runs (each complete run's failed
    training runs right after it), the directories skipped as never started, and the location
    options of every identity."""

    complete: list[Run]
    failed: list[FailedRun]
    skipped: list[Path]
    location: set[str]


def read_runs(sources: Sequence[Path]) -> SweepRuns:
    """Find and read every run directory under ``sources`` (sweep or run directories).

    Raises:
        LeaderboardError: see :func:`find_run_dirs`; also when every directory found is a single
            run that never started a benchmark.
    """
    read: list[_Read] = []
    skipped: list[Path] = []
    for path in find_run_dirs(sources):
        if started_a_benchmark(path):
            read.append(_read(path))
        else:
            skipped.append(path)
    if not read:
        raise LeaderboardError(
            "no runs found under " + ", ".join(str(s) for s in sources) + f": the {len(skipped)} "
            "run director(y/ies) found are single runs without results.json, which never started "
            "a benchmark"
        )
    # one set of location keys for every identity, so that a run read from its Hydra config
    # alone (it died before results.json) gets the identity of its row
    location = set().union(*(r.location for r in read))
    complete: list[Run] = []
    failed: list[FailedRun] = []
    for one in read:
        run = _to_run(one, location)
        if isinstance(run, Run):
            complete.append(run)
            failed.extend(run.failed_parts)
        else:
            failed.append(run)
    return SweepRuns(complete, failed, skipped, location)
