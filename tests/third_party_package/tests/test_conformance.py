"""mtbench-ordinal's plugins against mtbench's conformance suites, and what each plugin adds.

Every plugin is reached the way mtbench reaches it, through the registry (the package's entry
points), so these tests need the package installed (see ../conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from mtbench import registry
from mtbench.tasks import TaskError, TaskSpec, task_kind
from mtbench.testing import (
    ArraySpec,
    BackboneSuite,
    DatasetSuite,
    Deterministic,
    FiniteOnMissingTask,
    HeadSuite,
    MeanWhenAgreeing,
    NonNegativeWeights,
    Serialises,
    TaskKindSuite,
    WeightingSuite,
)

GRADE = TaskSpec("grade", 5, kind="ordinal")


def _cumulative_logits(labels: np.ndarray, thresholds: int, margin: float = 10.0) -> np.ndarray:
    """Logits of ``P(y > k)`` that are ``+margin`` where ``y > k`` and ``-margin`` elsewhere."""
    return margin * np.where(labels[:, None] > np.arange(thresholds), 1.0, -1.0)


# ------------------------------------------------------------------------------------ task kind
class TestOrdinal(TaskKindSuite):
    spec = GRADE

    def make_labels(self, rng, n):
        return rng.integers(0, 5, n)

    def perfect_outputs(self, kind, labels):
        return _cumulative_logits(labels, 4)


class TestOrdinalWeightedThresholds(TestOrdinal):
    spec = TaskSpec("grade", 5, kind="ordinal", options={"threshold_weights": [1, 2, 2, 0.5]})


def test_loss_is_the_weighted_sum_of_the_thresholds_cross_entropies():
    import tensorflow as tf

    weights = np.array([1.0, 2.0, 2.0, 0.5])
    kind = task_kind(TaskSpec("grade", 5, kind="ordinal", options={"threshold_weights": weights}))
    labels = np.array([0, 2, 4, 3])
    logits = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
    loss = kind.loss(tf.constant(labels), tf.constant(logits), tf.constant(labels >= 0)).numpy()
    above = labels[:, None] > np.arange(4)
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    cross_entropy = -np.where(above, np.log(p), np.log(1.0 - p))
    np.testing.assert_allclose(loss, cross_entropy @ weights, rtol=1e-5)


def test_prediction_counts_the_thresholds_above_one_half_and_metrics_are_in_classes():
    kind = task_kind(GRADE)
    outputs = np.array([[2.0, 1.0, -1.0, -3.0], [-1.0, 2.0, 0.5, -1.0], [-5.0, -4.0, -3.0, -2.0]])
    np.testing.assert_array_equal(kind.predictions(outputs), [2, 2, 0])
    metrics = kind.evaluate(outputs, np.array([4, 2, -1]))  # the last label is missing
    assert metrics == {"mae": 1.0, "accuracy": 0.5}  # |2 - 4| and |2 - 2| over two labels
    assert not kind.metric("mae").higher_is_better and kind.metric("accuracy").higher_is_better
    assert kind.primary.name == "mae" and kind.metric("mae").unit == "classes"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (TaskSpec("grade", 1, kind="ordinal"), "num_classes >= 2"),
        (TaskSpec("grade", 5, kind="ordinal", label_shape=(2,)), r"label_shape \(\)"),
        (TaskSpec("grade", 5, kind="ordinal", options={"threshold_weights": [1, 1]}), "4 thresh"),
        (TaskSpec("grade", 3, kind="ordinal", options={"threshold_weights": [0, 0]}), "all zero"),
        (TaskSpec("grade", 5, kind="ordinal", options={"margin": 1}), r"unknown options \['ma"),
    ],
    ids=["one_class", "array_label", "weight_count", "zero_weights", "unknown_option"],
)
def test_declarations_that_cannot_work_are_refused(spec, message):
    with pytest.raises(TaskError, match=message):
        task_kind(spec)


def test_out_of_range_grades_are_refused():
    with pytest.raises(TaskError, match=r"range over \[0, 5\].*5 ordered classes"):
        task_kind(GRADE).check_labels(np.array([0, 5, -1]), "train")


# -------------------------------------------------------------------------------------- dataset
class TestOrdinalToy(DatasetSuite):
    config = {"name": "ordinal_toy", "train_size": 96, "val_size": 32, "test_size": 32}


def test_ordinal_toy_has_every_grade_and_missing_labels_of_both_tasks():
    data = registry.build("dataset", {"name": "ordinal_toy", "missing": 0.25}).load()
    assert data.train.x.shape == (256, 12) and data.train.x.dtype == np.float32
    assert [(t.name, t.kind) for t in data.tasks] == [("grade", "ordinal"), ("score", "regression")]
    grade, score = data.train.y["grade"], data.train.y["score"]
    assert set(np.unique(grade)) == {-1, 0, 1, 2, 3, 4}
    assert 0.15 < np.mean(grade == -1) < 0.35 and 0.15 < np.mean(np.isnan(score)) < 0.35
    counts = np.bincount(grade[grade >= 0], minlength=5)
    assert counts.min() > 0.5 * counts.mean(), f"grades far from balanced: {counts}"


@pytest.mark.parametrize(
    ("option", "message"),
    [({"val_size": 0}, "dataset.val_size=0"), ({"missing": 1.0}, "dataset.missing=1.0")],
)
def test_ordinal_toy_refuses_options_out_of_range(option, message):
    with pytest.raises(ValueError, match=message):
        registry.build("dataset", {"name": "ordinal_toy", **option})


# ------------------------------------------------------------------------------ backbone, head
class TestTinyMLP(BackboneSuite):
    config = {"name": "tiny_mlp", "width": 8}
    inputs = ArraySpec((12,), low=-1.0)  # ordinal_toy's feature vectors


class TestLinearHeads(HeadSuite):
    config = {"name": "linear"}
    tasks = (
        GRADE,
        TaskSpec("score", kind="regression"),
        TaskSpec("mask", 3, kind="segmentation", label_shape=(2, 2)),  # outputs reshaped
    )


class TestLinearHeadsWithoutBias(TestLinearHeads):
    config = {"name": "linear", "use_bias": False}


# ------------------------------------------------------------------------------------ weighting
class TestHalfHalf(
    WeightingSuite, FiniteOnMissingTask, NonNegativeWeights, MeanWhenAgreeing, Serialises,
    Deterministic,
):  # fmt: skip
    config = {"name": "half_half", "first_share": 0.7}  # not permutation-invariant: task 0 leads


def test_half_half_gives_the_first_task_its_share_and_splits_the_rest():
    weighting = registry.build("weighting", {"name": "half_half", "first_share": 0.7})
    weighting.setup(["grade", "score", "extra"])
    np.testing.assert_allclose(weighting.loss_weights(np.ones(3)).numpy(), [0.7, 0.15, 0.15])


def test_half_half_refuses_what_cannot_work():
    with pytest.raises(ValueError, match=r"weighting.first_share=1.0 .* in \(0, 1\)"):
        registry.build("weighting", {"name": "half_half", "first_share": 1.0})
    with pytest.raises(ValueError, match="at least two tasks"):
        registry.build("weighting", {"name": "half_half"}).setup(["grade"])
