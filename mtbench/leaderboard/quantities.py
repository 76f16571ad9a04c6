"""Quantities: the numbers of each run that a leaderboard summarizes over seeds."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from mtbench.leaderboard.runs import MetricKey, Run
from mtbench.leaderboard.stats import Stat
from mtbench.results import arrow, metric_unit
from mtbench.tasks import Metric

#: The sides of a per-task number: the multitask model and the single-task baseline.
SIDES = ("joint", "single")


def _slug(text: str) -> str:
    """``mae/homo`` -> ``mae_homo``: a CSV column part."""
    return re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_") or "_"


@dataclass(frozen=True)
class Quantity:
    """A number of each run, summarized over seeds: a task's test metric on one side (``key``
    is ``(task, metric)``, ``attribute`` the side) or a whole-run number (``key`` is ``None``).

    ``primary``: shown in the ranking table (other metrics have a table of their own);
    ``cost``: a size-and-cost figure of the joint model, shown in that table instead (see
    :mod:`~mtbench.leaderboard.size`).
    """

    label: str  # Markdown column
    column: str  # CSV column prefix, with the unit
    attribute: str
    key: MetricKey | None = None
    higher_is_better: bool = True
    unit: str = ""  # as shown: "%", "s", a physical unit, "" for ratios
    primary: bool = True
    cost: bool = False

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
        """Decimals shown: 2, none for memory (MiB), or more for small values of a physical unit
        (3 significant)."""
        if self.unit == "MiB":
            return 0
        if self.unit in ("%", "s", "") or not stat.mean:
            return 2
        return max(2, 2 - math.floor(math.log10(abs(stat.mean))))
