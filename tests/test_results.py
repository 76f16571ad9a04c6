"""The report of a benchmark: generic metric tables, delta_m, data counts, notes, curves."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from mtbench import records
from mtbench.results import (
    format_metric,
    hierarchy_consistency,
    plot_curves,
    render_report,
    run_table,
    summary_text,
    task_table,
)
from mtbench.tasks import Metric

DATA = Path(__file__).parent / "data"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RULE = "best epoch = the highest validation score (hand-written rule for this test)"


def _task(kind: str, primary: str, *metrics: Metric, labelled=(700, 90, 300)) -> dict:
    return {
        "kind": kind,
        "primary": primary,
        "metrics": {
            m.name: {"unit": m.unit, "higher_is_better": m.higher_is_better, "description": ""}
            for m in metrics
        },
        "labelled": dict(zip(("train", "val", "test"), labelled, strict=True)),
        "examples": {"train": 800, "val": 100, "test": 300},
    }


TASKS = {
    "fine": _task(
        "classification", "accuracy",
        Metric("accuracy", "fraction", True), Metric("macro_f1", "fraction", True),
    ),
    "energy": _task(
        "regression", "mae", Metric("mae", "eV", False), Metric("rmse", "eV", False),
        labelled=(400, 50, 150),
    ),
}  # fmt: skip


def _run(name: str, test: dict, history_values: list[dict] | None = None) -> dict:
    test = copy.deepcopy(test)  # tests may edit a run's values
    history = [
        {"epoch": e + 1, "train_seconds_so_far": 1.5 * (e + 1), "val": values}
        for e, values in enumerate(history_values or [])
    ]
    return {
        "name": name,
        "tasks": list(test),
        "weighting": "ew" if name == records.JOINT_RUN else "plain loss",
        "status": "complete",
        "error": None,
        "test": test,
        "val": test,
        "best_epoch": 1,
        "selection": {"rule": RULE, "score": 0.5},
        "history": history,
        "timing": {"epoch_seconds": [1.5], "seconds_per_epoch": 1.5, "steps": 10,
                   "steps_per_epoch": 10, "train_seconds": 1.5, "examples_per_second": 533.3,
                   "trace_seconds": 0.5, "eval_seconds": 0.2, "test_seconds": 0.1},
        "load": {"share": 1.0, "flagged": False, "reasons": []},
        "parameters": 10, "peak_memory_mb": 100.0, "precision": "float32", "device": "CPU",
    }  # fmt: skip


SINGLE = {"fine": {"accuracy": 0.40, "macro_f1": 0.30}, "energy": {"mae": 0.20, "rmse": 0.25}}
JOINT = {"fine": {"accuracy": 0.44, "macro_f1": 0.33}, "energy": {"mae": 0.15, "rmse": 0.30}}


def results_v2(**changes) -> dict:
    """A complete two-task ``/2`` record, built by hand (fine classification, energy in eV)."""
    config = {
        "dataset": {"name": "d"}, "backbone": {"name": "b"}, "head": {"name": "h"},
        "weighting": {"name": "ew"}, "seed": 0, "benchmark": {},
        "trainer": {"optimizer": "adam", "learning_rate": 0.001, "schedule": "constant",
                    "batch_size": 8, "epochs": 1, "precision": "float32"},
    }  # fmt: skip
    env = {"python": "3", "platform": "p", "versions": {}, "git_commit": None}
    results = records.new_results(config, env)
    runs = [
        _run("single:fine", {"fine": SINGLE["fine"]}, [{"fine": SINGLE["fine"]}]),
        _run("single:energy", {"energy": SINGLE["energy"]}, [{"energy": SINGLE["energy"]}]),
        _run("joint", JOINT, [JOINT, JOINT]),
    ]
    results.update(
        status="complete",
        resolved={"precision": "float32", "precision_native": True, "device_class": "CPU"},
        tasks=copy.deepcopy(TASKS),
        inputs={"type": "Inputs"},
        runs=runs,
        comparison=records.compare(runs, TASKS),
    )
    results.update(changes)
    return results


def _rows(results: dict) -> dict:
    headers, rows = task_table(results)
    return {(row[0], row[1]): dict(zip(headers, row, strict=True)) for row in rows}


# ------------------------------------------------------------------------------------ tables
def test_task_table_shows_every_metric_with_its_unit_and_direction():
    rows = _rows(results_v2())
    accuracy = rows[("fine", "accuracy (%), primary")]
    assert accuracy["better"] == "↑ higher"
    assert (accuracy["single"], accuracy["joint"]) == ("40.00", "44.00")  # fractions in %
    assert accuracy["Δ % (+: joint better)"] == "+10.00" and accuracy["in delta_m"] == "yes"
    mae = rows[("energy", "mae (eV), primary")]
    assert mae["better"] == "↓ lower" and (mae["single"], mae["joint"]) == ("0.2", "0.15")
    assert mae["Δ % (+: joint better)"] == "+25.00"  # lower MAE: the joint model is better
    rmse = rows[("energy", "rmse (eV)")]
    assert rmse["Δ % (+: joint better)"] == "-20.00" and rmse["in delta_m"] == ""
    assert list(rows)[:2] == [("fine", "accuracy (%), primary"), ("fine", "macro_f1 (%)")]


def test_format_metric_shows_fractions_in_percent_and_units_as_they_are():
    assert format_metric(0.12345, Metric("accuracy", "fraction", True)) == "12.35"
    assert format_metric(0.012345, Metric("mae", "eV", False)) == "0.01235"
    assert format_metric(1234.5, Metric("mae", "years", False)) == "1234"
    assert format_metric(None, Metric("mae", "eV", False)) == "n/a"


def test_run_table_reports_examples_per_second():
    headers, rows = run_table(results_v2())
    assert "examples/s" in headers and rows[0][headers.index("examples/s")] == "533"


# ------------------------------------------------------------------------------------ report
def test_report_states_formula_selection_rule_and_labelled_counts():
    report = render_report(results_v2())
    assert "**delta_m = +17.50 % (K = 2 entries: each task's primary metric)**" in report
    assert records.DELTA_M_FORMULA in report
    assert RULE in report and "The test split chooses nothing" in report
    data = report.split("## Tasks and data")[1].split("## ")[0]
    assert "| fine   | classification | accuracy (%) ↑" in data
    assert "700 of 800" in data and "90 of 100" in data and "150 of 300" in data
    assert "mae (eV) ↓" in data
    assert "Hierarchy consistency" not in report  # none declared
    assert "positive means the joint model is better" in report


def test_report_explains_an_undefined_delta_m():
    runs = [
        _run("single:fine", {"fine": SINGLE["fine"]}),
        _run("single:energy", {"energy": {"mae": 0.0, "rmse": 0.25}}),
        _run("joint", JOINT),
    ]
    report = render_report(results_v2(runs=runs, comparison=records.compare(runs, TASKS)))
    assert "delta_m is undefined (K = 2 entries: each task's primary metric): the " in report
    assert "single-task mae of task 'energy' is 0" in report
    assert "+10.00" in report  # fine's change is still shown


def test_report_of_a_one_task_benchmark_has_its_note_and_no_comparison():
    tasks = {"fine": TASKS["fine"]}
    runs = [_run("single:fine", {"fine": SINGLE["fine"]})]
    results = results_v2(
        tasks=tasks, runs=runs, comparison=None, notes=[records.one_task_note("fine")]
    )
    report = render_report(results)
    assert "**Note:** one task (fine): there is no joint model" in report
    assert "delta_m =" not in report and "in delta_m" not in task_table(results)[0]
    assert "one task (fine)" in summary_text(results)


def test_hierarchy_consistency_is_shown_only_when_declared():
    results = results_v2(hierarchy={"child": "fine", "parent": "energy"})
    results["comparison"].update(
        hierarchy={"child": "fine", "parent": "energy"},
        hierarchy_consistency=0.75,
        hierarchy_consistency_single=None,
    )
    report = render_report(results)
    assert "joint model 75.0 %; the two single-task models together n/a %" in report
    assert "Hierarchy consistency" in summary_text(results)


def test_report_keeps_precision_budget_cost_and_load_sections():
    results = results_v2(
        resolved={"precision": "mixed_bfloat16", "precision_native": False, "device_class": "C"},
        budget={"time_budget_s": 60.0, "steps": {"joint": 12}, "load_dependent": True},
    )
    results["config"]["trainer"]["precision"] = "auto"
    results["runs"][2]["load"] = {"share": 0.5, "flagged": True, "reasons": ["busy"]}
    results["comparison"]["cost"] = {
        "method": "median of interleaved steps", "joint_over_singles": 0.6,
        "joint_over_single": {"fine": 1.2, "energy": 1.2},
    }  # fmt: skip
    report = render_report(results)
    assert "precision mixed_bfloat16 (chosen by trainer.precision=auto)" in report
    assert "**emulated on this hardware (slow)**" in report
    assert "## Equal-budget mode" in report and "`joint` 12" in report
    assert "a joint step costs 0.60x the sum of the single-task steps" in report
    assert "- `joint`: busy" in report and "50 (busy)" in report


def test_report_of_a_v1_file_reads_through_records():
    report = render_report(records.load(DATA / "results_v1.json"))
    assert "accuracy (%), primary" in report and "top5_accuracy (%)" in report
    assert "recorded by mtbench.results/1" in report  # its selection rule
    assert "delta_m = -47.27 %" in report and "Hierarchy consistency" in report


def test_report_without_runs_says_so():
    results = results_v2(runs=[], comparison=None, status="running")
    report = render_report(results)
    assert "No run has finished yet" in report and "| task" in report  # the data table
    assert "## Test results" not in report and "curves.png" not in report


# ------------------------------------------------------------------------------------ curves
def test_curves_plot_each_tasks_primary_metric(tmp_path):
    path = tmp_path / "curves.png"
    assert plot_curves(results_v2(), path)
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert not plot_curves(results_v2(runs=[]), tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_hierarchy_consistency_counts_parent_agreement():
    parent_of = np.array([1, 0, 1])
    child = np.array([0, 1, 2, 2])
    parent = np.array([1, 0, 0, 1])  # third example: child 2 belongs to parent 1, not 0
    assert hierarchy_consistency(child, parent, parent_of) == pytest.approx(0.75)
