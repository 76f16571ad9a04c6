"""The results file's owner: run names, task records, the comparison and delta_m, reading (old
schemas included) and writing, and the one identity function."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mtbench import records
from mtbench.records import (
    DELTA_M_FORMULA,
    JOINT_RUN,
    RecordError,
    TaskRecord,
    compare,
    delta_percent,
    differing_keys,
    flatten,
    identity,
    location_fields,
    location_keys,
    single_run_name,
    task_of_single,
)
from mtbench.tasks import Metric, TaskSpec, task_kind

DATA = Path(__file__).parent / "data"


# ------------------------------------------------------------------------------------ fixtures
def _metrics(*metrics: Metric) -> dict:
    return {
        m.name: {"unit": m.unit, "higher_is_better": m.higher_is_better, "description": ""}
        for m in metrics
    }


ACCURACY = Metric("accuracy", "fraction", True)
MACRO_F1 = Metric("macro_f1", "fraction", True)
MAE = Metric("mae", "eV", False)
RMSE = Metric("rmse", "eV", False)

#: fine (classification), energy and force (regression, lower is better)
TASKS = {
    "fine": {"kind": "classification", "primary": "accuracy",
             "metrics": _metrics(ACCURACY, MACRO_F1)},
    "energy": {"kind": "regression", "primary": "mae", "metrics": _metrics(MAE, RMSE)},
    "force": {"kind": "regression", "primary": "mae", "metrics": _metrics(MAE, RMSE)},
}  # fmt: skip


def _runs(single: dict, joint: dict) -> list[dict]:
    """``single``/``joint``: task -> {metric: value}; one single-task run per task (copies:
    tests may edit them)."""
    single, joint = copy.deepcopy(single), copy.deepcopy(joint)
    runs = [
        {"name": single_run_name(t), "tasks": [t], "status": "complete", "test": {t: values}}
        for t, values in single.items()
    ]
    runs.append({"name": JOINT_RUN, "tasks": list(joint), "status": "complete", "test": joint})
    return runs


SINGLE = {
    "fine": {"accuracy": 0.40, "macro_f1": 0.50},
    "energy": {"mae": 0.20, "rmse": 0.25},
    "force": {"mae": 0.50, "rmse": 0.80},
}
JOINT = {
    "fine": {"accuracy": 0.44, "macro_f1": 0.45},  # accuracy +10 %, macro F1 -10 %
    "energy": {"mae": 0.15, "rmse": 0.30},  # MAE down: +25 % (better); RMSE up: -20 %
    "force": {"mae": 0.60, "rmse": 0.60},  # MAE up: -20 % (worse); RMSE down: +25 %
}


def _entry(comparison: dict, task: str, metric: str) -> dict:
    (entry,) = [e for e in comparison["entries"] if (e["task"], e["metric"]) == (task, metric)]
    return entry


# ----------------------------------------------------------------------------------- run names
def test_run_names_are_decided_in_one_place():
    assert single_run_name("fine") == "single:fine" and JOINT_RUN == "joint"
    assert task_of_single(single_run_name("a:b")) == "a:b"
    assert task_of_single(JOINT_RUN) is None and task_of_single("fine") is None
    assert records.run_slug("single:fine") == "single_fine"


# ------------------------------------------------------------------------------ delta_percent
def test_delta_percent_is_positive_when_the_joint_model_is_better():
    assert delta_percent(0.40, 0.44) == pytest.approx(10.0)  # accuracy up: better
    assert delta_percent(0.20, 0.15, higher_is_better=False) == pytest.approx(25.0)  # MAE down
    assert delta_percent(0.50, 0.60, higher_is_better=False) == pytest.approx(-20.0)  # MAE up
    # relative to |single|: a negative single-task value keeps the sign meaning "better"
    assert delta_percent(-2.0, -1.0) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="is 0"):
        delta_percent(0.0, 0.1)
    with pytest.raises(ValueError, match="not finite"):
        delta_percent(math.nan, 0.1)


# ---------------------------------------------------------------------------------- comparison
def test_compare_primary_signs_each_metric_by_its_direction():
    comparison = compare(_runs(SINGLE, JOINT), TASKS, metrics="primary")
    # fine accuracy +10, energy MAE 0.20 -> 0.15 is +25, force MAE 0.50 -> 0.60 is -20
    assert comparison["delta_m_percent"] == pytest.approx((10 + 25 - 20) / 3)
    assert comparison["delta_m_undefined"] is None and comparison["metrics"] == "primary"
    assert comparison["formula"] == DELTA_M_FORMULA and "100/K" in DELTA_M_FORMULA
    assert comparison["tasks"]["energy"] == {
        "metric": "mae",
        "single": 0.20,
        "joint": 0.15,
        "delta_percent": pytest.approx(25.0),
    }
    assert comparison["tasks"]["force"]["delta_percent"] == pytest.approx(-20.0)
    # every metric is an entry, the primary one first; only the primary ones count
    assert [(e["task"], e["metric"], e["counted"]) for e in comparison["entries"]] == [
        ("fine", "accuracy", True), ("fine", "macro_f1", False),
        ("energy", "mae", True), ("energy", "rmse", False),
        ("force", "mae", True), ("force", "rmse", False),
    ]  # fmt: skip
    rmse = _entry(comparison, "energy", "rmse")
    assert rmse == {
        "task": "energy", "metric": "rmse", "unit": "eV", "higher_is_better": False,
        "single": 0.25, "joint": 0.30, "delta_percent": pytest.approx(-20.0), "counted": False,
    }  # fmt: skip
    for key in ("hierarchy", "hierarchy_consistency", "hierarchy_consistency_single", "cost"):
        assert comparison[key] is None  # for the protocol to fill
    json.dumps(comparison, allow_nan=False)  # writable as it is


def test_compare_all_averages_over_every_metric_of_every_task():
    comparison = compare(_runs(SINGLE, JOINT), TASKS, metrics="all")
    # K = 6: +10 (accuracy), -10 (macro F1), +25 -20 (energy), -20 +25 (force)
    assert comparison["delta_m_percent"] == pytest.approx((10 - 10 + 25 - 20 - 20 + 25) / 6)
    assert all(e["counted"] for e in comparison["entries"]) and comparison["metrics"] == "all"
    assert _entry(comparison, "force", "rmse")["delta_percent"] == pytest.approx(25.0)


def test_a_zero_single_task_value_makes_delta_m_undefined_and_keeps_the_other_entries():
    single = {**SINGLE, "energy": {"mae": 0.0, "rmse": 0.25}}
    comparison = compare(_runs(single, JOINT), TASKS)
    assert comparison["delta_m_percent"] is None
    assert comparison["delta_m_undefined"] == "the single-task mae of task 'energy' is 0"
    assert _entry(comparison, "energy", "mae")["delta_percent"] is None
    assert comparison["tasks"]["energy"]["delta_percent"] is None
    assert comparison["tasks"]["fine"]["delta_percent"] == pytest.approx(10.0)
    assert _entry(comparison, "energy", "rmse")["delta_percent"] == pytest.approx(-20.0)
    # a zero in a metric delta_m does not count leaves it defined
    single = {**SINGLE, "energy": {"mae": 0.20, "rmse": 0.0}}
    comparison = compare(_runs(single, JOINT), TASKS, metrics="primary")
    assert comparison["delta_m_percent"] == pytest.approx(5.0)
    assert _entry(comparison, "energy", "rmse")["delta_percent"] is None
    assert compare(_runs(single, JOINT), TASKS, metrics="all")["delta_m_percent"] is None


def test_a_metric_that_could_not_be_computed_is_null_and_undefines_delta_m_where_counted():
    joint = {**JOINT, "fine": {"accuracy": 0.44, "macro_f1": None}}
    comparison = compare(_runs(SINGLE, joint), TASKS, metrics="all")
    assert comparison["delta_m_percent"] is None
    assert "joint macro_f1 of task 'fine' is null" in comparison["delta_m_undefined"]
    assert _entry(comparison, "fine", "macro_f1")["joint"] is None
    assert compare(_runs(SINGLE, joint), TASKS)["delta_m_percent"] == pytest.approx(5.0)


def test_compare_needs_every_single_task_run_and_the_joint_run():
    runs = _runs(SINGLE, JOINT)
    assert compare(runs[:-1], TASKS) is None  # no joint run yet
    assert compare(runs[1:], TASKS) is None  # no single-task run of fine
    failed = [{**runs[0], "status": "failed", "test": None}, *runs[1:]]
    assert compare(failed, TASKS) is None
    one = {"fine": TASKS["fine"]}
    assert compare(_runs({"fine": SINGLE["fine"]}, {"fine": JOINT["fine"]}), one) is None
    with pytest.raises(ValueError, match="choose 'primary'"):
        compare(runs, TASKS, metrics="mean")


# -------------------------------------------------------------------------------- task records
def test_task_record_describes_a_kind_and_reads_back():
    fine = task_kind(TaskSpec("fine", 10))
    record = records.task_record(fine, {"train": 700, "val": 100}, {"train": 800, "val": 100})
    assert record["kind"] == "classification" and record["primary"] == "accuracy"
    assert list(record["metrics"]) == ["accuracy", "top5_accuracy", "macro_f1"]
    assert record["metrics"]["accuracy"]["unit"] == "fraction"
    assert record["labelled"] == {"train": 700, "val": 100}
    energy = task_kind(TaskSpec("energy", kind="regression", options={"units": ["eV"]}))
    typed = TaskRecord.from_dict("energy", records.task_record(energy, {}, {}))
    assert typed.primary_metric == Metric("mae", "eV", False, "mean absolute error")
    assert [m.name for m in typed.ordered_metrics] == ["mae", "rmse"]
    section = {"fine": record}
    assert records.task_records({"tasks": section})["fine"].to_dict() == record


def test_malformed_task_records_are_refused_with_the_reason():
    with pytest.raises(RecordError, match="primary metric 'f1' is not one of its metrics"):
        TaskRecord.from_dict("t", {"kind": "c", "primary": "f1", "metrics": _metrics(ACCURACY)})
    bad = {"accuracy": {"unit": "fraction", "higher_is_better": "yes"}}
    with pytest.raises(RecordError, match="higher_is_better is 'yes'"):
        TaskRecord.from_dict("t", {"kind": "c", "primary": "accuracy", "metrics": bad})
    with pytest.raises(RecordError, match="malformed"):
        TaskRecord.from_dict("t", {"kind": "c"})


# ----------------------------------------------------------------------------- write and load
def test_write_and_load_round_trip_with_nan_as_null(tmp_path):
    results = records.new_results({"seed": 0}, {"python": "3"}, location_keys={"dataset.root"})
    results["tasks"] = TASKS
    results["runs"] = _runs(SINGLE, JOINT)
    results["runs"][-1]["test"]["fine"]["macro_f1"] = float("nan")
    path = tmp_path / "results.json"
    records.write(path, results)
    assert "NaN" not in path.read_text()
    loaded = records.load(path)
    assert loaded["schema"] == records.SCHEMA and loaded["location_keys"] == ["dataset.root"]
    assert loaded["runs"][-1]["test"]["fine"]["macro_f1"] is None
    assert math.isnan(results["runs"][-1]["test"]["fine"]["macro_f1"])  # the caller's dict
    with pytest.raises(RecordError, match="writes mtbench.results/2 only"):
        records.write(path, {**results, "schema": records.SCHEMA_V1})


def test_a_run_record_alone_round_trips(tmp_path):
    run = _runs(SINGLE, JOINT)[0] | {"timing": {"images_per_second": 10.0}}
    run["test"]["fine"]["macro_f1"] = float("inf")
    records.write_run(tmp_path / "single_fine.json", run)
    loaded = records.load_run(tmp_path / "single_fine.json")
    assert loaded["test"]["fine"] == {"accuracy": 0.40, "macro_f1": None}
    assert loaded["timing"] == {"examples_per_second": 10.0}  # an old name, upgraded
    (tmp_path / "other.json").write_text("[1]")
    with pytest.raises(RecordError, match="holds no run record"):
        records.load_run(tmp_path / "other.json")


def test_load_upgrades_a_v1_file_written_by_mtbench_0_1():
    path = DATA / "results_v1.json"
    original = json.loads(path.read_text())
    results = records.load(path)
    assert results["schema"] == records.SCHEMA and results["upgraded_from"] == records.SCHEMA_V1
    assert list(results["tasks"]) == ["fine", "coarse"]
    fine = records.task_records(results)["fine"]
    assert fine.kind == "classification" and fine.primary == "accuracy"
    assert {m.name: (m.unit, m.higher_is_better) for m in fine.metrics} == {
        "accuracy": ("fraction", True),
        "top5_accuracy": ("fraction", True),
    }
    joint = records.completed_runs(results)[JOINT_RUN]
    v1_joint = original["runs"][2]
    assert joint["timing"]["examples_per_second"] == v1_joint["timing"]["images_per_second"]
    assert "images_per_second" not in joint["timing"]
    assert "/1" in joint["selection"]["rule"]
    assert joint["selection"]["score"] == pytest.approx(
        (v1_joint["val"]["fine"]["accuracy"] + v1_joint["val"]["coarse"]["accuracy"]) / 2
    )
    comparison = results["comparison"]
    v1 = original["comparison"]
    assert comparison["metrics"] == "primary" and "metric" not in comparison
    assert comparison["delta_m_percent"] == v1["delta_m_percent"]
    assert comparison["tasks"]["fine"] == {"metric": "accuracy", **v1["tasks"]["fine"]}
    accuracy = _entry(comparison, "coarse", "accuracy")
    assert (
        accuracy["counted"] and accuracy["delta_percent"] == v1["tasks"]["coarse"]["delta_percent"]
    )
    top5 = _entry(comparison, "fine", "top5_accuracy")  # not in /1: computed, not counted
    single_top5 = original["runs"][0]["test"]["fine"]["top5_accuracy"]
    joint_top5 = v1_joint["test"]["fine"]["top5_accuracy"]
    assert not top5["counted"]
    assert top5["delta_percent"] == pytest.approx(100 * (joint_top5 - single_top5) / single_top5)
    assert results["hierarchy"] == {"child": "fine", "parent": "coarse"}
    assert results["location_keys"] == list(records.V1_LOCATION_KEYS)
    assert results["notes"] == [] and results["inputs"] is None


def test_load_refuses_what_it_cannot_read(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("{truncated")
    with pytest.raises(RecordError, match="is not JSON"):
        records.load(path)
    path.write_text(json.dumps({"schema": "mtbench.results/9"}))
    with pytest.raises(RecordError, match="'mtbench.results/9' is not one mtbench reads"):
        records.load(path)
    path.write_text("[]")
    with pytest.raises(RecordError, match="not a list"):
        records.load(path)


def test_a_v1_one_task_benchmark_gets_the_note():
    v1 = {"schema": records.SCHEMA_V1, "status": "complete", "config": {}, "comparison": None,
          "runs": [{"name": "single:fine", "tasks": ["fine"], "status": "complete",
                    "test": {"fine": {"accuracy": 0.5, "top5_accuracy": 0.9}}}]}  # fmt: skip
    results = records.upgrade(v1)
    assert results["notes"] == [records.one_task_note("fine")] and results["comparison"] is None
    assert "no joint model" in results["notes"][0]


# ------------------------------------------------------------------------------------ identity
def test_flatten_keeps_lists_and_empty_mappings_whole():
    config = {"a": {"b": 1, "c": {"d": [1, 2]}, "e": {}}, "seed": 0}
    flat = flatten(config)
    assert flat == {"a.b": 1, "a.c.d": [1, 2], "a.e": {}, "seed": 0}
    assert flatten(flat) == flat  # an already flat config stays as it is


CONFIG = {
    "dataset": {"name": "d", "root": "/data", "val_size": 100},
    "weighting": {"name": "pcgrad", "reduction": "sum"},
    "trainer": {"learning_rate": 0.1, "progress": True, "progress_bar": "x", "precision": "auto",
                "checkpoint_every": 1},
    "benchmark": {"tasks": None, "single_task": True, "delta_m_metrics": "primary",
                  "cost_rounds": 5, "baseline_cache": "/cache"},
    "seed": 3,
    "resume": None,
}  # fmt: skip


@pytest.mark.parametrize(
    ("key", "free_for"),
    [
        ("seed", {"leaderboard"}),
        ("resume", {"resume", "baseline", "leaderboard"}),
        ("trainer.progress", {"resume", "baseline", "leaderboard"}),
        ("trainer.checkpoint_every", {"resume", "baseline", "leaderboard"}),
        ("benchmark.baseline_cache", {"resume", "baseline", "leaderboard"}),
        ("weighting.name", {"baseline"}),
        ("weighting.reduction", {"baseline"}),
        ("benchmark.tasks", {"baseline"}),
        ("benchmark.single_task", {"baseline"}),
        ("benchmark.delta_m_metrics", {"baseline"}),
        ("benchmark.cost_rounds", {"baseline"}),
        ("trainer.learning_rate", set()),
        ("trainer.progress_bar", set()),  # shares a prefix with a free key, is not below it
        ("dataset.val_size", set()),
        ("dataset.root", set()),  # a location option only when its plugin marks it
    ],
)
def test_identity_table(key, free_for):
    for purpose in records.PURPOSES:
        kept = identity(CONFIG, purpose)
        assert (key not in kept) == (purpose in free_for), (key, purpose)


def test_location_options_are_free_for_every_purpose_when_marked():
    for purpose in records.PURPOSES:
        kept = identity(CONFIG, purpose, location={"dataset.root"})
        assert "dataset.root" not in kept and kept["dataset.val_size"] == 100
    moved = {**CONFIG, "dataset": {**CONFIG["dataset"], "root": "/elsewhere"}}
    assert differing_keys(CONFIG, moved, "resume") == ["dataset.root"]
    assert differing_keys(CONFIG, moved, "resume", location={"dataset.root"}) == []


def test_resolved_precision_and_device_class_enter_baseline_and_leaderboard_identities():
    resolved = {"precision": "float32", "precision_native": True, "device_class": "CPU x"}
    for purpose in ("baseline", "leaderboard"):
        kept = identity(CONFIG, purpose, resolved=resolved)
        assert kept["trainer.precision"] == "float32" and kept["device_class"] == "CPU x"
    kept = identity(CONFIG, "resume", resolved=resolved)
    assert kept["trainer.precision"] == "auto" and "device_class" not in kept
    with pytest.raises(ValueError, match="choose one of resume, baseline, leaderboard"):
        identity(CONFIG, "cache")


def test_differing_keys_sees_changed_added_and_removed_keys():
    changed = {**CONFIG, "seed": 4, "trainer": {**CONFIG["trainer"], "progress": False}}
    assert differing_keys(CONFIG, changed, "resume") == ["seed"]
    assert differing_keys(CONFIG, changed, "leaderboard") == []
    added = {**CONFIG, "benchmark": {**CONFIG["benchmark"], "target": {"fine": 0.5}}}
    assert differing_keys(CONFIG, added, "baseline") == ["benchmark.target.fine"]
    none = {**CONFIG, "extra": None}  # a key set to null differs from a key that is absent
    assert differing_keys(CONFIG, none, "resume") == ["extra"]


@dataclass
class _Mirror:
    url: str = field(default="https://x", metadata={"mtbench": "location"})
    retries: int = 3


@dataclass
class _DatasetConfig:
    root: str = field(default="/data", metadata={"mtbench": "location"})
    download: bool = field(default=True, metadata={"mtbench": "location"})
    val_size: int = 100
    mirror: _Mirror = field(default_factory=_Mirror)


def test_location_fields_come_from_dataclass_metadata():
    assert location_fields(_DatasetConfig) == {"root", "download", "mirror.url"}
    assert location_fields(_Mirror) == {"url"}
    assert location_keys({"dataset": _DatasetConfig, "backbone": _Mirror}) == {
        "dataset.root", "dataset.download", "dataset.mirror.url", "backbone.url",
    }  # fmt: skip
    with pytest.raises(TypeError, match="takes a dataclass type"):
        location_fields(_DatasetConfig())  # type: ignore[arg-type]
