"""Size and cost of each row's joint model: its parameters, its training step against hard
sharing's, its peak memory, so that an architecture with N times the parameters of hard sharing
is compared knowing that (issue 11).

**Parameters** (``runs[joint].parameter_counts`` of ``results.json``: numbers of trainable scalars;
see :func:`mtbench.architecture.parameter_counts`) are a property of the configuration, not a
measurement: a row shows the count its runs record, not a statistic. Runs of one row that record
different counts (the code changed between them) are shown as ``differs: a–b`` in Markdown and
leave the CSV cell empty, with a note. Files written before architectures existed record none:
``n/a``.

**Step against hard sharing** (``comparison.cost.joint_over_hard_sharing``) and **peak memory**
(``runs[joint].peak_memory_mb`` where ``peak_memory_scope`` is ``run``, and
``peak_device_memory_mb``) are measurements, summarized over seeds like every number
(:data:`COST_QUANTITIES`). A hard-sharing row has no step ratio: it is 1 by definition and not
measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mtbench.config import DEFAULT_ARCHITECTURE
from mtbench.leaderboard.quantities import Quantity
from mtbench.leaderboard.rows import Row

#: The measured size-and-cost numbers of the joint run, summarized over seeds.
COST_QUANTITIES: tuple[Quantity, ...] = (
    Quantity(
        "joint/hard-sharing step (load-robust)", "joint_over_hard_sharing_cost",
        "over_hard_sharing", higher_is_better=False, cost=True,
    ),
    Quantity(
        "peak host MiB (joint)", "joint_peak_host_memory_MiB", "peak_memory_mb",
        higher_is_better=False, unit="MiB", cost=True,
    ),
    Quantity(
        "peak GPU MiB (joint)", "joint_peak_gpu_memory_MiB", "peak_device_memory_mb",
        higher_is_better=False, unit="MiB", cost=True,
    ),
)  # fmt: skip

#: Shown for the step ratio of a hard-sharing row.
BY_DEFINITION = "1 (hard sharing)"


@dataclass(frozen=True)
class Count:
    """A parameter count of the joint model: its Markdown header, CSV column and key in
    :attr:`~mtbench.leaderboard.runs.Run.parameters`."""

    label: str
    column: str
    key: str


def counts(tasks: Sequence[str]) -> list[Count]:
    """Every parameter count a row has a CSV column for, in column order."""
    return [
        Count("trainable params (joint)", "joint_params_trainable", "trainable"),
        Count("shared params (joint)", "joint_params_shared", "shared"),
        Count("task-specific params (joint)", "joint_params_task_specific", "task_specific"),
        *(
            Count(f"{t} own params (joint)", f"{t}_joint_params_own", f"per_task:{t}")
            for t in tasks
        ),
        Count(
            "params of several tasks' heads (joint)", "joint_params_unattributed", "unattributed"
        ),
    ]


def recorded(row: Row, key: str) -> list[int]:
    """The distinct counts ``key`` that the row's runs record, smallest first."""
    return sorted({run.parameters[key] for run in row.runs if key in run.parameters})


def exact(row: Row, key: str) -> int | None:
    """The count ``key`` of the row's runs where they all agree (``None``: not recorded, or
    different in different runs: see :func:`recorded`)."""
    values = recorded(row, key)
    return values[0] if len(values) == 1 else None


def count_cell(row: Row, key: str) -> str:
    """``1,234``; ``differs: 1,200–1,234``; ``n/a`` where no run records it."""
    values = recorded(row, key)
    if not values:
        return "n/a"
    if len(values) > 1:
        return f"differs: {values[0]:,}–{values[-1]:,}"
    return f"{values[0]:,}"


def per_task_cell(row: Row, tasks: Sequence[str]) -> str:
    """``fine 1,234; coarse 567`` (each task's own parameters), with ``several 89`` for task
    parameters that several tasks' losses reach, where there are any."""
    if not any(recorded(row, f"per_task:{t}") for t in tasks):
        return "n/a"
    parts = [f"{t} {count_cell(row, f'per_task:{t}')}" for t in tasks]
    several = recorded(row, "unattributed")
    if several and several != [0]:
        parts.append(f"several {count_cell(row, 'unattributed')}")
    return "; ".join(parts)


def architecture(row: Row) -> str:
    """The row's architecture: ``architecture.name`` of its identity (``records.load`` gives
    files written before architectures existed ``hard_sharing``)."""
    name = row.identity.get("architecture.name")
    return str(name) if name is not None else row.runs[0].architecture


def is_hard_sharing(row: Row) -> bool:
    return architecture(row) == DEFAULT_ARCHITECTURE


def hard_sharing_note(row: Row) -> str:
    """Why the row has no step ratio against hard sharing, where it has none: the row is hard
    sharing, or its runs say why it was not measured (e.g. the cost probe was off)."""
    if is_hard_sharing(row):
        return "hard sharing: 1 by definition, not measured"
    if any(run.over_hard_sharing is not None for run in row.runs):
        return ""
    reasons = sorted(
        {r.over_hard_sharing_undefined for r in row.runs if r.over_hard_sharing_undefined}
    )
    return "; ".join(reasons) if reasons else "not recorded (results written before it existed)"


def has_size(rows: Sequence[Row]) -> bool:
    """Whether any run of ``rows`` records a parameter count."""
    return any(run.parameters for row in rows for run in row.runs)


def differing(rows: Sequence[Row], tasks: Sequence[str]) -> list[tuple[int, str, list[int]]]:
    """``(row index, count label, counts)`` for every count that a row's runs record
    differently."""
    found = []
    for index, row in enumerate(rows):
        for count in counts(tasks):
            values = recorded(row, count.key)
            if len(values) > 1:
                found.append((index, count.label, values))
    return found
