"""What a benchmark reports from its results: the report, the summary, the curves, the environment.

The results file itself (its schema, the comparison and delta_m, reading and writing) belongs to
:mod:`mtbench.records`; this module reads a ``mtbench.results/2`` record and presents it. Metrics
are read generically from the record's ``tasks`` section: each task's metrics with their unit and
direction, the primary metric first. Fractions are shown in %, physical units as recorded.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from mtbench import records
from mtbench.io import atomic_write_bytes
from mtbench.tasks import Metric

#: The unit of a metric in [0, 1], shown in %.
FRACTION = "fraction"
SPLITS = ("train", "val", "test")


def hierarchy_consistency(
    child_predictions: np.ndarray, parent_predictions: np.ndarray, parent_of: np.ndarray
) -> float:
    """Fraction of examples whose predicted parent class is the predicted child class's parent."""
    return float(np.mean(parent_of[child_predictions] == parent_predictions))


def environment(project_dir: Path | None = None) -> dict[str, Any]:
    """Library versions, the project's git commit and the machine, for the record."""
    versions = {}
    for package in ("mtbench", "tensorflow", "keras", "numpy", "hydra-core", "omegaconf"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
        "git_commit": _git_commit(project_dir or Path(__file__).resolve().parent.parent),
    }


def _git_commit(directory: Path) -> str | None:
    try:
        commit = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "") if commit else None


# ------------------------------------------------------------------------------ metric display
def metric_unit(metric: Metric) -> str:
    """The unit a metric is shown in: ``%`` for fractions, its own unit otherwise."""
    return "%" if metric.unit == FRACTION else metric.unit


def metric_scale(metric: Metric) -> float:
    """What a recorded value is multiplied by for display (100 for fractions)."""
    return 100.0 if metric.unit == FRACTION else 1.0


def arrow(metric: Metric) -> str:
    """``↑`` where higher is better, ``↓`` where lower is better."""
    return "↑" if metric.higher_is_better else "↓"


def format_metric(value: float | None, metric: Metric) -> str:
    """A recorded value as shown: fractions in % with 2 decimals, other units with 4
    significant digits; ``n/a`` when not computed."""
    if value is None:
        return "n/a"
    if metric.unit == FRACTION:
        return f"{100 * value:.2f}"
    return f"{value:.4g}"


def metric_label(metric: Metric) -> str:
    """``accuracy (%)`` or ``mae (eV)``."""
    return f"{metric.name} ({metric_unit(metric)})"


# --------------------------------------------------------------------------------------- report
def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}"


def task_table(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per task and metric (the primary first): the single-task and joint test values, the
    relative change (positive: the joint model is better) and whether delta_m counts it."""
    comparison = results.get("comparison")
    headers = ["task", "metric", "better", "single", "joint", "Δ % (+: joint better)"]
    headers += ["in delta_m"] if comparison else []
    runs = records.completed_runs(results)
    joint = runs.get(records.JOINT_RUN)
    entries = {(e.task, e.metric): e for e in records.comparison_entries(results)}
    rows = []
    for task, record in records.task_records(results).items():
        single = runs.get(records.single_run_name(task))
        for metric in record.ordered_metrics:
            entry = entries.get((task, metric.name))
            label = metric_label(metric) + (", primary" if metric.name == record.primary else "")
            row = [
                task,
                label,
                f"{arrow(metric)} {'higher' if metric.higher_is_better else 'lower'}",
                format_metric(records.value(single, task, metric.name) if single else None, metric),
                format_metric(records.value(joint, task, metric.name) if joint else None, metric),
                _signed(entry.delta_percent if entry else None),
            ]
            if comparison:
                row.append("yes" if entry and entry.counted else "")
            rows.append(row)
    return headers, rows


def data_table(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per task: its kind, its primary metric and how many examples of each split are labelled
    for it."""
    headers = ["task", "kind", "primary metric", *(f"labelled {s}" for s in SPLITS)]
    rows = []
    for task, record in records.task_records(results).items():
        counts = []
        for split in SPLITS:
            labelled, examples = record.labelled.get(split), record.examples.get(split)
            if labelled is None:
                counts.append("n/a")
            else:
                counts.append(
                    f"{labelled} of {examples}" if examples is not None else str(labelled)
                )
        metric = record.primary_metric
        rows.append([task, record.kind, f"{metric_label(metric)} {arrow(metric)}", *counts])
    return headers, rows


def seconds_per_epoch(run: Mapping[str, Any]) -> float | None:
    """A run's training seconds per full epoch (a step rate, so an epoch cut short by a budget or
    a target is not averaged in as if whole); older files: the mean of their epoch seconds."""
    timing = run.get("timing") or {}
    if "seconds_per_epoch" in timing:
        return timing["seconds_per_epoch"]
    epochs = timing.get("epoch_seconds") or []
    return float(np.mean(epochs)) if epochs else None


def _share(run: Mapping[str, Any]) -> str:
    load = run.get("load") or {}
    if load.get("share") is None:
        return "n/a"
    return f"{100 * load['share']:.0f}" + (" (busy)" if load.get("flagged") else "")


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def run_table(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per run: selection, cost and where it ran."""
    headers = [
        "run", "best epoch", "steps", "s/epoch", "examples/s", "train s", "machine share %",
        "trace s", "eval s", "peak MiB", "precision", "device",
    ]  # fmt: skip
    rows = []
    for run in results["runs"]:
        if run.get("status") == "failed":
            rows.append([run["name"], "failed", *["n/a"] * (len(headers) - 2)])
            continue
        timing = run["timing"]
        evaluation = timing.get("eval_seconds", 0.0) + timing.get("test_seconds", 0.0)
        rows.append(
            [
                run["name"] + (" (cached)" if run.get("reused_from") else ""),
                str(run["best_epoch"]),
                str(timing.get("steps", "n/a")),
                _number(seconds_per_epoch(run), ".2f"),
                _number(timing.get("examples_per_second"), ".0f"),
                _number(timing.get("train_seconds"), ".1f"),
                _share(run),
                _number(timing.get("trace_seconds"), ".2f"),
                f"{evaluation:.1f}",
                _number(run.get("peak_memory_mb"), ".0f"),
                run["precision"],
                run["device"],
            ]
        )
    return headers, rows


def precision_text(results: Mapping[str, Any]) -> str:
    """The precision used, how it was chosen, and whether it is native here."""
    requested = results["config"]["trainer"]["precision"]
    resolved = results.get("resolved")
    if not resolved:
        return f"precision {requested}"
    text = f"precision {resolved['precision']}"
    if requested == "auto":
        text += " (chosen by trainer.precision=auto)"
    if not resolved.get("precision_native", True):
        text += ", **emulated on this hardware (slow)**"
    return text


def cost_lines(results: Mapping[str, Any]) -> list[str]:
    """The load-robust cost ratio and the runs whose wall-clock time the machine's load
    distorted, as Markdown lines."""
    lines = []
    cost = (results.get("comparison") or {}).get("cost")
    if cost:
        singles = ", ".join(f"{t} {r:.2f}x" for t, r in cost["joint_over_single"].items())
        lines += [
            f"**Load-robust cost: a joint step costs {cost['joint_over_singles']:.2f}x the sum of "
            f"the single-task steps** (against each single-task step: {singles}). Measured as the "
            f"{cost['method']}; load that comes and goes affects every run alike, so this ratio "
            "holds on a busy machine where s/epoch does not."
            + (
                f" An epoch of the joint run costs {cost['joint_epoch_over_singles']:.2f}x the "
                "single-task runs' epochs together (each step time times its run's steps per "
                "epoch; the single-task runs train on the examples labelled for their task)."
                if cost.get("joint_epoch_over_singles") is not None
                else ""
            ),
            "",
        ]
        lines += _hard_sharing_lines(cost)
    elif (results.get("comparison") or {}).get("cost_undefined"):
        lines += [f"No load-robust cost: {results['comparison']['cost_undefined']}.", ""]
    flagged = [r for r in results["runs"] if (r.get("load") or {}).get("flagged")]
    if flagged:
        lines += ["**Busy machine:** the wall-clock times of these runs are not comparable with "
                  "the others' (machine share % is the part of the machine other processes left "
                  "to the run while it trained):", ""]  # fmt: skip
        lines += [f"- `{r['name']}`: " + "; ".join(r["load"]["reasons"]) for r in flagged]
        lines.append("")
    return lines


def _hard_sharing_lines(cost: Mapping[str, Any]) -> list[str]:
    """The joint step against hard sharing's (``joint_over_hard_sharing``), or why there is no
    such ratio; nothing for a cost record written before it existed."""
    if "joint_over_hard_sharing" not in cost:
        return []
    ratio, architecture = cost["joint_over_hard_sharing"], cost.get("joint_architecture")
    if ratio is None:
        why = cost.get("joint_over_hard_sharing_undefined") or "not recorded"
        return [f"Step against hard sharing: not reported ({why}).", ""]
    joint_ms = 1e3 * cost["step_seconds"][records.JOINT_RUN]
    hard_ms = 1e3 * cost["hard_sharing_step_seconds"]
    return [
        f"**Against hard sharing: a joint step of {architecture} costs {ratio:.2f}x a joint step "
        f"of hard sharing** ({joint_ms:.2f} ms against {hard_ms:.2f} ms per step; measured as "
        f"{cost['joint_over_hard_sharing_method']}).",
        "",
    ]


def delta_m_text(comparison: Mapping[str, Any]) -> str:
    """``delta_m = +1.23 %`` with how many entries it averages, or why it is undefined."""
    counted = sum(1 for e in comparison.get("entries") or () if e.get("counted", True))
    which = {"primary": "each task's primary metric", "all": "every metric of every task"}
    over = f"K = {counted} entries: {which.get(comparison.get('metrics'), '?')}"
    if comparison.get("delta_m_percent") is None:
        why = comparison.get("delta_m_undefined") or "not recorded"
        return f"delta_m is undefined ({over}): {why}"
    return f"delta_m = {_signed(comparison['delta_m_percent'])} % ({over})"


def hierarchy_text(results: Mapping[str, Any]) -> str | None:
    """How often the predicted parent class is the predicted child's parent, when the dataset
    declares a hierarchy and both tasks were compared (else ``None``)."""
    comparison = results.get("comparison") or {}
    declared = comparison.get("hierarchy") or results.get("hierarchy")
    if not declared or not comparison:
        return None
    return (
        f"Hierarchy consistency (how often the predicted `{declared['parent']}` class is the "
        f"parent of the predicted `{declared['child']}` class, on test): joint model "
        f"{_pct(comparison.get('hierarchy_consistency'))} %; the two single-task models "
        f"together {_pct(comparison.get('hierarchy_consistency_single'))} %."
    )


def _table(table: tuple[list[str], list[list[str]]], fmt: str) -> str:
    from tabulate import tabulate

    headers, rows = table
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def summary_text(results: Mapping[str, Any], fmt: str = "github") -> str:
    """The task table, delta_m, hierarchy consistency and the run table, for the terminal."""
    parts = [*(results.get("notes") or ()), _table(task_table(results), fmt)]
    comparison = results.get("comparison")
    if comparison:
        parts.append(delta_m_text(comparison))
    hierarchy = hierarchy_text(results)
    if hierarchy:
        parts.append(hierarchy)
    parts.append(_table(run_table(results), fmt))
    return "\n\n".join(parts)


def _with_test_split_note(text: str) -> str:
    return text if "chooses nothing" in text else text + " The test split chooses nothing."


def selection_text(results: Mapping[str, Any]) -> str:
    """How each run's weights were chosen (``runs[].selection.rule``)."""
    rules: dict[str, list[str]] = {}
    for run in results["runs"]:
        rule = (run.get("selection") or {}).get("rule")
        if rule:
            rules.setdefault(rule, []).append(run["name"])
    text = "Each run's weights are those of its best epoch on the validation split"
    if not rules:
        return text + " (the selection rule is not recorded); the test split is used only here."
    if len(rules) == 1:
        return f"{text}: {next(iter(rules)).rstrip('.')}."
    return (
        text
        + ":\n\n"
        + "\n".join(
            f"- {', '.join(f'`{n}`' for n in names)}: {rule}" for rule, names in rules.items()
        )
    )


def _inputs_text(results: Mapping[str, Any]) -> list[str]:
    inputs = results.get("inputs")
    if not inputs:
        return []
    options = ", ".join(f"{k} {v}" for k, v in inputs.items() if k != "type")
    return [f"Inputs as the dataset declares them: `{inputs.get('type')}`"
            + (f" ({options})." if options else "."), ""]  # fmt: skip


def render_report(results: Mapping[str, Any]) -> str:
    """A readable Markdown report of ``results`` (a ``mtbench.results/2`` record)."""
    config = results["config"]
    names = {k: config[k].get("name", "?") for k in ("dataset", "backbone", "head", "weighting")}
    architecture = (config.get("architecture") or {}).get("name", records.DEFAULT_ARCHITECTURE)
    trainer = config["trainer"]
    env = results["environment"]
    lines = [
        "# mtbench report",
        "",
        f"Status: **{results['status']}**"
        + (f" ({results['error']})" if results.get("error") else ""),
        "",
    ]
    lines += [f"**Note:** {note}\n" for note in results.get("notes") or ()]
    lines += [
        f"Dataset `{names['dataset']}`, backbone `{names['backbone']}`, head `{names['head']}`, "
        f"architecture `{architecture}` (single-task baselines: hard sharing), "
        f"weighting `{names['weighting']}` (single-task baselines: plain loss). "
        f"Trainer: {trainer['optimizer']}, learning rate {trainer['learning_rate']} "
        f"({trainer['schedule']} schedule), batch {trainer['batch_size']}, "
        f"{trainer['epochs']} epochs, {precision_text(results)}; seed {config['seed']}. "
        "The full config is in results.json.",
        "",
    ]
    if results.get("tasks"):
        lines += [
            "## Tasks and data",
            "",
            "Each task's kind, the metric that selects epochs and counts in delta_m by default "
            "(↑ higher is better, ↓ lower is better), and the examples labelled for it per split "
            "(of all the split's examples): a task is trained and scored on its labelled examples "
            "only.",
            "",
            _table(data_table(results), "github"),
            "",
        ]
        lines += _inputs_text(results)
    if not results["runs"]:
        lines += ["No run has finished yet: there are no numbers to report."]
        lines += _environment_lines(env)
        return "\n".join(lines)
    lines += [
        "## Test results",
        "",
        _with_test_split_note(selection_text(results)),
        "",
        "Fractions are shown in %, other metrics in their own unit. Δ % is the joint model's "
        "relative change against the single-task model of that task, signed so that **positive "
        "means the joint model is better** whatever the metric's direction.",
        "",
        _table(task_table(results), "github"),
    ]
    comparison = results.get("comparison")
    if comparison:
        lines += ["", f"**{delta_m_text(comparison)}**, where {comparison['formula']}."]
    hierarchy = hierarchy_text(results)
    if hierarchy:
        lines += ["", hierarchy]
    failed = [run for run in results["runs"] if run.get("status") == "failed"]
    if failed:
        lines += ["", "## Failed runs", ""]
        lines += [f"- `{run['name']}`: {run['error']}" for run in failed]
    budget = results.get("budget")
    if budget:
        lines += [
            "",
            "## Equal-budget mode",
            "",
            f"Every run trained for {budget['time_budget_s']:g} s of wall-clock training time "
            "(at most trainer.epochs epochs), with the learning-rate schedule following the "
            "budget. Steps per run: "
            + ", ".join(f"`{name}` {steps}" for name, steps in budget["steps"].items())
            + ". The steps a run gets depend on its step cost and on the machine's load "
            "(see machine share below): these results are load-dependent.",
        ]
    if config["benchmark"].get("target"):
        lines += ["", "## Time to target", "", "Target (on validation, each task's primary "
                  "metric, reached at or above it, or at or below it where lower is better): "
                  f"{config['benchmark']['target']}. Times are wall-clock training seconds and "
                  "depend on the machine's load (see machine share below).", ""]  # fmt: skip
        for run in results["runs"]:
            hit = run.get("time_to_target")
            lines.append(
                f"- `{run['name']}`: "
                + (f"epoch {hit['epoch']}, {hit['train_seconds']:.1f} s of training" if hit else
                   "not reached")
            )  # fmt: skip
    lines += ["", "## Cost", ""]
    lines += cost_lines(results)
    lines += _parameter_lines(results)
    lines += [
        _table(run_table(results), "github"),
        "",
        "s/epoch is train s divided by the steps run, times the steps of a full epoch; "
        "examples/s and train s count training steps only, from the first touch of an epoch's "
        "data to the end of its last step (wall clock: they depend on the machine's load); "
        "tracing the step (trace s) and validation plus test (eval s) are measured apart. "
        "Machine share % is the part of the cores' capacity that other processes left to the "
        "run while it trained (100 on an idle machine; see mtbench.cost). Peak MiB is the "
        "process's resident-memory high-water mark during the run.",
    ]
    if any(run.get("history") for run in results["runs"]):
        lines += ["", "curves.png plots each task's validation primary metric per epoch and "
                  "against training time."]  # fmt: skip
    lines += _environment_lines(env)
    return "\n".join(lines)


def _parameter_lines(results: Mapping[str, Any]) -> list[str]:
    """One line per run with its trainable parameters: shared and each task's own."""
    lines = []
    for run in results["runs"]:
        counts = run.get("parameter_counts")
        if not counts:
            continue
        per_task = ", ".join(f"{t} {n:,}" for t, n in (counts.get("per_task") or {}).items())
        lines.append(
            f"- `{run['name']}` ({run.get('architecture', records.DEFAULT_ARCHITECTURE)}): "
            f"{counts['trainable']:,} trainable parameters, {counts['shared']:,} shared"
            + (f"; own per task: {per_task}" if per_task else "")
        )
    return [*lines, ""] if lines else []


def _environment_lines(env: Mapping[str, Any]) -> list[str]:
    return [
        "",
        "## Environment",
        "",
        f"Python {env['python']} on {env['platform']}; "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
        + f"; git commit {env['git_commit'] or 'unknown'}.",
        "",
    ]


def plot_curves(results: Mapping[str, Any], path: Path) -> bool:
    """Each run's validation primary metric per task, per epoch and against its training
    seconds (evaluation time excluded), one column per task. Written atomically; returns
    whether there was anything to plot."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in results["runs"] if r.get("history")]
    tasks = {
        t: record
        for t, record in records.task_records(results).items()
        if any(t in r["tasks"] for r in runs)
    }
    if not tasks:
        return False
    figure, axes = plt.subplots(2, len(tasks), figsize=(5 * len(tasks), 7.2), squeeze=False)
    for column, (task, record) in enumerate(tasks.items()):
        metric = record.primary_metric
        lowest = np.inf
        for run in runs:
            if task not in run["tasks"]:
                continue
            busy = bool((run.get("load") or {}).get("flagged"))
            style = {"marker": "o", "markersize": 3, "linestyle": "--" if busy else "-"}
            label = run["name"] + (" (busy machine)" if busy else "")
            epochs = [h["epoch"] for h in run["history"]]
            seconds = [h["train_seconds_so_far"] for h in run["history"]]
            values = [records.value(h, task, metric.name, "val") for h in run["history"]]
            shown = np.array([np.nan if v is None else v for v in values]) * metric_scale(metric)
            lowest = np.nanmin([lowest, *shown]) if len(shown) else lowest
            axes[0][column].plot(epochs, shown, label=label, **style)
            axes[1][column].plot(seconds, shown, label=label, **style)
        ylabel = f"validation {metric_label(metric)}, {arrow(metric)} better"
        axes[0][column].set(title=task, xlabel="epoch", ylabel=ylabel)
        axes[1][column].set(xlabel="training time (s, wall clock: depends on load)", ylabel=ylabel)
        for axis in axes[:, column]:
            if lowest >= 0:  # no exaggerated distances for metrics that cannot be negative
                axis.set_ylim(bottom=0)
            axis.grid(alpha=0.3)
            axis.legend(fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=110)
    finally:
        plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
    return True
