"""The leaderboard's plots: per task, its primary metric against training time and the joint
against the single-task model; one marker per seed and per row's mean, with confidence bars."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from mtbench.io import atomic_write_bytes
from mtbench.leaderboard.board import Leaderboard
from mtbench.leaderboard.quantities import Quantity
from mtbench.leaderboard.stats import CONFIDENCE, summarize
from mtbench.results import arrow, metric_unit
from mtbench.tasks import Metric

TIME_PLOT = "primary_vs_time.png"
SINGLE_JOINT_PLOT = "single_vs_joint.png"
AXIS_START = 0.0  # plots' metric and time axes start here: no exaggerated distances
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
