"""The comparison math and the report: delta_m, hierarchy consistency, tables."""

from __future__ import annotations

import numpy as np
import pytest

from mtbench.results import (
    DELTA_M_FORMULA,
    compare,
    delta_m,
    delta_percent,
    hierarchy_consistency,
)


def test_delta_m_is_the_mean_relative_change_in_percent():
    single = {"fine": 0.30, "coarse": 0.40}
    joint = {"fine": 0.33, "coarse": 0.38}
    # fine +10 %, coarse -5 % -> mean +2.5 %
    assert delta_percent(0.30, 0.33) == pytest.approx(10.0)
    assert delta_m(single, joint) == pytest.approx(2.5)
    assert delta_m(single, single) == 0.0
    assert "100/T" in DELTA_M_FORMULA


def test_delta_m_refuses_mismatched_tasks_and_zero_baselines():
    with pytest.raises(ValueError, match="tasks differ"):
        delta_m({"a": 0.5}, {"b": 0.5})
    with pytest.raises(ValueError, match="undefined"):
        delta_percent(0.0, 0.1)


def _run(name, tasks, accuracies):
    return {
        "name": name,
        "tasks": tasks,
        "test": {
            t: {"accuracy": a, "top5_accuracy": min(1.0, 2 * a)} for t, a in accuracies.items()
        },
    }


def test_compare_uses_single_and_joint_test_accuracy():
    runs = [
        _run("single:fine", ["fine"], {"fine": 0.2}),
        _run("single:coarse", ["coarse"], {"coarse": 0.5}),
        _run("joint", ["fine", "coarse"], {"fine": 0.25, "coarse": 0.45}),
    ]
    comparison = compare(runs, ["fine", "coarse"])
    assert comparison["tasks"]["fine"] == {
        "single": 0.2,
        "joint": 0.25,
        "delta_percent": pytest.approx(25.0),
    }
    assert comparison["delta_m_percent"] == pytest.approx((25.0 - 10.0) / 2)
    assert compare(runs[:2], ["fine", "coarse"]) is None  # no joint run yet


def test_compare_reports_undefined_gain_as_null():
    runs = [
        _run("single:a", ["a"], {"a": 0.0}),
        _run("single:b", ["b"], {"b": 0.5}),
        _run("joint", ["a", "b"], {"a": 0.1, "b": 0.5}),
    ]
    comparison = compare(runs, ["a", "b"])
    assert (
        comparison["delta_m_percent"] is None and comparison["tasks"]["a"]["delta_percent"] is None
    )


def test_hierarchy_consistency_counts_parent_agreement():
    parent_of = np.array([1, 0, 1])
    child = np.array([0, 1, 2, 2])
    parent = np.array([1, 0, 0, 1])  # third image: child 2 belongs to parent 1, not 0
    assert hierarchy_consistency(child, parent, parent_of) == pytest.approx(0.75)
