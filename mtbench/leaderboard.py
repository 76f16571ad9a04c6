"""Leaderboards over many runs: one row per configuration, statistics over its seeds.

A *run directory* is a Hydra job directory holding ``results.json`` (schema
``mtbench.results/1``) and ``.hydra/``. Runs are grouped by their *configuration*: the resolved
config of ``results.json`` without the keys in :data:`NOT_IDENTITY` (the seed, and options that say
where data lives or how progress is shown, which do not change what is trained). For each
configuration the leaderboard gives, over its seeds, the mean, the sample standard deviation and a
95% Student-t confidence interval of every task's test accuracy (joint and single-task), of delta_m
and of the joint run's seconds per epoch. Runs that failed, are still running or cannot be read
are listed apart and never enter a statistic.

Files written into the output folder (each atomically): ``leaderboard.md``, ``leaderboard.csv``,
``accuracy_vs_time.png`` and ``single_vs_joint.png``.

Usage::

    python -m mtbench.leaderboard outputs/multirun/2026-01-01/10-00-00
    python -m mtbench.leaderboard SWEEP_A SWEEP_B --out comparison/
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtbench.io import atomic_write_text
from mtbench.results import DELTA_M_FORMULA, SCHEMA

#: Config keys that are not part of a configuration's identity: the seed (the leaderboard's
#: statistics run over it); the run directory a run resumed from (a resumed run is the same
#: experiment); where the data is read from and whether it may be downloaded (the content is
#: pinned by ``dataset.md5``); how often checkpoints are saved; the progress bar.
NOT_IDENTITY: tuple[str, ...] = (
    "seed",
    "resume",
    "dataset.root",
    "dataset.download",
    "dataset.url",
    "trainer.checkpoint_every",
    "trainer.progress",
    "benchmark.baseline_cache",
)
CONFIDENCE = 0.95
MARKDOWN = "leaderboard.md"
CSV = "leaderboard.csv"
TIME_PLOT = "accuracy_vs_time.png"
SINGLE_JOINT_PLOT = "single_vs_joint.png"
_ABSENT = "–"  # a key this row's configuration does not have


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
@dataclass(frozen=True)
class Run:
    """The numbers of one complete run (accuracies in %, times in wall-clock seconds)."""

    path: Path
    seed: int | None
    identity: dict[str, Any]
    tasks: tuple[str, ...]
    joint: dict[str, float]  # task -> joint model's test top-1 accuracy, %
    single: dict[str, float]  # task -> single-task model's test top-1 accuracy, %
    delta_m: float | None  # %
    seconds_per_epoch: float | None  # joint run, mean over its epochs
    train_seconds: float | None  # joint run, all epochs
    git_commit: str | None
    device: str | None
    finished: float  # mtime of results.json, to pick the newest of duplicate seeds
    parallel_jobs: int  # the launcher's n_jobs (1: one job at a time; -1: one per CPU)
    failed_parts: tuple[FailedRun, ...] = ()  # training runs of this benchmark that failed


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


def read_run(path: Path) -> Run | FailedRun:
    """Read one run directory; anything but a complete, readable run is a :class:`FailedRun`."""
    results_file = path / "results.json"
    overrides = _read_overrides(path)
    if not results_file.is_file():
        log_file = path / "mtbench.log"
        hint = f"; see {log_file}" if log_file.is_file() else ""
        config = _read_hydra_config(path)
        return FailedRun(
            path, "no results", "no results.json: the run failed before its first result was "
            f"written, or is still starting{hint}", _seed(config), overrides, _identity(config),
        )  # fmt: skip
    try:
        results = json.loads(results_file.read_text(encoding="utf-8"))
        if not isinstance(results, dict) or results.get("schema") != SCHEMA:
            found = results.get("schema") if isinstance(results, dict) else type(results).__name__
            raise ValueError(f"schema {found!r}, expected {SCHEMA!r}")
        status = results["status"]
        config = results["config"]
        if status != "complete":
            error = results.get("error") or _UNFINISHED.get(status, f"status {status!r}")
            return FailedRun(path, status, error, _seed(config), overrides, _identity(config))
        return _complete_run(path, results, results_file.stat().st_mtime)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        config = _read_hydra_config(path)
        return FailedRun(
            path, "unreadable", f"cannot read {results_file}: {type(exc).__name__}: {exc}",
            _seed(config), overrides, _identity(config),
        )  # fmt: skip


_UNFINISHED = {
    "running": "results.json says running: the run is still going, or its process was killed "
    "before it could record a failure (see its mtbench.log)",
    "failed": "failed without a recorded error",
}


def _complete_run(path: Path, results: Mapping[str, Any], finished: float) -> Run:
    """The numbers of a complete benchmark; a training run in it that failed (a non-finite loss,
    ``test`` null) contributes none and is kept in ``failed_parts``."""
    config = results["config"]
    identity = _identity(config) or {}
    runs, failed_parts = {}, []
    for run in results["runs"]:
        if run.get("status", "complete") == "complete" and run.get("test") is not None:
            runs[run["name"]] = run
        else:
            error = run.get("error") or "failed without a recorded error"
            part = FailedRun(path, "failed", error, _seed(config), (), identity, run["name"])
            failed_parts.append(part)
    joint_run = runs.get("joint")
    every = {run["name"]: run for run in results["runs"]}
    tasks = tuple(
        every["joint"]["tasks"]
        if "joint" in every
        else dict.fromkeys(t for run in results["runs"] for t in run["tasks"])
    )
    joint = {t: 100 * joint_run["test"][t]["accuracy"] for t in tasks} if joint_run else {}
    single = {
        t: 100 * runs[f"single:{t}"]["test"][t]["accuracy"] for t in tasks if f"single:{t}" in runs
    }
    timing = joint_run["timing"] if joint_run else {}
    epochs = timing.get("epoch_seconds") or []
    return Run(
        path=path,
        seed=_seed(config),
        identity=identity,
        tasks=tasks,
        joint=joint,
        single=single,
        delta_m=(results.get("comparison") or {}).get("delta_m_percent"),
        seconds_per_epoch=float(np.mean(epochs)) if epochs else None,
        train_seconds=timing.get("train_seconds"),
        git_commit=(results.get("environment") or {}).get("git_commit"),
        device=joint_run.get("device") if joint_run else None,
        finished=finished,
        parallel_jobs=_parallel_jobs(path),
        failed_parts=tuple(failed_parts),
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


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and empty mappings stay whole values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _identity(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(config, Mapping):
        return None
    return {k: v for k, v in _flatten(config).items() if k not in NOT_IDENTITY}


def _key(identity: Mapping[str, Any]) -> str:
    return json.dumps(identity, sort_keys=True, default=str)


# ------------------------------------------------------------------------------------ leaderboard
@dataclass
class Row:
    """One configuration: its complete runs (one per seed) and what was left out of them."""

    identity: dict[str, Any]
    runs: list[Run]
    duplicates: list[Run] = field(default_factory=list)  # same seed again; not counted
    failed: list[FailedRun] = field(default_factory=list)

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.runs]

    def stat(self, metric: Metric) -> Stat:
        return summarize([v for r in self.runs if (v := metric.value(r)) is not None])


@dataclass(frozen=True)
class Metric:
    """A number of each run, summarized over seeds. ``task`` is ``None`` for whole-run numbers."""

    label: str  # Markdown column
    column: str  # CSV column prefix, with the unit
    attribute: str
    task: str | None = None

    def value(self, run: Run) -> float | None:
        value = getattr(run, self.attribute)
        return value.get(self.task) if self.task is not None else value


@dataclass
class Leaderboard:
    """Rows sorted by mean delta_m (highest first), the failed runs, and what tells rows apart."""

    rows: list[Row]
    failed: list[FailedRun]
    tasks: list[str]
    varying: list[str]
    sources: list[Path]

    @property
    def metrics(self) -> list[Metric]:
        """The summarized numbers that at least one run has, in column order."""
        per_task = [
            Metric(f"{side} {t} top-1 %", f"{t}_{side}_top1_pct", side, t)
            for side in ("joint", "single")
            for t in self.tasks
        ]
        metrics = [
            *per_task,
            Metric("delta_m %", "delta_m_pct", "delta_m"),
            Metric("s/epoch (joint)", "joint_seconds_per_epoch", "seconds_per_epoch"),
        ]
        runs = [run for row in self.rows for run in row.runs]
        return [m for m in metrics if any(m.value(run) is not None for run in runs)]

    @property
    def shared(self) -> dict[str, Any]:
        """Identity keys with one value in every row."""
        if not self.rows:
            return {}
        return {k: v for k, v in self.rows[0].identity.items() if k not in self.varying}

    def label(self, index: int) -> str:
        """``#1 weighting.name=ew``: the row's rank and its values of the varying keys."""
        row = self.rows[index]
        values = ", ".join(f"{k}={_cell(row.identity.get(k, _ABSENT))}" for k in self.varying)
        return f"#{index + 1}" + (f" {values}" if values else "")


def build(paths: Iterable[Path]) -> Leaderboard:
    """Read every run under ``paths`` (sweep or run directories) and group them by configuration.

    Raises:
        LeaderboardError: see :func:`find_run_dirs`.
    """
    sources = [Path(p) for p in paths]
    complete: list[Run] = []
    failed: list[FailedRun] = []
    for path in find_run_dirs(sources):
        run = read_run(path)
        if isinstance(run, Run):
            complete.append(run)
            failed.extend(run.failed_parts)
        else:
            failed.append(run)
    rows = _group(complete)
    by_key = {_key(row.identity): row for row in rows}
    for run in failed:
        if run.identity is not None and _key(run.identity) in by_key:
            by_key[_key(run.identity)].failed.append(run)
    tasks = list(dict.fromkeys(t for run in complete for t in run.tasks))
    return Leaderboard(rows, failed, tasks, _varying([r.identity for r in rows]), sources)


def _group(runs: list[Run]) -> list[Row]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(_key(run.identity), []).append(run)
    rows = [_row(group) for group in groups.values()]
    rows.sort(key=_rank_key)
    return rows


def _row(runs: list[Run]) -> Row:
    """One run per seed: of duplicates, the most recently finished counts."""
    newest: dict[int | None, Run] = {}
    for run in sorted(runs, key=lambda r: (r.finished, str(r.path))):
        newest[run.seed] = run
    kept = sorted(newest.values(), key=lambda r: (r.seed is None, r.seed or 0, str(r.path)))
    duplicates = [r for r in runs if r not in kept]
    return Row(dict(runs[0].identity), kept, duplicates)


def _rank_key(row: Row) -> tuple[bool, float, str]:
    mean = summarize([r.delta_m for r in row.runs if r.delta_m is not None]).mean
    return (mean is None, -(mean or 0.0), _key(row.identity))


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


def main_table(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    """The leaderboard's Markdown table: rank, varying keys, seeds, one column per metric."""
    with_failed = bool(board.failed)
    headers = ["#", *board.varying, "seeds", *(["failed"] if with_failed else [])]
    headers += [m.label for m in board.metrics] + ["seed values"]
    rows = []
    for index, row in enumerate(board.rows):
        cells = [str(index + 1), *(_cell(row.identity.get(k, _ABSENT)) for k in board.varying)]
        cells.append(str(len(row.runs)))
        if with_failed:
            cells.append(str(len(row.failed)))
        cells += [format_stat(row.stat(m), len(row.runs)) for m in board.metrics]
        cells.append(", ".join(str(s) for s in row.seeds))
        rows.append(cells)
    return headers, rows


def failed_table(board: Leaderboard, out_dir: Path) -> tuple[list[str], list[list[str]]]:
    """The failed runs: where, why, and which configuration (the row it belongs to, if any)."""
    known = [r.identity for r in board.failed if r.identity is not None]
    keys = _varying([row.identity for row in board.rows] + known)
    rank = {_key(row.identity): index + 1 for index, row in enumerate(board.rows)}
    headers = ["run", "seed", "status", "row", "configuration", "error"]
    rows = []
    for run in board.failed:
        if run.identity is None:  # no readable config: Hydra's overrides say what was asked
            config = " ".join(f"`{o}`" for o in run.overrides) or "unknown"
        else:
            config = ", ".join(f"{k}={_cell(run.identity.get(k, _ABSENT))}" for k in keys)
        row = rank.get(_key(run.identity)) if run.identity is not None else None
        rows.append(
            [
                f"`{_where(run.path, out_dir)}`" + (f" ({run.part})" if run.part else ""),
                "n/a" if run.seed is None else str(run.seed),
                run.status,
                "–" if row is None else f"#{row}",
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
        "Sorted by mean delta_m (highest first); rows whose intervals overlap are not "
        "distinguished by these seeds. Each cell is **mean ± standard deviation [95% confidence "
        "interval]** over the row's seeds; with one seed the standard deviation and the interval "
        "are undefined (`± n/a [undefined]`), not zero. `(n=k)`: only k seeds have this number.",
        "",
        _markdown_table(main_table(board)),
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


def _notes(board: Leaderboard, out_dir: Path) -> list[str]:
    notes = []
    for index, row in enumerate(board.rows):
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
    return [
        "## Configurations",
        "",
        "A configuration is a run's resolved config without "
        + ", ".join(f"`{k}`" for k in NOT_IDENTITY)
        + " (the seed varies within a row; the others say where a run resumed from, where data "
        "is read from, how often checkpoints are saved or how progress is shown, not what is "
        "trained). The columns left of `seeds` are the keys whose "
        f"values differ between rows (`{_ABSENT}`: the row's config has no such key). "
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
        "- **Accuracy**: test top-1 accuracy in %, of the weights of each run's best validation "
        "epoch; `joint` is the multitask model, `single` the single-task baseline of that task.",
        "- **delta_m**: computed per run, then summarized over seeds: " + DELTA_M_FORMULA + ".",
        "- **s/epoch (joint)**: the joint run's training wall-clock seconds per epoch (training "
        "steps only; tracing and evaluation are timed apart), averaged over its epochs.",
        "- **mean** over the n seeds: x̄ = (1/n) Σ x_i.",
        "- **standard deviation** (sample, n - 1): s = sqrt(Σ (x_i - x̄)² / (n - 1)).",
        f"- **{CONFIDENCE:.0%} confidence interval** of the mean (Student t): "
        "x̄ ± t(0.975, n - 1) · s / √n, with the t quantile from `scipy.stats.t.ppf`; "
        "undefined for n = 1.",
        f"- **Plots**: `{TIME_PLOT}`: joint test accuracy against the joint run's total training "
        f"seconds; `{SINGLE_JOINT_PLOT}`: joint against single-task test accuracy (above the "
        "diagonal, the joint model is better). Small markers: one seed each; large markers: the "
        "mean over the row's seeds (its intervals are in the table).",
        "",
    ]


def render_csv(board: Leaderboard) -> str:
    """``leaderboard.csv``: one row per configuration; undefined statistics are empty cells."""
    stats = ("mean", "std", "ci95_low", "ci95_high", "n")
    header = ["rank", *board.varying, "n_seeds", "seeds", "n_failed"]
    header += [f"{m.column}_{s}" for m in board.metrics for s in stats] + ["run_dirs"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for index, row in enumerate(board.rows):
        record: list[Any] = [index + 1]
        record += [_csv_value(row.identity.get(k)) for k in board.varying]
        record += [len(row.runs), " ".join(str(s) for s in row.seeds), len(row.failed)]
        for metric in board.metrics:
            s = row.stat(metric)
            record += ["" if v is None else v for v in (s.mean, s.std, s.ci_low, s.ci_high)]
            record.append(s.n)
        record.append(";".join(str(r.path) for r in row.runs))
        writer.writerow(record)
    return buffer.getvalue()


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


def _scatter_rows(ax: Any, board: Leaderboard, x: Metric, y: Metric) -> None:
    """Per row: one small marker per seed and a large marker at the mean of its seeds."""
    import matplotlib

    colors = matplotlib.colormaps["tab10"]
    for index, row in enumerate(board.rows):
        pairs = [(x.value(r), y.value(r)) for r in row.runs]
        points = np.array([p for p in pairs if None not in p], dtype=np.float64).reshape(-1, 2)
        if not len(points):
            continue
        color, marker = colors(index % 10), _MARKERS[index % len(_MARKERS)]
        ax.scatter(points[:, 0], points[:, 1], s=20, color=color, marker=marker, alpha=0.5)
        mean_x, mean_y = points.mean(axis=0)
        ax.scatter(
            [mean_x], [mean_y], s=110, color=color, marker=marker, edgecolors="black",
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


def _tasks_with(board: Leaderboard, attribute: str) -> list[str]:
    runs = [run for row in board.rows for run in row.runs]
    return [t for t in board.tasks if any(t in getattr(run, attribute) for run in runs)]


def plot_accuracy_vs_time(board: Leaderboard) -> Any | None:
    """Per task: joint test accuracy (%) against the joint run's training seconds (or ``None``
    when no run trained a joint model)."""
    tasks = _tasks_with(board, "joint")
    if not tasks:
        return None
    figure, axes = _figure(len(tasks))
    time = Metric("", "", "train_seconds")
    for ax, task in zip(axes, tasks, strict=True):
        _scatter_rows(ax, board, time, Metric("", "", "joint", task))
        ax.set(
            title=f"{task}: accuracy against training time",
            xlabel="joint training time (s, training steps only)",
            ylabel="joint test top-1 accuracy (%)",
        )
        ax.grid(alpha=0.3)
    _legend(figure, axes)
    return figure


def plot_single_vs_joint(board: Leaderboard) -> Any | None:
    """Per task: joint against single-task test accuracy (%), or ``None`` without baselines."""
    tasks = _tasks_with(board, "single")
    if not tasks:
        return None
    figure, axes = _figure(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        _scatter_rows(ax, board, Metric("", "", "single", task), Metric("", "", "joint", task))
        low, high = _shared_limits(ax)
        ax.plot([low, high], [low, high], linestyle="--", color="grey", linewidth=1)
        ax.set(
            title=f"{task}: single-task against joint",
            xlabel="single-task test top-1 accuracy (%)",
            ylabel="joint test top-1 accuracy (%)",
            xlim=(low, high),
            ylim=(low, high),
            aspect="equal",
        )
        ax.grid(alpha=0.3)
    _legend(figure, axes)
    return figure


def _shared_limits(ax: Any) -> tuple[float, float]:
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    low, high = min(x0, y0), max(x1, y1)
    pad = 0.05 * (high - low)
    return low - pad, high + pad


def atomic_save_figure(figure: Any, path: Path) -> None:
    """Save ``figure`` as PNG so that readers see the old complete file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            figure.savefig(f, format="png", dpi=110)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------------------- output
def write(board: Leaderboard, out_dir: Path) -> list[Path]:
    """Write the Markdown, CSV and plots into ``out_dir``; return the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    plots = {
        TIME_PLOT: plot_accuracy_vs_time(board),
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


def write_leaderboard(paths: Iterable[Path], out_dir: Path) -> Leaderboard:
    """Build the leaderboard of every run under ``paths`` and write it into ``out_dir``."""
    board = build(paths)
    write(board, out_dir)
    return board


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mtbench.leaderboard DIR [DIR ...] [--out OUT]``."""
    parser = argparse.ArgumentParser(
        prog="python -m mtbench.leaderboard",
        description="Rebuild a leaderboard from sweep or run directories (searched recursively "
        "for Hydra job directories). Writes leaderboard.md, leaderboard.csv and PNG plots.",
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="sweep or run folder")
    parser.add_argument(
        "--out", type=Path, help="output folder (default: DIR when exactly one DIR is given)"
    )
    args = parser.parse_args(argv)
    if args.out is None and len(args.dirs) > 1:
        parser.error("give --out when combining several directories")
    out = args.out if args.out is not None else args.dirs[0]
    try:
        board = write_leaderboard(args.dirs, out)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
