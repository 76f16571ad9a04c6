"""What a dataset returns is checked against its tasks' kinds before any run trains.

Each case is one a researcher met when writing a separate package (or one the contract names):
the benchmark must refuse it with a message naming the dataset, the task and what is expected,
and leave nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from mtbench import records
from mtbench.data import DatasetError, DatasetSplits, Split, validate
from mtbench.tasks import Metric, TaskError, TaskKind, TaskSpec, task_kind

RNG = np.random.default_rng(0)


def _splits(tasks, labels, x=None, masks=None) -> DatasetSplits:
    n = len(next(iter(labels.values())))
    x = RNG.random((n, 4)).astype(np.float32) if x is None else x
    cut = [slice(0, n // 2), slice(n // 2, 3 * n // 4), slice(3 * n // 4, n)]
    masks = masks or {}
    splits = [
        Split(x[c], {t: y[c] for t, y in labels.items()}, {t: m[c] for t, m in masks.items()})
        for c in cut
    ]
    return DatasetSplits(*splits, tasks=tuple(tasks))


def test_a_real_valued_target_declared_as_classes_is_refused():
    targets = RNG.uniform(4.8, 8.8, 40)
    data = _splits([TaskSpec("age", 1)], {"age": targets})
    with pytest.raises(DatasetError, match="dataset 'toy', task 'age'.*num_classes >= 2"):
        validate(data, "toy")
    data = _splits([TaskSpec("age", 10)], {"age": targets})
    with pytest.raises(DatasetError, match="expects integers.*'regression' task"):
        validate(data, "toy")


def test_labels_whose_shape_contradicts_the_kind_are_refused():
    labels = RNG.integers(0, 2, (40, 3))
    data = _splits([TaskSpec("attrs", 2)], {"attrs": labels})
    with pytest.raises(DatasetError, match=r"task 'attrs'.*shape \(3,\).*label_shape=\(\)"):
        validate(data, "toy")
    data = _splits([TaskSpec("attrs", kind="multilabel", label_shape=(3,))], {"attrs": labels * 2})
    with pytest.raises(DatasetError, match="each must be 0 or 1"):
        validate(data, "toy")


def test_class_labels_out_of_range_are_refused():
    data = _splits([TaskSpec("digit", 3)], {"digit": RNG.integers(0, 5, 40)})
    with pytest.raises(DatasetError, match=r"task 'digit'.*3 classes"):
        validate(data, "toy")


def test_an_unknown_kind_or_option_is_refused_naming_the_choices():
    data = _splits([TaskSpec("y", kind="ordinal_regression")], {"y": RNG.integers(0, 3, 40)})
    with pytest.raises(DatasetError, match="kind 'ordinal_regression'.*classification"):
        validate(data, "toy")
    spec = TaskSpec("y", kind="regression", options={"los": "l1"})
    with pytest.raises(TaskError, match=r"unknown options \['los'\].*huber_delta"):
        task_kind(spec)


def test_infinite_targets_and_inconsistent_masks_are_refused():
    targets = RNG.normal(size=40)
    targets[3] = np.inf
    data = _splits([TaskSpec("e", kind="regression")], {"e": targets})
    with pytest.raises(DatasetError, match="infinite values; mark a missing target with NaN"):
        validate(data, "toy")
    targets[3] = np.nan  # NaN where the dataset's own mask says "labelled"
    data = _splits(
        [TaskSpec("e", kind="regression")], {"e": targets}, masks={"e": np.ones(40, bool)}
    )
    with pytest.raises(DatasetError, match="the mask marks as labelled hold the missing sentinel"):
        validate(data, "toy")


def test_a_task_without_a_labelled_validation_example_is_refused():
    labels = RNG.integers(0, 3, 40)
    labels[20:30] = -1  # the whole validation split
    data = _splits([TaskSpec("y", 3)], {"y": labels})
    with pytest.raises(DatasetError, match="no example of the val split is labelled"):
        validate(data, "toy")


def test_a_task_name_that_cannot_name_layers_is_refused():
    data = _splits(
        [TaskSpec("tower light level", 3)], {"tower light level": RNG.integers(0, 3, 40)}
    )
    with pytest.raises(DatasetError, match="task name 'tower light level' is not allowed"):
        validate(data, "toy")


def test_inputs_that_differ_between_splits_are_refused():
    labels = {"y": RNG.integers(0, 3, 40)}
    data = _splits([TaskSpec("y", 3)], labels)
    data.test.x = data.test.x[:, :3]
    with pytest.raises(DatasetError, match="differ in shape or dtype"):
        validate(data, "toy")


def test_masks_become_the_kinds_sentinels():
    labels = {"y": RNG.integers(0, 3, 40), "e": RNG.normal(size=40)}
    mask = np.arange(40) % 3 != 0
    data = _splits(
        [TaskSpec("y", 3), TaskSpec("e", kind="regression")], labels, masks={"y": mask, "e": mask}
    )
    kinds = validate(data, "toy")
    assert (data.train.y["y"][~mask[:20]] == -1).all()
    assert np.isnan(data.train.y["e"][~mask[:20]]).all()
    assert kinds["y"].labelled(data.train.y["y"]).sum() == mask[:20].sum()


@dataclass
class _NoOptions:
    pass


class _Undirected(TaskKind):
    default_primary = "score"

    @property
    def output_shape(self):
        return (1,)

    @property
    def metrics(self):
        return (Metric("score", "points", None),)  # type: ignore[arg-type]


def test_a_third_party_kind_without_metric_directions_is_refused():
    from mtbench import registry

    with registry.isolated():
        registry.register("task", "undirected", config=_NoOptions)(_Undirected)
        with pytest.raises(TaskError, match="higher_is_better True or False"):
            task_kind(TaskSpec("s", kind="undirected"))


def test_delta_m_with_one_undefined_entry_keeps_the_others():
    tasks = {
        "a": records.task_record(
            task_kind(TaskSpec("a", 3)), {"train": 1, "val": 1, "test": 1}, {}
        ),
        "e": records.task_record(
            task_kind(TaskSpec("e", kind="regression")), {"train": 1, "val": 1, "test": 1}, {}
        ),
    }
    joint = {"a": _m(0.6), "e": _r(0.1)}
    runs = [
        {"name": "single:a", "status": "complete", "tasks": ["a"], "test": {"a": _m(0.5)}},
        {"name": "single:e", "status": "complete", "tasks": ["e"], "test": {"e": _r(0.0)}},
        {"name": "joint", "status": "complete", "tasks": ["a", "e"], "test": joint},
    ]
    comparison = records.compare(runs, tasks)
    assert comparison["delta_m_percent"] is None and "0" in comparison["delta_m_undefined"]
    assert comparison["tasks"]["a"]["delta_percent"] == pytest.approx(20.0)


def _m(accuracy: float) -> dict:
    return {"accuracy": accuracy, "top5_accuracy": None, "macro_f1": accuracy}


def _r(mae: float) -> dict:
    return {"mae": mae, "rmse": mae}
