"""The results of a benchmark: the ``mtbench.results/1`` schema, the comparison math and the report.

``results.json`` (written atomically at the start and after every run, so a crash keeps what was
finished)::

    {"schema": "mtbench.results/1",
     "status": "running" | "complete" | "failed" | "interrupted",
     "error": null | "<message>",                  # why the benchmark failed or stopped
     "config": {...},                              # the full resolved config
     "environment": {...},                         # library versions, git commit, machine
     "resolved": {"precision": "mixed_bfloat16",   # what trainer.precision resolved to
                  "precision_native": true,        # false: emulated by this hardware (slow)
                  "device_class": "CPU AMD EPYC [avx2 avx512f avx512_bf16 ...]"},
     "budget": null | {"time_budget_s": 60.0, "steps": {"<run>": 123}, "load_dependent": true,
                       "note": "..."},            # equal-budget mode only
     "runs": [{"name": "single:fine" | "single:coarse" | "joint", "tasks": [...],
               "weighting": "<plugin>" | "plain loss",
               "status": "complete" | "failed",     # failed: a NaN/Inf loss or gradient
               "error": null | "<message>",
               "test": null | {"<task>": {"accuracy": 0.0, "top5_accuracy": 0.0}},
               "best_epoch": 1,                    # selected on validation, 1-based
               "val": {"<task>": {"accuracy": 0.0, "top5_accuracy": 0.0}},
               "stopped_by": "epochs" | "time_budget" | "target",
               "time_to_target": null | {"epoch": 1, "train_seconds": 0.0, "target": {...},
                                         "load_dependent": true},
               "skipped_steps": 0,                 # non-finite steps skipped (if allowed)
               "resumed_from": null | {"epoch": 1, "batch": 0},
               "reused_from": "<folder>",          # only for a baseline from the cache
               "history": [{"epoch": 1, "train_loss": {...}, "loss_weights": {...},
                            "val": {...}, "seconds": 0.0, "steps": 0,
                            "train_seconds_so_far": 0.0, "learning_rate": 0.0,
                            "skipped_steps": 0,
                            # the machine during the epoch's training (mtbench.hardware):
                            "cpu_seconds": 0.0, "others_utilisation": 0.0, "share": 1.0,
                            "cpu_utilisation": 0.5, "load_average": 1.0,
                            "gpu_utilisation": null}],
               "timing": {"epoch_seconds": [...], "train_seconds": 0.0,
                          "seconds_per_epoch": 0.0,   # train_seconds / steps * steps_per_epoch
                          "steps": 0, "steps_per_epoch": 0,
                          "images_per_second": 0.0, "trace_seconds": 0.0,
                          "eval_seconds": 0.0, "test_seconds": 0.0},
               "load": {"wall_seconds": 0.0, "cpu_seconds": 0.0,
                        "share": 1.0,                  # machine share over the run (mtbench.cost)
                        "lowest_epoch_share": 1.0, "load_average": 1.0,
                        "gpu_utilisation": null,
                        "flagged": false, "reasons": []},  # flagged: times not comparable
               "parameters": 0, "peak_memory_mb": 0.0, "peak_memory_scope": "run" | "process",
               "peak_device_memory_mb": null | 0.0, "device": "...",
               "distribution": {"strategy": "default", "replicas": 1}, "precision": "..."}],
     "comparison": null | {
         "metric": "test top-1 accuracy",
         "delta_m_percent": null | 0.0,           # null when a single-task accuracy is 0
         "formula": "...",
         "tasks": {"<task>": {"single": 0.0, "joint": 0.0, "delta_percent": 0.0}},
         "hierarchy": null | {"child": "fine", "parent": "coarse"},
         "hierarchy_consistency": null | 0.0,        # joint model
         "hierarchy_consistency_single": null | 0.0, # the two single-task models together
         "cost": null | {                            # load-robust (mtbench.cost)
             "method": "...", "step_seconds": {"<run>": 0.0}, "probe_seconds": 0.0,
             "joint_over_singles": 0.0,             # joint step / sum of single-task steps
             "joint_over_single": {"<task>": 0.0}}
     }}

A failed run keeps ``name``, ``tasks``, ``status`` and ``error`` (and ``test`` is null); it is
never reported as a number. The comparison needs every single-task run and the joint run.

Accuracies are fractions in [0, 1]; times are wall-clock seconds; memory is MiB.
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

from mtbench.io import atomic_write_bytes

SCHEMA = "mtbench.results/1"

DELTA_M_FORMULA = (
    "delta_m = 100/T * sum_t (A_joint,t - A_single,t) / A_single,t, with A the test top-1 "
    "accuracy of task t (higher is better) and T the number of tasks"
)


def delta_percent(single: float, joint: float) -> float:
    """Relative change of the joint model against the single-task one, in percent."""
    if single <= 0:
        raise ValueError(f"the single-task accuracy is {single}; the relative gain is undefined")
    return 100.0 * (joint - single) / single


def delta_m(single: Mapping[str, float], joint: Mapping[str, float]) -> float:
    """Mean relative multitask gain over tasks, in percent (see :data:`DELTA_M_FORMULA`)."""
    if set(single) != set(joint) or not single:
        raise ValueError(f"tasks differ: single {sorted(single)}, joint {sorted(joint)}")
    return float(np.mean([delta_percent(single[t], joint[t]) for t in single]))


def hierarchy_consistency(
    child_predictions: np.ndarray, parent_predictions: np.ndarray, parent_of: np.ndarray
) -> float:
    """Fraction of images whose predicted parent class is the predicted child class's parent."""
    return float(np.mean(parent_of[child_predictions] == parent_predictions))


def compare(
    runs: list[dict[str, Any]],
    tasks: list[str],
) -> dict[str, Any] | None:
    """The single-task versus joint comparison, or ``None`` when either side is missing."""
    by_name = {run["name"]: run for run in runs}
    joint = by_name.get("joint")
    singles = {t: by_name.get(f"single:{t}") for t in tasks}
    if joint is None or any(run is None for run in singles.values()):
        return None
    single_acc = {t: singles[t]["test"][t]["accuracy"] for t in tasks}  # type: ignore[index]
    joint_acc = {t: joint["test"][t]["accuracy"] for t in tasks}
    try:
        per_task = {
            t: {
                "single": single_acc[t],
                "joint": joint_acc[t],
                "delta_percent": delta_percent(single_acc[t], joint_acc[t]),
            }
            for t in tasks
        }
        gain: float | None = delta_m(single_acc, joint_acc)
    except ValueError:
        per_task = {
            t: {"single": single_acc[t], "joint": joint_acc[t], "delta_percent": None}
            for t in tasks
        }
        gain = None
    return {
        "metric": "test top-1 accuracy",
        "delta_m_percent": gain,
        "formula": DELTA_M_FORMULA,
        "tasks": per_task,
    }


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


# --------------------------------------------------------------------------------------- report
def _pct(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}"


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def task_table(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per task: single and joint test top-1 / top-5 accuracy (%) and the relative change."""
    headers = [
        "task", "single top-1 %", "joint top-1 %", "delta %", "single top-5 %", "joint top-5 %",
    ]  # fmt: skip
    runs = {run["name"]: run for run in results["runs"] if run.get("test")}
    joint = runs.get("joint")
    comparison = results.get("comparison") or {"tasks": {}}
    tasks = list(dict.fromkeys(t for r in results["runs"] for t in r["tasks"]))
    rows = []
    for t in tasks:
        single = runs.get(f"single:{t}")
        rows.append(
            [
                t,
                _pct(single["test"][t]["accuracy"]) if single else "n/a",
                _pct(joint["test"][t]["accuracy"]) if joint else "n/a",
                _signed(comparison["tasks"].get(t, {}).get("delta_percent")),
                _pct(single["test"][t]["top5_accuracy"]) if single else "n/a",
                _pct(joint["test"][t]["top5_accuracy"]) if joint else "n/a",
            ]
        )
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


def run_table(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per run: selection, cost and where it ran."""
    headers = [
        "run", "best epoch", "steps", "s/epoch", "images/s", "train s", "machine share %",
        "trace s", "eval s", "peak MiB", "precision", "device",
    ]  # fmt: skip
    rows = []
    for run in results["runs"]:
        if run.get("status") == "failed":
            rows.append([run["name"], "failed", *["n/a"] * (len(headers) - 2)])
            continue
        timing = run["timing"]
        per_epoch = seconds_per_epoch(run)
        rows.append(
            [
                run["name"] + (" (cached)" if run.get("reused_from") else ""),
                str(run["best_epoch"]),
                str(timing.get("steps", "n/a")),
                f"{per_epoch:.2f}" if per_epoch is not None else "n/a",
                f"{timing['images_per_second']:.0f}",
                f"{timing['train_seconds']:.1f}",
                _share(run),
                f"{timing['trace_seconds']:.2f}",
                f"{timing['eval_seconds'] + timing['test_seconds']:.1f}",
                f"{run['peak_memory_mb']:.0f}",
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
            "holds on a busy machine where s/epoch does not.",
            "",
        ]
    flagged = [r for r in results["runs"] if (r.get("load") or {}).get("flagged")]
    if flagged:
        lines += ["**Busy machine:** the wall-clock times of these runs are not comparable with "
                  "the others' (machine share % is the part of the machine other processes left "
                  "to the run while it trained):", ""]  # fmt: skip
        lines += [f"- `{r['name']}`: " + "; ".join(r["load"]["reasons"]) for r in flagged]
        lines.append("")
    return lines


def _table(table: tuple[list[str], list[list[str]]], fmt: str) -> str:
    from tabulate import tabulate

    headers, rows = table
    return tabulate(rows, headers=headers, tablefmt=fmt)


def summary_text(results: Mapping[str, Any], fmt: str = "github") -> str:
    parts = [_table(task_table(results), fmt)]
    comparison = results.get("comparison")
    if comparison:
        line = f"delta_m = {_signed(comparison['delta_m_percent'])} %"
        if comparison.get("hierarchy_consistency") is not None:
            h = comparison["hierarchy"]
            line += (
                f"; hierarchy consistency ({h['child']} -> {h['parent']}): joint "
                f"{_pct(comparison['hierarchy_consistency'], 1)} %, single-task pair "
                f"{_pct(comparison.get('hierarchy_consistency_single'), 1)} %"
            )
        parts.append(line)
    parts.append(_table(run_table(results), fmt))
    return "\n\n".join(parts)


def render_report(results: Mapping[str, Any]) -> str:
    """A readable Markdown report of ``results``."""
    config = results["config"]
    names = {k: config[k].get("name", "?") for k in ("dataset", "backbone", "head", "weighting")}
    trainer = config["trainer"]
    env = results["environment"]
    lines = [
        "# mtbench report",
        "",
        f"Status: **{results['status']}**"
        + (f" ({results['error']})" if results.get("error") else ""),
        "",
        f"Dataset `{names['dataset']}`, backbone `{names['backbone']}`, head `{names['head']}`, "
        f"weighting `{names['weighting']}` (single-task baselines: plain loss). "
        f"Trainer: {trainer['optimizer']}, learning rate {trainer['learning_rate']} "
        f"({trainer['schedule']} schedule), batch {trainer['batch_size']}, "
        f"{trainer['epochs']} epochs, {precision_text(results)}; seed {config['seed']}. "
        "The full config is in results.json.",
        "",
        "## Test accuracy",
        "",
        "Each run's weights are those of its best epoch on the validation split (mean "
        "validation top-1 accuracy over the run's tasks); the test split is used only here.",
        "",
    ]
    if not results["runs"]:
        lines[-4:] = ["No run has finished yet: there are no numbers to report."]
        lines += _environment_lines(env)
        return "\n".join(lines)
    lines.append(_table(task_table(results), "github"))
    comparison = results.get("comparison")
    if comparison:
        lines += ["", f"**delta_m = {_signed(comparison['delta_m_percent'])} %**, where "
                  f"{comparison['formula']}."]  # fmt: skip
        if comparison.get("hierarchy_consistency") is not None:
            h = comparison["hierarchy"]
            lines += [
                "",
                f"Hierarchy consistency (how often the predicted `{h['parent']}` class is the "
                f"parent of the predicted `{h['child']}` class, on test): joint model "
                f"{_pct(comparison['hierarchy_consistency'], 1)} %; the two single-task models "
                f"together {_pct(comparison.get('hierarchy_consistency_single'), 1)} %.",
            ]
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
    targets = [run for run in results["runs"] if run.get("time_to_target") is not None]
    if config["benchmark"].get("target"):
        lines += ["", "## Time to target", "", f"Target (validation top-1): "
                  f"{config['benchmark']['target']}. Times are wall-clock training seconds and "
                  "depend on the machine's load (see machine share below).", ""]  # fmt: skip
        reached = {run["name"]: run["time_to_target"] for run in targets}
        for run in results["runs"]:
            hit = reached.get(run["name"])
            lines.append(
                f"- `{run['name']}`: "
                + (f"epoch {hit['epoch']}, {hit['train_seconds']:.1f} s of training" if hit else
                   "not reached")
            )  # fmt: skip
    lines += ["", "## Cost", ""]
    lines += cost_lines(results)
    lines += [
        _table(run_table(results), "github"),
        "",
        "s/epoch is train s divided by the steps run, times the steps of a full epoch; "
        "images/s and train s count training steps only, from the first touch of an epoch's "
        "data to the end of its last step (wall clock: they depend on the machine's load); "
        "tracing the step (trace s) and validation plus test (eval s) are measured apart. "
        "Machine share % is the part of the cores' capacity that other processes left to the "
        "run while it trained (100 on an idle machine; see mtbench.cost). Peak MiB is the "
        "process's resident-memory high-water mark during the run.",
    ]
    if any(run.get("history") for run in results["runs"]):
        lines += ["", "curves.png plots validation accuracy per epoch and against training time."]
    lines += _environment_lines(env)
    return "\n".join(lines)


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
    """Time-to-accuracy curves: each run's validation top-1 accuracy per task against its
    training seconds (evaluation time excluded), one panel per task. Written atomically; returns
    whether there was anything to plot."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in results["runs"] if r.get("history")]
    tasks = list(dict.fromkeys(t for r in runs for t in r["tasks"]))
    if not tasks:
        return False
    figure, axes = plt.subplots(2, len(tasks), figsize=(5 * len(tasks), 7.2), squeeze=False)
    for column, task in enumerate(tasks):
        for run in runs:
            if task not in run["tasks"]:
                continue
            busy = bool((run.get("load") or {}).get("flagged"))
            style = {"marker": "o", "markersize": 3, "linestyle": "--" if busy else "-"}
            label = run["name"] + (" (busy machine)" if busy else "")
            epochs = [h["epoch"] for h in run["history"]]
            seconds = [h["train_seconds_so_far"] for h in run["history"]]
            accuracy = [100 * h["val"][task]["accuracy"] for h in run["history"]]
            axes[0][column].plot(epochs, accuracy, label=label, **style)
            axes[1][column].plot(seconds, accuracy, label=label, **style)
        axes[0][column].set(title=task, xlabel="epoch", ylabel="validation top-1 (%)")
        axes[1][column].set(
            xlabel="training time (s, wall clock: depends on load)",
            ylabel="validation top-1 (%)",
        )
        for axis in axes[:, column]:
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
