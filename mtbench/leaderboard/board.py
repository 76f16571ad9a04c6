"""The leaderboard: rows of configurations, the quantities they summarize, and how it is built."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtbench.leaderboard import identities
from mtbench.leaderboard.identities import Column
from mtbench.leaderboard.paired import DEFAULT_REFERENCE, Paired, Reference, pair
from mtbench.leaderboard.quantities import SIDES, Quantity
from mtbench.leaderboard.rows import Row, group, row_of
from mtbench.leaderboard.runs import FailedRun, read_runs
from mtbench.leaderboard.size import COST_QUANTITIES
from mtbench.records import TaskRecord


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
        primary metric (joint, then single), delta_m, the joint run's time and cost, its step
        against hard sharing's and its peak memory (:data:`~.size.COST_QUANTITIES`), then the
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
        candidates = [*primaries, *whole, *COST_QUANTITIES, *others]
        return [q for q in candidates if any(q.value(run) is not None for run in runs)]

    @property
    def paired_quantities(self) -> list[Quantity]:
        """What is compared seed by seed with the reference row: delta_m, then every joint
        metric (the primary ones first)."""
        compared = [q for q in self.quantities if q.attribute in ("delta_m", "joint")]
        return sorted(compared, key=lambda q: (q.attribute != "delta_m", not q.primary))

    def paired(self, index: int) -> Paired:
        """Row ``index`` against its reference row, per seed both have, summarized over the
        seeds (gains: positive means the row is better; see :func:`pair`)."""
        return pair(self.rows, index, self.reference, self.paired_quantities)

    @property
    def shared(self) -> dict[str, Any]:
        """Identity keys with one value in every row."""
        if not self.rows:
            return {}
        return {k: v for k, v in self.rows[0].identity.items() if k not in self.varying}

    def label(self, index: int) -> str:
        """``#1 weighting=ew, trainer.learning_rate=0.01``: the row's number and its values of
        the varying keys (a plugin's name and options in one, see :func:`identities.columns`)."""
        values = identities.describe(self.rows[index].identity, self.columns)
        return f"#{index + 1}" + (f" {values}" if values else "")

    @property
    def columns(self) -> list[Column]:
        """The Markdown columns of the varying keys (see :func:`identities.columns`)."""
        return identities.columns(self.varying, [row.identity for row in self.rows])


def build(paths: Iterable[Path], reference: Sequence[str] = DEFAULT_REFERENCE) -> Leaderboard:
    """Read every run under ``paths`` (sweep or run directories) and group them by configuration.

    ``reference``: ``KEY=VALUE`` choices of the reference row of the paired comparison (see
    :class:`Reference`).

    Raises:
        LeaderboardError: see :func:`read_runs`; also when every directory found is a single
            run that never started a benchmark, or a reference is not ``KEY=VALUE``.
    """
    sources = [Path(p) for p in paths]
    chosen = Reference.parse(reference)
    found = read_runs(sources)
    rows = group(found.complete)
    for run in found.failed:
        index = row_of(run.identity, rows)
        if index is not None:
            rows[index].failed.append(run)
    tasks = list(dict.fromkeys(t for run in found.complete for t in run.tasks))
    task_records, conflicts = merge_task_records([run.task_records for run in found.complete])
    varying = identities.varying([r.identity for r in rows])
    return Leaderboard(
        rows, found.failed, tasks, varying, sources, chosen, found.skipped, task_records,
        found.location, conflicts,
    )  # fmt: skip


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
