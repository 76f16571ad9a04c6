"""Leaderboards over many runs: one row per configuration, statistics over its seeds.

A *run directory* is a Hydra job directory holding ``results.json`` and ``.hydra/``; results are
read through :func:`mtbench.records.load`, so sweeps written with the older schema
``mtbench.results/1`` still build leaderboards. Runs are grouped by their *configuration*:
:func:`mtbench.records.identity` for the purpose ``leaderboard`` (the config without the seed,
which the statistics run over, and without options that do not change what is trained: where
data lives, how progress is shown...), with ``trainer.precision`` replaced by the precision the run
actually used and the machine's ``device_class`` added, where ``results.json`` records them
(``resolved``): runs in float32 and in bfloat16, or on two kinds of hardware, never pool into one
row. The location options are those the runs' ``results.json`` list (``location_keys``).

The numbers come from each run's ``tasks`` section: for every task, every metric its kind reports
(the primary metric first), of the joint and of the single-task model, with its unit (fractions
in %) and direction (higher or lower is better). For each configuration the leaderboard gives,
over its seeds, the mean, the sample standard deviation and a 95% Student-t confidence interval
of each of those, of delta_m, of the joint run's seconds per epoch (load-dependent) and of the
load-robust joint/single-task step-cost ratio.

Rows with at least two seeds of delta_m are ranked by its mean (delta_m is positive when the joint
model is better, whatever each metric's direction); the others are listed after them, ``1 seed:
not ranked``. Baselines are shared per seed, so rows are also compared *paired*: each row against
its *reference row*, seed by seed, as the mean *gain* with its Student-t interval over the seeds
both rows have (``n/a`` with fewer than two). A gain is row minus reference for a higher-is-better
number and reference minus row for a lower-is-better one: positive means this row is better. The
reference of a row is the row whose config has the reference value (default
``weighting.name=ew``) and is otherwise equal, except for the options of the plugin the reference
names (for ``weighting.name``: every ``weighting.*`` key). ``--reference KEY=VALUE`` (repeatable)
chooses another, e.g. ``--reference weighting.name=static``; a ``KEY`` that does not end in
``.name`` frees only that key (``--reference trainer.learning_rate=0.001``).

Runs that failed, are still running or cannot be read are listed apart and never enter a
statistic. A directory without ``results.json`` is such a failed run only when it is a multirun
job (Hydra's ``hydra.mode`` is ``MULTIRUN``, or a folder above it holds ``multirun.yaml``); a
single run's directory without it never started a benchmark (a config refused before training,
the folder of a ``resume=`` invocation) and is skipped, with a count in the notes. Runs whose
machine load was flagged (``load.flagged`` in ``results.json``) are marked, with the reasons.

Files written into the output folder (each atomically): ``leaderboard.md``, ``leaderboard.csv``,
``primary_vs_time.png`` and ``single_vs_joint.png``.

Usage::

    python -m mtbench.leaderboard outputs/multirun/2026-01-01/10-00-00
    python -m mtbench.leaderboard SWEEP_A SWEEP_B --out comparison/
    python -m mtbench.leaderboard SWEEP --reference weighting.name=static
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import re
import sys
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtbench import records
from mtbench.io import atomic_write_bytes, atomic_write_text
from mtbench.records import TaskRecord
from mtbench.results import arrow, metric_scale, metric_unit, seconds_per_epoch
from mtbench.tasks import Metric

#: The default reference row of the paired comparison: ``KEY=VALUE`` as on the command line.
DEFAULT_REFERENCE: tuple[str, ...] = ("weighting.name=ew",)
CONFIDENCE = 0.95
MARKDOWN = "leaderboard.md"
CSV = "leaderboard.csv"
TIME_PLOT = "primary_vs_time.png"
SINGLE_JOINT_PLOT = "single_vs_joint.png"
_ABSENT = "–"  # a key this row's configuration does not have
AXIS_START = 0.0  # plots' metric and time axes start here: no exaggerated distances
#: The sides of a per-task number: the multitask model and the single-task baseline.
SIDES = ("joint", "single")


class LeaderboardError(Exception):
    """The leaderboard cannot be built (no runs found, a folder that does not exist...)."""


# ------------------------------------------------------------------------------------ statistics
@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation and Student-t confidence interval of ``n`` values.

    ``std``, ``ci_low`` and ``ci_high`` are ``None`` when ``n < 2``: one value has no spread.
    """

    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Stat:
    """``mean ± t_{(1+confidence)/2, n-1} * std / sqrt(n)``, with ``std`` using ``n - 1``."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return Stat(0, None, None, None, None)
    mean = float(x.mean())
    if n < 2:
        return Stat(1, mean, None, None, None)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, df=n - 1)) * std / math.sqrt(n)
    return Stat(n, mean, std, mean - half, mean + half)


# ------------------------------------------------------------------------------------------ runs
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
    lists); :func:`build` passes those of every run it reads.
    """
    read = _read(path)
    return _to_run(read, read.location if location is None else location)


def _to_run(read: _Read, location: Collection[str]) -> Run | FailedRun:
    path, overrides = read.path, _read_overrides(read.path)
    if read.results is None:
        config = _read_hydra_config(path)
        identity = _identity(config, None, location)
        return FailedRun(
            path, str(read.status), str(read.error), _seed(config), overrides, identity
        )
    results = read.results
    config, status = results["config"], results["status"]
    try:
        if status != "complete":
            error = results.get("error") or _UNFINISHED.get(status, f"status {status!r}")
            identity = _identity(config, results.get("resolved"), location)
            return FailedRun(path, status, error, _seed(config), overrides, identity)
        return _complete_run(path, results, read.mtime, location)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        config = _read_hydra_config(path)
        return FailedRun(
            path, "unreadable",
            f"cannot read {path / records.FILENAME}: {type(exc).__name__}: {exc}",
            _seed(config), overrides, _identity(config, None, location),
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
    identity = _identity(config, results.get("resolved"), location) or {}
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
        cost_ratio=(comparison.get("cost") or {}).get("joint_over_singles"),
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
    )


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
    """The job's config as Hydra saved it (interpolations resolved where possible)."""
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.load(path / ".hydra" / "config.yaml")
    except Exception:
        return None
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except Exception:  # e.g. a resolver only Hydra's app registers
        return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def _seed(config: Mapping[str, Any] | None) -> int | None:
    seed = (config or {}).get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def _identity(
    config: Mapping[str, Any] | None,
    resolved: Mapping[str, Any] | None,
    location: Collection[str],
) -> dict[str, Any] | None:
    """A configuration's identity: :func:`mtbench.records.identity` for ``leaderboard``."""
    if not isinstance(config, Mapping):
        return None
    return records.identity(config, "leaderboard", location=location, resolved=resolved)


def _key(identity: Mapping[str, Any]) -> str:
    return json.dumps(identity, sort_keys=True, default=str)


# ------------------------------------------------------------------------------------ leaderboard
@dataclass
class Row:
    """One configuration: its complete runs (one per seed) and what was left out of them.

    ``rank`` is ``None`` for a row that is not ranked, and ``not_ranked`` says why (fewer than two
    seeds of delta_m: its mean alone says nothing about how it compares).
    """

    identity: dict[str, Any]
    runs: list[Run]
    duplicates: list[Run] = field(default_factory=list)  # same seed again; not counted
    failed: list[FailedRun] = field(default_factory=list)
    rank: int | None = None
    not_ranked: str | None = None

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.runs]

    def stat(self, quantity: Quantity) -> Stat:
        return summarize([v for r in self.runs if (v := quantity.value(r)) is not None])

    @property
    def load_flagged(self) -> list[Run]:
        """Its counted runs with a training run whose machine load was flagged."""
        return [r for r in self.runs if r.load_flags]


def _slug(text: str) -> str:
    """``mae/homo`` -> ``mae_homo``: a CSV column part."""
    return re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_") or "_"


@dataclass(frozen=True)
class Quantity:
    """A number of each run, summarized over seeds: a task's test metric on one side (``key``
    is ``(task, metric)``, ``attribute`` the side) or a whole-run number (``key`` is ``None``).

    ``primary``: shown in the ranking table (other metrics have a table of their own).
    """

    label: str  # Markdown column
    column: str  # CSV column prefix, with the unit
    attribute: str
    key: MetricKey | None = None
    higher_is_better: bool = True
    unit: str = ""  # as shown: "%", "s", a physical unit, "" for ratios
    primary: bool = True

    @classmethod
    def of_metric(cls, side: str, task: str, metric: Metric, primary: bool) -> Quantity:
        """``joint fine accuracy (% ↑)``, CSV ``fine_joint_accuracy_pct``."""
        unit = metric_unit(metric)
        return cls(
            label=f"{side} {task} {metric.name} ({unit} {arrow(metric)})",
            column=f"{task}_{side}_{_slug(metric.name)}_{'pct' if unit == '%' else _slug(unit)}",
            attribute=side,
            key=(task, metric.name),
            higher_is_better=metric.higher_is_better,
            unit=unit,
            primary=primary,
        )

    def value(self, run: Run) -> float | None:
        value = getattr(run, self.attribute)
        return value.get(self.key) if self.key is not None else value

    def gain(self, value: float, reference: float) -> float:
        """How much better ``value`` is than ``reference``: their difference, negated where
        lower is better (positive: ``value`` is better)."""
        return value - reference if self.higher_is_better else reference - value

    def digits(self, stat: Stat) -> int:
        """Decimals shown: 2, or more for small values of a physical unit (3 significant)."""
        if self.unit in ("%", "s", "") or not stat.mean:
            return 2
        return max(2, 2 - math.floor(math.log10(abs(stat.mean))))


@dataclass(frozen=True)
class Reference:
    """Which row every row is compared with, seed by seed: the row whose config has ``values``
    (``KEY=VALUE`` as typed) and otherwise equals it, except for the keys that the choice frees.

    A key ending in ``.name`` picks a plugin and frees its options too (``weighting.name=ew``
    frees every ``weighting.*`` key); any other key frees only itself.
    """

    values: dict[str, str]

    @classmethod
    def parse(cls, specs: Sequence[str]) -> Reference:
        values = {}
        for spec in specs:
            key, sep, value = spec.partition("=")
            if not sep or not key.strip():
                raise LeaderboardError(f"--reference {spec!r}: expected KEY=VALUE")
            values[key.strip()] = value.strip()
        if not values:
            raise LeaderboardError("--reference: give at least one KEY=VALUE")
        return cls(values)

    def __str__(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items())

    def frees(self, key: str) -> bool:
        return any(
            key == k or (k.endswith(".name") and key.startswith(k[: -len("name")]))
            for k in self.values
        )

    def chosen_by(self, identity: Mapping[str, Any]) -> bool:
        """Whether ``identity`` has every reference value (typed text or the value it parses to)."""
        import yaml

        def same(value: Any, text: str) -> bool:
            try:
                parsed = yaml.safe_load(text)
            except yaml.YAMLError:
                parsed = text
            return value == parsed or _cell(value) == text

        return all(k in identity and same(identity[k], v) for k, v in self.values.items())

    def rest(self, identity: Mapping[str, Any]) -> str:
        """The identity without the keys the reference frees: equal for paired rows."""
        return _key({k: v for k, v in identity.items() if not self.frees(k)})


@dataclass(frozen=True)
class Paired:
    """A row against its reference row on the seeds both have (see :class:`Reference`).

    ``reference`` is the reference row's index, ``None`` when there is none (``why`` says so);
    ``gains`` maps a quantity's CSV column to the statistics of the row's gain over the
    reference over ``seeds`` (:meth:`Quantity.gain`: positive means the row is better). The row
    that is its own reference has ``why == "reference"``.
    """

    reference: int | None
    why: str
    seeds: tuple[int, ...] = ()
    gains: dict[str, Stat] = field(default_factory=dict)


@dataclass
class Leaderboard:
    """Ranked rows first (by mean delta_m, highest first), then rows that are not ranked; the
    failed runs, what tells rows apart, and the directories skipped as never started."""

    rows: list[Row]
    failed: list[FailedRun]
    tasks: list[str]
    varying: list[str]
    sources: list[Path]
    reference: Reference = field(default_factory=lambda: Reference.parse(DEFAULT_REFERENCE))
    skipped: list[Path] = field(default_factory=list)
    #: every task's metrics, from the runs' "tasks" sections (see :func:`merge_task_records`)
    task_records: dict[str, TaskRecord] = field(default_factory=dict)
    #: config keys the runs list as location options (not part of any row's identity)
    location: set[str] = field(default_factory=set)
    conflicts: list[str] = field(default_factory=list)  # tasks declared differently by runs

    @property
    def quantities(self) -> list[Quantity]:
        """The summarized numbers that at least one run has, in column order: each task's
        primary metric (joint, then single), delta_m, the joint run's time and cost, then the
        tasks' other metrics (joint, then single)."""
        primaries, others = [], []
        for side in SIDES:
            for task, record in self.task_records.items():
                for metric in record.ordered_metrics:
                    primary = metric.name == record.primary
                    quantity = Quantity.of_metric(side, task, metric, primary)
                    (primaries if primary else others).append(quantity)
        whole = [
            Quantity("delta_m %", "delta_m_pct", "delta_m", unit="%"),
            Quantity(
                "s/epoch (joint; load-dependent)", "joint_seconds_per_epoch", "seconds_per_epoch",
                higher_is_better=False, unit="s",
            ),
            Quantity(
                "joint/singles step cost (load-robust)", "joint_over_singles_cost", "cost_ratio",
                higher_is_better=False,
            ),
        ]  # fmt: skip
        runs = [run for row in self.rows for run in row.runs]
        candidates = [*primaries, *whole, *others]
        return [q for q in candidates if any(q.value(run) is not None for run in runs)]

    @property
    def paired_quantities(self) -> list[Quantity]:
        """What is compared seed by seed with the reference row: delta_m, then every joint
        metric (the primary ones first)."""
        compared = [q for q in self.quantities if q.attribute in ("delta_m", "joint")]
        return sorted(compared, key=lambda q: (q.attribute != "delta_m", not q.primary))

    def paired(self, index: int) -> Paired:
        """Row ``index`` against its reference row, per seed both have, summarized over the
        seeds (gains: positive means the row is better)."""
        row = self.rows[index]
        if self.reference.chosen_by(row.identity):
            return Paired(index, "reference")
        rest = self.reference.rest(row.identity)
        candidates = [
            i
            for i, other in enumerate(self.rows)
            if self.reference.chosen_by(other.identity)
            and self.reference.rest(other.identity) == rest
        ]
        if not candidates:
            return Paired(None, "no reference row")
        if len(candidates) > 1:  # e.g. static rows with different weights: which one is unclear
            return Paired(None, f"{len(candidates)} reference rows")
        (ref,) = candidates
        mine = {r.seed: r for r in row.runs if r.seed is not None}
        theirs = {r.seed: r for r in self.rows[ref].runs if r.seed is not None}
        seeds = tuple(sorted(set(mine) & set(theirs)))
        gains = {}
        for quantity in self.paired_quantities:
            pairs = [(quantity.value(mine[s]), quantity.value(theirs[s])) for s in seeds]
            gains[quantity.column] = summarize(
                [quantity.gain(a, b) for a, b in pairs if a is not None and b is not None]
            )
        return Paired(ref, "", seeds, gains)

    @property
    def shared(self) -> dict[str, Any]:
        """Identity keys with one value in every row."""
        if not self.rows:
            return {}
        return {k: v for k, v in self.rows[0].identity.items() if k not in self.varying}

    def label(self, index: int) -> str:
        """``#1 weighting=ew, trainer.learning_rate=0.01``: the row's number and its values of
        the varying keys (a plugin's name and options in one, see :func:`_columns`)."""
        values = _describe(self.rows[index].identity, self.columns)
        return f"#{index + 1}" + (f" {values}" if values else "")

    @property
    def columns(self) -> list[Column]:
        """The Markdown columns of the varying keys (see :func:`_columns`)."""
        return _columns(self.varying, [row.identity for row in self.rows])


def build(paths: Iterable[Path], reference: Sequence[str] = DEFAULT_REFERENCE) -> Leaderboard:
    """Read every run under ``paths`` (sweep or run directories) and group them by configuration.

    ``reference``: ``KEY=VALUE`` choices of the reference row of the paired comparison (see
    :class:`Reference`).

    Raises:
        LeaderboardError: see :func:`find_run_dirs`; also when every directory found is a single
            run that never started a benchmark, or a reference is not ``KEY=VALUE``.
    """
    sources = [Path(p) for p in paths]
    chosen = Reference.parse(reference)
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
    rows = _group(complete)
    for run in failed:
        index = _row_of(run.identity, rows)
        if index is not None:
            rows[index].failed.append(run)
    tasks = list(dict.fromkeys(t for run in complete for t in run.tasks))
    task_records, conflicts = merge_task_records([run.task_records for run in complete])
    varying = _varying([r.identity for r in rows])
    return Leaderboard(
        rows, failed, tasks, varying, sources, chosen, skipped, task_records, location, conflicts
    )


def merge_task_records(
    sections: Sequence[Mapping[str, TaskRecord]],
) -> tuple[dict[str, TaskRecord], list[str]]:
    """One record per task from the runs' ``tasks`` sections: the first run's, with metrics that
    only later runs report appended. A metric that two runs declare with a different unit or
    direction keeps the first declaration and is reported in the returned conflicts."""
    merged: dict[str, TaskRecord] = {}
    conflicts: list[str] = []
    for section in sections:
        for task, record in section.items():
            first = merged.get(task)
            if first is None:
                merged[task] = record
                continue
            known = {m.name: m for m in first.metrics}
            extra = []
            for metric in record.metrics:
                declared = known.get(metric.name)
                if declared is None:
                    extra.append(metric)
                elif (declared.unit, declared.direction) != (metric.unit, metric.direction):
                    conflicts.append(
                        f"task '{task}' metric '{metric.name}': {declared.unit}, "
                        f"{declared.direction} is better in one run; {metric.unit}, "
                        f"{metric.direction} is better in another (the first is used)"
                    )
            if extra:
                merged[task] = dataclasses.replace(first, metrics=(*first.metrics, *extra))
    return merged, list(dict.fromkeys(conflicts))


def _row_of(identity: Mapping[str, Any] | None, rows: Sequence[Row]) -> int | None:
    """The index of the row a failed run belongs to: the row of its identity. A run that failed
    before recording the precision and machine it resolved (no ``device_class``: only its Hydra
    config was read) belongs to the one row equal to it apart from those keys, if only one is."""
    if identity is None:
        return None
    keys = [_key(row.identity) for row in rows]
    if _key(identity) in keys:
        return keys.index(_key(identity))
    if records.RESOLVED_IDENTITY["device_class"] in identity:
        return None

    def unresolved(other: Mapping[str, Any]) -> str:
        return _key({k: v for k, v in other.items() if k not in records.RESOLVED_IDENTITY.values()})

    matches = [i for i, row in enumerate(rows) if unresolved(row.identity) == unresolved(identity)]
    return matches[0] if len(matches) == 1 else None


def _group(runs: list[Run]) -> list[Row]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(_key(run.identity), []).append(run)
    rows = [_row(group) for group in groups.values()]
    rows.sort(key=_rank_key)
    ranked = [row for row in rows if row.not_ranked is None]
    for rank, row in enumerate(ranked, start=1):
        row.rank = rank
    return rows


def _row(runs: list[Run]) -> Row:
    """One run per seed: of duplicates, the most recently finished counts."""
    newest: dict[int | None, Run] = {}
    for run in sorted(runs, key=lambda r: (r.finished, str(r.path))):
        newest[run.seed] = run
    kept = sorted(newest.values(), key=lambda r: (r.seed is None, r.seed or 0, str(r.path)))
    duplicates = [r for r in runs if r not in kept]
    row = Row(dict(runs[0].identity), kept, duplicates)
    seeds_with_delta_m = summarize([r.delta_m for r in kept if r.delta_m is not None]).n
    if len(kept) < 2:
        row.not_ranked = "1 seed: not ranked"
    elif seeds_with_delta_m < 2:
        row.not_ranked = f"delta_m of {seeds_with_delta_m} seed(s): not ranked"
    return row


def _rank_key(row: Row) -> tuple[bool, bool, float, str]:
    mean = summarize([r.delta_m for r in row.runs if r.delta_m is not None]).mean
    return (row.not_ranked is not None, mean is None, -(mean or 0.0), _key(row.identity))


#: A Markdown column: its header and the identity keys it shows.
Column = tuple[str, tuple[str, ...]]


def _columns(keys: Sequence[str], identities: Sequence[Mapping[str, Any]]) -> list[Column]:
    """One column per varying key, except that a plugin's name and options (``weighting.name``,
    ``weighting.reduction``...) share one column named after the plugin kind, so a sweep over
    many methods does not get a mostly empty column per option (see :func:`_column_cell`)."""
    plugins = {
        k.split(".")[0] for i in identities for k in i if k.count(".") == 1 and k.endswith(".name")
    }
    columns: dict[str, list[str]] = {}
    for key in keys:
        group = key.split(".")[0]
        header = group if "." in key and group in plugins else key
        columns.setdefault(header, []).append(key)
    return [(header, tuple(members)) for header, members in columns.items()]


def _column_cell(identity: Mapping[str, Any], column: Column) -> str:
    """A plugin column: ``pcgrad(reduction=sum)``, the name with its options that differ between
    rows (those this configuration has); any other column: the key's value."""
    header, members = column
    if header in members:  # one key
        return _cell(identity.get(header, _ABSENT))
    name = _cell(identity.get(f"{header}.name", _ABSENT))
    options = [
        f"{k[len(header) + 1 :]}={_cell(identity[k])}"
        for k in members
        if k != f"{header}.name" and k in identity
    ]
    return name + (f"({', '.join(options)})" if options else "")


def _describe(identity: Mapping[str, Any], columns: Sequence[Column]) -> str:
    """``weighting=pcgrad(reduction=sum), trainer.learning_rate=0.01``."""
    return ", ".join(f"{header}={_column_cell(identity, (header, m))}" for header, m in columns)


def _varying(identities: list[dict[str, Any]]) -> list[str]:
    """Keys whose value (or presence) differs between identities, in config order."""
    keys = list(dict.fromkeys(k for identity in identities for k in identity))
    groups = list(dict.fromkeys(k.split(".")[0] for k in keys))

    def position(key: str) -> tuple[int, bool]:  # a plugin's name before its options
        return groups.index(key.split(".")[0]), not key.endswith(".name")

    return [
        k
        for k in sorted(keys, key=position)
        if len({json.dumps(i.get(k, _ABSENT), sort_keys=True, default=str) for i in identities}) > 1
    ]


# -------------------------------------------------------------------------------------- rendering
def _cell(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(_cell(v) for v in value) + "]"
    else:
        text = json.dumps(value, default=str)
    return text.replace("|", "\\|")


def format_stat(stat: Stat, seeds: int, digits: int = 2) -> str:
    """``mean ± std [ci_low, ci_high]``; ``n/a`` and ``undefined`` where one seed has no spread."""
    if stat.mean is None:
        return "n/a"
    text = f"{stat.mean:.{digits}f}"
    if stat.std is None or stat.ci_low is None or stat.ci_high is None:
        text += " ± n/a [undefined]"
    else:
        text += f" ± {stat.std:.{digits}f} [{stat.ci_low:.{digits}f}, {stat.ci_high:.{digits}f}]"
    return text + (f" (n={stat.n})" if stat.n != seeds else "")


def _one_line(error: str, limit: int = 300) -> str:
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    text = lines[0] if len(lines) < 2 else f"{lines[0]} … {lines[-1]}"
    return (text[: limit - 1] + "…" if len(text) > limit else text).replace("|", "\\|")


def _where(path: Path, out_dir: Path) -> str:
    return os.path.relpath(path, out_dir.resolve())


def format_difference(stat: Stat, digits: int = 2) -> str:
    """``+mean [ci_low, ci_high]`` of paired gains; ``n/a`` with fewer than two pairs."""
    if stat.mean is None or stat.ci_low is None or stat.ci_high is None:
        return "n/a" + (" (1 paired seed)" if stat.n == 1 else "")
    return f"{stat.mean:+.{digits}f} [{stat.ci_low:+.{digits}f}, {stat.ci_high:+.{digits}f}]"


def _rank_cell(row: Row) -> str:
    return str(row.rank) if row.rank is not None else str(row.not_ranked)


def _has_load(board: Leaderboard) -> bool:
    return any(run.load_recorded for row in board.rows for run in row.runs)


def _load_cell(row: Row) -> str:
    """``flagged: seed 0, 2`` (see the notes), ``ok``, or ``n/a`` where nothing was recorded."""
    flagged = row.load_flagged
    if flagged:
        return "flagged: seed " + ", ".join(str(r.seed) for r in flagged)
    recorded = sum(r.load_recorded for r in row.runs)
    if not recorded:
        return "n/a"
    return "ok" if recorded == len(row.runs) else f"ok ({recorded} of {len(row.runs)} recorded)"


def main_table(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    """The leaderboard's Markdown table: row number, rank, varying keys, seeds, one column per
    primary quantity (each task's primary metric, delta_m, time and cost)."""
    with_failed, with_load = bool(board.failed), _has_load(board)
    columns = board.columns
    quantities = [q for q in board.quantities if q.primary]
    headers = ["#", "rank", *(c[0] for c in columns), "seeds"]
    headers += ["failed"] if with_failed else []
    headers += ["load"] if with_load else []
    headers += [q.label for q in quantities] + ["seed values"]
    rows = []
    for index, row in enumerate(board.rows):
        cells = [str(index + 1), _rank_cell(row)]
        cells += [_column_cell(row.identity, c) for c in columns]
        cells.append(str(len(row.runs)))
        if with_failed:
            cells.append(str(len(row.failed)))
        if with_load:
            cells.append(_load_cell(row))
        cells += [_stat_cell(row, q) for q in quantities]
        cells.append(", ".join(str(s) for s in row.seeds))
        rows.append(cells)
    return headers, rows


def _stat_cell(row: Row, quantity: Quantity) -> str:
    stat = row.stat(quantity)
    return format_stat(stat, len(row.runs), quantity.digits(stat))


def other_metrics_table(board: Leaderboard) -> tuple[list[str], list[list[str]]] | None:
    """The tasks' other metrics (not primary) per row, or ``None`` when there are none."""
    quantities = [q for q in board.quantities if not q.primary]
    if not quantities:
        return None
    headers = ["#", *(c[0] for c in board.columns), *(q.label for q in quantities)]
    rows = [
        [str(index + 1), *(_column_cell(row.identity, c) for c in board.columns)]
        + [_stat_cell(row, q) for q in quantities]
        for index, row in enumerate(board.rows)
    ]
    return headers, rows


def _shown_paired(board: Leaderboard) -> list[Quantity]:
    """The paired quantities of the Markdown table: delta_m and the joint primary metrics (the
    CSV has every joint metric)."""
    return [q for q in board.paired_quantities if q.primary]


def paired_table(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    """Each row against its reference row, seed by seed: reference, paired seeds, gains."""
    quantities = _shown_paired(board)
    columns = board.columns
    headers = ["#", *(c[0] for c in columns), "reference", "paired seeds"]
    headers += [f"gain {q.label}" for q in quantities]
    rows = []
    for index, row in enumerate(board.rows):
        paired = board.paired(index)
        cells = [str(index + 1), *(_column_cell(row.identity, c) for c in columns)]
        if paired.why == "reference":
            cells += ["this row", "–", *("–" for _ in quantities)]
        elif paired.reference is None:
            cells += [paired.why, "–", *("n/a" for _ in quantities)]
        else:
            cells += [f"#{paired.reference + 1}", ", ".join(map(str, paired.seeds)) or "none"]
            for q in quantities:
                gain = paired.gains[q.column]
                cells.append(format_difference(gain, q.digits(gain)))
        rows.append(cells)
    return headers, rows


def failed_table(board: Leaderboard, out_dir: Path) -> tuple[list[str], list[list[str]]]:
    """The failed runs: where, why, and which configuration (the row it belongs to, if any)."""
    known = [r.identity for r in board.failed if r.identity is not None]
    identities = [row.identity for row in board.rows] + known
    columns = _columns(_varying(identities), identities)
    headers = ["run", "seed", "status", "row", "configuration", "error"]
    rows = []
    for run in board.failed:
        if run.identity is None:  # no readable config: Hydra's overrides say what was asked
            config = " ".join(f"`{o}`" for o in run.overrides) or "unknown"
        else:
            config = _describe(run.identity, columns)
        index = _row_of(run.identity, board.rows)
        rows.append(
            [
                f"`{_where(run.path, out_dir)}`" + (f" ({run.part})" if run.part else ""),
                "n/a" if run.seed is None else str(run.seed),
                run.status,
                "–" if index is None else f"#{index + 1}",
                config or "–",
                _one_line(run.error),
            ]
        )
    return headers, rows


def _markdown_table(table: tuple[list[str], list[list[str]]]) -> str:
    from tabulate import tabulate

    headers, rows = table
    # config values verbatim: no number parsing (it would print 1.0 as 1 and 1e-4 as 0.0001)
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def render_markdown(board: Leaderboard, out_dir: Path, plots: Sequence[str] = ()) -> str:
    """``leaderboard.md``: the table, what was left out, how every number is computed."""
    runs = sum(len(r.runs) for r in board.rows)
    lines = [
        "# mtbench leaderboard",
        "",
        f"{len(board.rows)} configuration(s) from {runs} complete run(s); "
        f"{len(board.failed)} failed or incomplete run(s)"
        + (" (listed below, not counted)" if board.failed else "")
        + ". Sources: "
        + ", ".join(f"`{_where(s, out_dir)}`" for s in board.sources)
        + ".",
        "",
        "## Ranking",
        "",
        "Ranked by mean delta_m (highest first). A row with fewer than two seeds of delta_m is "
        "not ranked (`1 seed: not ranked`) and is listed after the ranked rows: one value says "
        "nothing about the spread between seeds. `#` numbers the rows for the sections below. "
        "Each cell is **mean ± standard deviation [95% confidence interval]** over the row's "
        "seeds; with one seed the standard deviation and the interval are undefined "
        "(`± n/a [undefined]`), not zero. `(n=k)`: only k seeds have this number. These "
        "intervals are per row (unpaired); rows share their baselines per seed, so compare "
        "rows with the paired gains below, which are sharper. Each task's primary metric is "
        "shown here (↑ higher is better, ↓ lower is better; fractions in %); its other metrics "
        "follow in their own table. s/epoch is wall-clock time and depends on the machine's "
        "load; the joint/singles step cost is the load-robust cost figure.",
        "",
        _markdown_table(main_table(board)),
        "",
    ]
    others = other_metrics_table(board)
    if board.rows and others is not None:
        lines += [
            "## Other metrics",
            "",
            "The tasks' other test metrics, as their kinds report them (same cells as above; the "
            "primary metrics are in the ranking).",
            "",
            _markdown_table(others),
            "",
        ]
    if board.rows and _shown_paired(board):
        lines += [
            "## Paired gains over the reference",
            "",
            f"Reference of each row: the row with `{board.reference}` whose config is otherwise "
            "the same (except "
            + ", ".join(f"`{k}`" for k in _freed(board.reference))
            + "). Each cell is the **mean gain of the row over the reference [95% confidence "
            "interval]** over the seeds both rows have: row − reference where higher is better "
            "(↑), reference − row where lower is better (↓), so **positive means this row is "
            "better**; in the quantity's unit (delta_m in points of delta_m, fractions in "
            "percentage points). `n/a` with fewer than two paired seeds. An interval that "
            "excludes 0 separates the two rows on these seeds. The gains of the other joint "
            "metrics are in the CSV. Choose another reference with "
            "`python -m mtbench.leaderboard DIR --reference KEY=VALUE`.",
            "",
            _markdown_table(paired_table(board)),
            "",
        ]
    lines += _notes(board, out_dir)
    if board.failed:
        headers, rows = failed_table(board, out_dir)
        lines += [
            "## Failed and incomplete runs",
            "",
            "Not counted in any statistic. `row`: the configuration's row above, if it has "
            "complete runs; `configuration`: its values of the keys that differ between all runs "
            "(or Hydra's overrides when no config could be read). The full error is in each "
            "run's `results.json` (`error`) or its `mtbench.log`.",
            "",
            _markdown_table((headers, rows)),
            "",
        ]
    lines += _configuration_section(board)
    lines += _formulas()
    for name in plots:
        lines += [f"![{name}]({name})", ""]
    return "\n".join(lines)


def _freed(reference: Reference) -> list[str]:
    """How the keys a reference frees are written in the text: ``weighting.*`` for a plugin."""
    return [k[: -len("name")] + "*" if k.endswith(".name") else k for k in reference.values]


def _notes(board: Leaderboard, out_dir: Path) -> list[str]:
    notes = []
    if board.skipped:
        shown = ", ".join(f"`{_where(p, out_dir)}`" for p in board.skipped[:10])
        more = f" and {len(board.skipped) - 10} more" if len(board.skipped) > 10 else ""
        notes.append(
            f"- {len(board.skipped)} single-run director(y/ies) without results.json skipped: "
            "they never started a benchmark (a config refused before training, or the folder of "
            f"a `resume=` invocation, which writes into the resumed run's folder): {shown}{more}."
        )
    notes += [f"- The runs declare a metric differently: {c}." for c in board.conflicts]
    old = sorted(
        {str(r.path) for row in board.rows for r in row.runs if r.schema != records.SCHEMA}
    )
    if old:
        notes.append(
            f"- {len(old)} run(s) were read from an older results schema and upgraded "
            "(mtbench.records.load: their tasks are classification tasks reporting accuracy and "
            "top5_accuracy)."
        )
    for index, row in enumerate(board.rows):
        for run in row.load_flagged:
            reasons = "; ".join(
                f"{part}: {', '.join(why) or 'no reason recorded'}" for part, why in run.load_flags
            )
            notes.append(
                f"- #{index + 1}: machine load flagged in `{_where(run.path, out_dir)}` (seed "
                f"{run.seed}; {reasons}): its wall-clock times, s/epoch included, are not a clean "
                "measurement; the joint/singles step cost is measured load-robustly."
            )
        for run in row.duplicates:
            notes.append(
                f"- #{index + 1}: `{_where(run.path, out_dir)}` repeats seed {run.seed}; the most "
                "recently finished run of that seed is counted, this one is not."
            )
        commits = sorted({str(r.git_commit) for r in row.runs})
        devices = sorted({str(r.device) for r in row.runs})
        parallel = sorted({r.parallel_jobs for r in row.runs} - {1})
        if parallel:
            notes.append(
                f"- #{index + 1} has runs launched in parallel (n_jobs "
                f"{', '.join(map(str, parallel))}): jobs shared the machine, so its times are "
                "not comparable with runs trained one at a time."
            )
        if len(commits) > 1 or len(devices) > 1:
            notes.append(
                f"- #{index + 1} pools runs from different code or machines (git commits "
                f"{', '.join(commits)}; devices {', '.join(devices)}): compare its times with care."
            )
    return ["## Notes", "", *notes, ""] if notes else []


def _configuration_section(board: Leaderboard) -> list[str]:
    shared = "\n".join(f"{k}: {_cell(v)}" for k, v in board.shared.items())
    free = [*records.FREE["leaderboard"], *sorted(board.location)]
    return [
        "## Configurations",
        "",
        "A configuration is a run's resolved config without "
        + ", ".join(f"`{k}`" for k in free)
        + " (mtbench.records.identity for the leaderboard: the seed varies within a row; the "
        "others say where a run resumed from, how progress is shown, how often checkpoints are "
        "saved, where baselines are cached or, as the dataset's and other plugins' configs "
        "declare, where data is read from: not what is trained). Where results.json records "
        "them (`resolved`), `trainer.precision` is the "
        "precision the run actually used (not `auto`) and `device_class` the kind of machine: "
        "runs that differ in either are different rows. The columns left of `seeds` are the "
        "keys whose "
        f"values differ between rows (`{_ABSENT}`: the row's config has no such key); a "
        "plugin's name and those of its options that differ share one column named after the "
        "plugin kind, e.g. `weighting`: `pcgrad(reduction=sum)` (the CSV keeps one column per "
        "key). "
        "Shared by every row:",
        "",
        "```yaml",
        shared,
        "```",
        "",
    ]


def _formulas() -> list[str]:
    return [
        "## How the numbers are computed",
        "",
        "- **Task metrics**: each task's test metrics as its kind reports them (results.json "
        "`tasks`: unit, direction, primary metric), of the weights of each run's best validation "
        "epoch; `joint` is the multitask model, `single` the single-task baseline of that task. "
        "Fractions are shown in %, other units as recorded; ↑ higher is better, ↓ lower is "
        "better.",
        "- **delta_m**: computed per run (results.json `comparison.delta_m_percent`), then "
        "summarized over seeds: " + records.DELTA_M_FORMULA + ". Older results "
        f"({records.SCHEMA_V1}) computed it on test top-1 accuracy, which is the same formula "
        "for accuracy as each task's primary metric.",
        "- **s/epoch (joint)**: the joint run's training wall-clock seconds per epoch (training "
        "steps only; tracing and evaluation are timed apart): its training seconds divided by "
        "the steps it ran, times the steps of a full epoch (older results: the mean of its "
        "epochs' seconds). "
        "Load-dependent: it grows with whatever else the machine runs (see `load`); compare it "
        "only between runs trained one at a time on the same hardware.",
        "- **joint/singles step cost**: `comparison.cost.joint_over_singles` of results.json = "
        "median seconds per training step of the joint model / Σ_t median seconds per step of "
        "the single-task model of task t, measured with their steps interleaved in one process "
        "so that machine load slows both sides alike (load-robust); summarized over seeds like "
        "every number. Below 1: one joint model trains faster than all single-task models.",
        "- **load**: `flagged: seed k` when a training run of that seed was flagged in "
        "results.json (`load.flagged`: other processes used more than 20% of the machine while "
        "it trained, i.e. its machine share = 1 − others' share of the usable cores' capacity "
        "was below 80%, or more than 15 points below a sibling run's; see mtbench.cost); the "
        "run directories and reasons are in the notes. `n/a`: not recorded.",
        "- **paired gain** over the reference row: g_s = x_row,s − x_reference,s for every seed "
        "s both rows have where higher is better, x_reference,s − x_row,s where lower is better "
        "(positive: the row is better), then the mean and interval below over the n paired "
        "seeds.",
        "- **rank**: by mean delta_m over at least two seeds; other rows are not ranked.",
        "- **mean** over the n seeds: x̄ = (1/n) Σ x_i.",
        "- **standard deviation** (sample, n - 1): s = sqrt(Σ (x_i - x̄)² / (n - 1)).",
        f"- **{CONFIDENCE:.0%} confidence interval** of the mean (Student t): "
        "x̄ ± t(0.975, n - 1) · s / √n, with the t quantile from `scipy.stats.t.ppf`; "
        "undefined for n = 1.",
        f"- **Plots**, one panel per task, of its primary metric: `{TIME_PLOT}`: the joint "
        "model's test value against the joint run's total training seconds (load-dependent); "
        f"`{SINGLE_JOINT_PLOT}`: joint against single-task test value (the joint model is better "
        "above the diagonal where higher is better, below it where lower is better). Small "
        "markers: one seed each; large markers: the mean over the row's seeds, with error bars "
        f"of its {CONFIDENCE:.0%} confidence interval in both directions (none with one seed). "
        f"Axes of values that cannot be negative start at {AXIS_START:g}, so distances are not "
        "exaggerated.",
        "",
    ]


def render_csv(board: Leaderboard) -> str:
    """``leaderboard.csv``: one row per configuration; undefined statistics are empty cells.

    ``row`` numbers the rows; ``rank`` is empty for a row that is not ranked (``not_ranked``
    says why). Columns ``<task>_<side>_<metric>_<unit>_*`` hold every metric of every task
    (``pct``: a fraction in %). ``<quantity>_gain_vs_ref_*``: the paired gains over the row
    ``reference_row`` (positive: this row is better; empty with fewer than two paired seeds;
    ``paired_note`` says why there are none).
    Numbers are rounded to 6 decimals, so no float noise such as ``14.299999999999999``.
    """
    stats = ("mean", "std", "ci95_low", "ci95_high", "n")
    gains = ("mean", "ci95_low", "ci95_high", "n")
    quantities, paired_quantities = board.quantities, board.paired_quantities
    header = ["row", "rank", "not_ranked", *board.varying, "n_seeds", "seeds", "n_failed"]
    header += ["load_flagged", "load_flagged_seeds"]
    header += [f"{q.column}_{s}" for q in quantities for s in stats]
    header += ["reference_row", "paired_note", "paired_seeds"]
    header += [f"{q.column}_gain_vs_ref_{s}" for q in paired_quantities for s in gains]
    header += ["run_dirs"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for index, row in enumerate(board.rows):
        record: list[Any] = [index + 1, "" if row.rank is None else row.rank, row.not_ranked or ""]
        record += [_csv_value(row.identity.get(k)) for k in board.varying]
        record += [len(row.runs), " ".join(str(s) for s in row.seeds), len(row.failed)]
        recorded = any(r.load_recorded for r in row.runs)
        record += [
            str(bool(row.load_flagged)).lower() if recorded else "",
            " ".join(str(r.seed) for r in row.load_flagged),
        ]
        for quantity in quantities:
            s = row.stat(quantity)
            record += [_csv_number(v) for v in (s.mean, s.std, s.ci_low, s.ci_high)]
            record.append(s.n)
        paired = board.paired(index)
        record += [
            "" if paired.reference is None else paired.reference + 1,
            paired.why,
            " ".join(map(str, paired.seeds)),
        ]
        for quantity in paired_quantities:
            g = paired.gains.get(quantity.column)
            if g is None or g.ci_low is None:  # fewer than two pairs: no interval, no number
                record += ["", "", "", 0 if g is None else g.n]
            else:
                record += [_csv_number(g.mean), _csv_number(g.ci_low), _csv_number(g.ci_high), g.n]
        record.append(";".join(str(r.path) for r in row.runs))
        writer.writerow(record)
    return buffer.getvalue()


def _csv_number(value: float | None) -> float | str:
    """Rounded to 6 decimals (written in its shortest form: ``14.3``, not ``14.299999999999999``);
    empty when undefined."""
    return "" if value is None else round(float(value), 6)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    return value if isinstance(value, str | int | float) else json.dumps(value, default=str)


# ------------------------------------------------------------------------------------------ plots
_MARKERS = "osD^vPX*"


def _figure(columns: int) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.0 * columns, 5.0), layout="constrained")
    FigureCanvasAgg(figure)  # render with Agg whatever pyplot's backend is
    return figure, figure.subplots(1, columns, squeeze=False)[0]


def _scatter_rows(ax: Any, board: Leaderboard, x: Quantity, y: Quantity) -> None:
    """Per row: one small marker per seed and a large marker at the mean of its seeds, with
    error bars of the confidence interval of each coordinate's mean (none with one seed)."""
    import matplotlib

    colors = matplotlib.colormaps["tab10"]
    for index, row in enumerate(board.rows):
        pairs = [(x.value(r), y.value(r)) for r in row.runs]
        points = np.array([p for p in pairs if None not in p], dtype=np.float64).reshape(-1, 2)
        if not len(points):
            continue
        color, marker = colors(index % 10), _MARKERS[index % len(_MARKERS)]
        ax.scatter(points[:, 0], points[:, 1], s=20, color=color, marker=marker, alpha=0.5)
        x_stat, y_stat = summarize(points[:, 0]), summarize(points[:, 1])
        if x_stat.ci_high is not None and y_stat.ci_high is not None:
            ax.errorbar(
                [x_stat.mean], [y_stat.mean], xerr=[x_stat.ci_high - x_stat.mean],
                yerr=[y_stat.ci_high - y_stat.mean], fmt="none", ecolor=color, capsize=3,
                linewidth=1, zorder=2,
            )  # fmt: skip
        ax.scatter(
            [x_stat.mean], [y_stat.mean], s=110, color=color, marker=marker, edgecolors="black",
            label=board.label(index), zorder=3,
        )  # fmt: skip


def _legend(figure: Any, axes: Any) -> None:
    """One legend below the plots for every row that appears in any of them."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label if len(label) <= 90 else label[:89] + "…", handle)
    if handles:
        figure.legend(
            list(handles.values()), list(handles), loc="outside lower center", fontsize="small"
        )


def _primaries_with(board: Leaderboard, side: str) -> list[tuple[str, Metric]]:
    """(task, primary metric) of the tasks whose primary metric some run has on ``side``."""
    runs = [run for row in board.rows for run in row.runs]
    return [
        (task, record.primary_metric)
        for task, record in board.task_records.items()
        if any((task, record.primary) in getattr(run, side) for run in runs)
    ]


def _axis_label(who: str, metric: Metric) -> str:
    """``joint test accuracy (%, ↑ better)``."""
    return f"{who} test {metric.name} ({metric_unit(metric)}, {arrow(metric)} better)"


def _lowest(board: Leaderboard, *quantities: Quantity) -> float:
    """The lowest value of ``quantities`` over every counted run (the points, not their bars)."""
    runs = [run for row in board.rows for run in row.runs]
    values = [v for run in runs for q in quantities if (v := q.value(run)) is not None]
    return min(values, default=0.0)


def plot_primary_vs_time(board: Leaderboard) -> Any | None:
    """Per task: the joint model's test primary metric against the joint run's training seconds
    (or ``None`` when no run trained a joint model)."""
    tasks = _primaries_with(board, "joint")
    if not tasks:
        return None
    figure, axes = _figure(len(tasks))
    time = Quantity("", "", "train_seconds")
    for ax, (task, metric) in zip(axes, tasks, strict=True):
        joint = Quantity.of_metric("joint", task, metric, True)
        _scatter_rows(ax, board, time, joint)
        ax.set(xlim=_from_start(ax.dataLim.x1))
        from_zero = _lowest(board, joint) >= AXIS_START  # error bars below 0 are cut off
        if from_zero:
            ax.set(ylim=_from_start(ax.dataLim.y1))
        ax.set(
            title=f"{task}: {metric.name} against training time\n(error bars: {CONFIDENCE:.0%} "
            "CI over seeds" + ("; axes start at 0)" if from_zero else ")"),
            xlabel="joint training time (s, from 0; steps only, load-dependent)",
            ylabel=_axis_label("joint", metric) + (", axis from 0" if from_zero else ""),
        )
        ax.grid(alpha=0.3)
    _legend(figure, axes)
    return figure


def plot_single_vs_joint(board: Leaderboard) -> Any | None:
    """Per task: the joint against the single-task test primary metric, or ``None`` without
    baselines."""
    tasks = _primaries_with(board, "single")
    if not tasks:
        return None
    figure, axes = _figure(len(tasks))
    for ax, (task, metric) in zip(axes, tasks, strict=True):
        single = Quantity.of_metric("single", task, metric, True)
        joint = Quantity.of_metric("joint", task, metric, True)
        _scatter_rows(ax, board, single, joint)
        high = max(ax.dataLim.x1, ax.dataLim.y1)
        from_zero = _lowest(board, single, joint) >= AXIS_START
        limits = _from_start(high) if from_zero else (min(ax.dataLim.x0, ax.dataLim.y0), high)
        ax.plot(limits, limits, linestyle="--", color="grey", linewidth=1)
        origin = ", axis from 0" if from_zero else ""
        ax.set(
            title=f"{task}: single-task against joint {metric.name}\n(joint better "
            f"{'above' if metric.higher_is_better else 'below'} the diagonal; bars: "
            f"{CONFIDENCE:.0%} CI)",
            xlabel=_axis_label("single-task", metric) + origin,
            ylabel=_axis_label("joint", metric) + origin,
            xlim=limits,
            ylim=limits,
            aspect="equal",
        )
        ax.grid(alpha=0.3)
    _legend(figure, axes)
    return figure


def _from_start(high: float) -> tuple[float, float]:
    """An axis from :data:`AXIS_START` to 5 % above ``high`` (the data's highest value or bar)."""
    span = high - AXIS_START if np.isfinite(high) and high > AXIS_START else 1.0
    return AXIS_START, AXIS_START + 1.05 * span


def atomic_save_figure(figure: Any, path: Path) -> None:
    """Save ``figure`` as PNG so that readers see the old complete file or the new one."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())


# ----------------------------------------------------------------------------------------- output
def write(board: Leaderboard, out_dir: Path) -> list[Path]:
    """Write the Markdown, CSV and plots into ``out_dir``; return the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    plots = {
        TIME_PLOT: plot_primary_vs_time(board),
        SINGLE_JOINT_PLOT: plot_single_vs_joint(board),
    }
    for name, figure in plots.items():
        if figure is None:
            (out_dir / name).unlink(missing_ok=True)  # a stale plot would contradict the tables
            continue
        atomic_save_figure(figure, out_dir / name)
        written.append(out_dir / name)
    atomic_write_text(out_dir / CSV, render_csv(board))
    markdown = render_markdown(board, out_dir, [p.name for p in written])
    atomic_write_text(out_dir / MARKDOWN, markdown)
    return [out_dir / MARKDOWN, out_dir / CSV, *written]


def write_leaderboard(
    paths: Iterable[Path], out_dir: Path, reference: Sequence[str] = DEFAULT_REFERENCE
) -> Leaderboard:
    """Build the leaderboard of every run under ``paths`` and write it into ``out_dir``
    (``reference``: see :func:`build`)."""
    board = build(paths, reference)
    write(board, out_dir)
    return board


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mtbench.leaderboard DIR [DIR ...] [--out OUT] [--reference KEY=VALUE ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m mtbench.leaderboard",
        description="Rebuild a leaderboard from sweep or run directories (searched recursively "
        "for Hydra job directories). Writes leaderboard.md, leaderboard.csv and PNG plots.",
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="sweep or run folder")
    parser.add_argument(
        "--out", type=Path, help="output folder (default: DIR when exactly one DIR is given)"
    )
    parser.add_argument(
        "--reference",
        action="append",
        metavar="KEY=VALUE",
        help="the reference row of the paired comparison: the row with this config value and "
        "otherwise the same config (a KEY ending in .name also frees that plugin's options); "
        "repeat to give several (default: weighting.name=ew)",
    )
    args = parser.parse_args(argv)
    if args.out is None and len(args.dirs) > 1:
        parser.error("give --out when combining several directories")
    out = args.out if args.out is not None else args.dirs[0]
    try:
        board = write_leaderboard(args.dirs, out, args.reference or DEFAULT_REFERENCE)
    except (LeaderboardError, OSError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    runs = sum(len(r.runs) for r in board.rows)
    print(
        f"{len(board.rows)} configuration(s), {runs} complete run(s), {len(board.failed)} failed "
        f"or incomplete; written to {out / MARKDOWN}"
    )
    for run in board.failed:
        where = f"{run.path} ({run.part})" if run.part else str(run.path)
        print(f"not counted: {where}, {run.status}: {_one_line(run.error, 200)}", file=sys.stderr)
    for path in board.skipped:
        print(f"skipped: {path}, a single run without results.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
