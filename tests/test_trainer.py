"""The trainer: both weighting paths update correctly, training learns, selection is honest,
missing labels are masked out of the loss, and metrics come from the task kinds."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import image_model, kinds
from helpers import reference_model as _model

from mtbench import registry
from mtbench.config import Optimizer, TrainerConfig
from mtbench.data import Split
from mtbench.tasks import MISSING_CLASS, TaskSpec, task_kind, task_kinds
from mtbench.trainer import Trainer
from mtbench.weighting import EqualWeights, GradientWeighting


def _split(arrays, part: str, n: int | None = None) -> Split:
    x = arrays[f"x_{part}"][:n]
    return Split(
        x, {"fine": arrays[f"y_{part}_fine"][:n], "coarse": arrays[f"y_{part}_coarse"][:n]}
    )


class SumOfGradients(GradientWeighting):
    """Sum of the task gradients: must reproduce the equal-weight loss path exactly."""

    def aggregate(self, grads, losses):
        return tf.reduce_sum(grads, axis=0), tf.ones_like(losses)


class UnitFeatureWeights(SumOfGradients):
    gradient_of = "features"


class SumOnOddSteps(SumOfGradients):
    """Per-task gradients on steps 1, 3, ...; fixed unit weights on the others."""

    skips_gradients = True

    def build_state(self, num_tasks):
        self.step = self.add_weight(shape=(), initializer="zeros", trainable=False)
        self.aggregations = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def gradients_needed(self):
        self.step.assign_add(1.0)
        return tf.equal(tf.math.floormod(self.step, 2.0), 1.0)

    def current_weights(self):
        return tf.ones([self.num_tasks])

    def aggregate(self, grads, losses):
        self.aggregations.assign_add(1.0)
        return super().aggregate(grads, losses)


class RecordsImprovement(EqualWeights):
    needs_losses_after_update = True

    def build_state(self, num_tasks):
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False)
        self.improvement = self.add_weight(shape=(num_tasks,), initializer="zeros", trainable=False)

    def after_update(self, losses_before, losses_after):
        self.calls.assign_add(1.0)
        self.improvement.assign_add(losses_before - losses_after)


def _one_epoch(weighting, arrays, precision="float32") -> list[np.ndarray]:
    model = _model(precision)
    config = TrainerConfig(
        optimizer=Optimizer.sgd, learning_rate=0.05, batch_size=32, epochs=1, progress=False
    )
    trainer = Trainer(
        config, model, weighting, kinds("fine", "coarse"), precision=precision, seed=0
    )
    trainer.fit(_split(arrays, "train", 96), _split(arrays, "test", 64))
    return model.get_weights()


@pytest.mark.parametrize("weighting", [SumOfGradients, UnitFeatureWeights, SumOnOddSteps])
def test_gradient_level_paths_reproduce_the_loss_level_update(weighting, synthetic_arrays):
    expected = _one_epoch(EqualWeights(), synthetic_arrays)
    actual = _one_epoch(weighting(), synthetic_arrays)
    initial = _model().get_weights()
    for e, a, i in zip(expected, actual, initial, strict=True):
        assert not np.allclose(e, i)  # training moved every variable
        np.testing.assert_allclose(a, e, rtol=2e-4, atol=2e-6)


def test_skipping_methods_aggregate_only_when_they_ask(synthetic_arrays):
    weighting = SumOnOddSteps()
    _one_epoch(weighting, synthetic_arrays)  # 96 images, batch 32: three steps
    assert float(weighting.step.numpy()) == 3 and float(weighting.aggregations.numpy()) == 2


def test_losses_after_update_are_given_to_methods_that_ask(synthetic_arrays):
    weighting = RecordsImprovement()
    _one_epoch(weighting, synthetic_arrays)
    assert float(weighting.calls.numpy()) == 3
    assert (weighting.improvement.numpy() > 0).all()  # the step lowered the batch's losses


def test_gradient_path_with_mixed_precision_trains(synthetic_arrays):
    weights = _one_epoch(SumOfGradients(), synthetic_arrays, precision="mixed_bfloat16")
    assert all(np.isfinite(w).all() for w in weights)


def test_fit_learns_and_keeps_the_best_validation_epoch(synthetic_arrays):
    model = _model()
    config = TrainerConfig(batch_size=64, epochs=4, progress=False)
    trainer = Trainer(
        config, model, EqualWeights(), kinds("fine", "coarse"), precision="float32", seed=0
    )
    train, val = _split(synthetic_arrays, "train"), _split(synthetic_arrays, "test")
    result = trainer.fit(train, val)
    assert len(result.history) == 4 and len(result.epoch_seconds) == 4
    scores = [np.mean([r.val[t]["accuracy"] for t in ("fine", "coarse")]) for r in result.history]
    assert result.best_epoch == int(np.argmax(scores)) + 1
    assert result.best_score == pytest.approx(max(scores))
    assert result.best_val == result.history[result.best_epoch - 1].val
    assert trainer.evaluate(val)[0] == result.best_val  # the model holds the best epoch's weights
    assert result.best_val["coarse"]["accuracy"] > 3 / 20  # well above chance (1/20)
    assert result.history[-1].train_loss["fine"] < result.history[0].train_loss["fine"]
    assert result.images_seen == 4 * len(train) and result.images_per_second > 0
    assert result.trace_seconds > 0 and result.eval_seconds > 0


def test_same_seed_gives_the_same_numbers(synthetic_arrays):
    def run():
        model = _model()
        config = TrainerConfig(batch_size=64, epochs=2, progress=False)
        trainer = Trainer(
            config, model, EqualWeights(), kinds("fine", "coarse"), precision="float32", seed=5
        )
        return trainer.fit(_split(synthetic_arrays, "train"), _split(synthetic_arrays, "test"))

    a, b = run(), run()
    assert [r.train_loss for r in a.history] == [r.train_loss for r in b.history]
    assert a.best_val == b.best_val


def test_batch_larger_than_data_is_a_clear_error(synthetic_arrays):
    config = TrainerConfig(batch_size=4096, epochs=1, progress=False)
    trainer = Trainer(config, _model(), EqualWeights(), kinds("fine"), precision="float32", seed=0)
    with pytest.raises(
        ValueError, match="trainer.batch_size=4096 is larger than the training split"
    ):
        trainer.fit(_split(synthetic_arrays, "train"), _split(synthetic_arrays, "test"))


def test_the_trainer_takes_task_kinds_not_names():
    with pytest.raises(TypeError, match="takes the tasks' kinds"):
        Trainer(TrainerConfig(), _model(), EqualWeights(), ["fine"], precision="float32", seed=0)
    by_name = {k.name: k for k in kinds("coarse", "fine")}
    trainer = Trainer(TrainerConfig(), _model(), EqualWeights(), by_name, precision="float32",
                      seed=0)  # fmt: skip
    assert trainer.tasks == ("coarse", "fine") and trainer.kinds == by_name


# ---------------------------------------------------------------------------------- metrics
def test_topk_and_metrics():
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]])
    labels = np.array([1, 2, 0])
    # row 0: top-2 {1, 0} holds 1; row 1: top-2 {0, 1} misses 2; row 2: top-2 {2, 1} misses 0
    top2 = task_kind(TaskSpec("x", 3, options={"top_k": 2})).evaluate(logits, labels)
    assert top2["accuracy"] == pytest.approx(1 / 3)
    assert top2["top2_accuracy"] == pytest.approx(1 / 3)
    # predictions 1, 0, 2: class 1 right (F1 1), classes 0 and 2 wrong (F1 0)
    assert top2["macro_f1"] == pytest.approx(1 / 3)
    # k >= classes: no top-k accuracy, which would be 1 whatever the model
    metrics = task_kind(TaskSpec("x", 3)).evaluate(logits, labels)
    assert metrics == {"accuracy": pytest.approx(1 / 3), "macro_f1": pytest.approx(1 / 3)}
    assert [m.name for m in task_kind(TaskSpec("x", 3)).metrics] == ["accuracy", "macro_f1"]


def test_a_five_class_task_reports_no_top5_and_macro_f1_is_the_mean_over_classes():
    kind = task_kind(TaskSpec("x", 5))
    labels = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 0, 2])
    logits = np.eye(5)[predicted]
    metrics = kind.evaluate(logits, labels)
    assert set(metrics) == {"accuracy", "macro_f1"} and "top5_accuracy" not in metrics
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    # class 0: tp 1, 2 predicted, 2 true: 2*1/(2+2) = 1/2; class 1: 2*2/(3+2) = 4/5;
    # class 2: 2*1/(1+2) = 2/3; classes 3 and 4 (never true nor predicted) are left out
    assert metrics["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    # six classes: top-5 is reported
    assert "top5_accuracy" in task_kind(TaskSpec("x", 6)).evaluate(np.eye(6)[predicted], labels)
    # missing labels count for nothing
    with_missing = kind.evaluate(
        np.concatenate([logits, np.eye(5)[[3, 4]]]),
        np.concatenate([labels, [MISSING_CLASS, MISSING_CLASS]]),
    )
    assert with_missing == metrics


def test_evaluate_reports_each_kinds_metrics_and_predictions(synthetic_arrays):
    trainer = Trainer(TrainerConfig(), _model(), EqualWeights(), kinds("fine", "coarse"),
                      precision="float32", seed=0)  # fmt: skip
    split = _split(synthetic_arrays, "test", 50)
    split.y["coarse"] = np.where(np.arange(50) < 10, MISSING_CLASS, split.y["coarse"])
    metrics, predictions = trainer.evaluate(split)
    outputs = trainer.predict(split)
    for task in ("fine", "coarse"):
        assert set(metrics[task]) == {"accuracy", "top5_accuracy", "macro_f1"}
        np.testing.assert_array_equal(predictions[task], np.argmax(outputs[task], axis=1))
    right = predictions["coarse"][10:] == split.y["coarse"][10:]
    assert metrics["coarse"]["accuracy"] == pytest.approx(np.mean(right))  # labelled ones only


# ------------------------------------------------------------------------- missing labels
TINY = (TaskSpec("a", 10), TaskSpec("b", 5), TaskSpec("c", 3))


def _weighting(method: str):
    """A factory of fresh instances of the weighting ``method``."""
    return lambda: registry.build("weighting", {"name": method})


def _tiny_trainer(weighting, tasks=TINY) -> Trainer:
    model = image_model("seed_cnn", "dense", list(tasks), shape=(8, 8, 3))
    config = TrainerConfig(batch_size=8, epochs=1, progress=False, checkpoint_every=0)
    return Trainer(config, model, weighting, task_kinds(tasks), precision="float32", seed=0)


def _batch(trainer: Trainer, y: dict[str, np.ndarray]):
    x = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
    labels = {
        t: (tf.constant(k.encode(y[t])), tf.constant(k.element_labelled(y[t])))
        for t, k in trainer.kinds.items()
        if t in y
    }
    return tf.constant(x), labels


def _step(trainer: Trainer, images, labels):
    """One step's losses and {variable path: gradient} (nothing applied)."""
    if trainer.weighting.level == "loss":
        step = trainer.step.loss_level(images, labels)
        variables = trainer.model.trainable_variables + trainer.weighting.trainable_variables
    else:
        step = trainer.step.combined_gradients(images, labels)
        variables = trainer.model.shared_variables + trainer.model.task_variables
    assert bool(step.finite) and not step.bad_task_grads.numpy().any()
    grads = {v.path: g.numpy() for v, g in zip(variables, step.grads, strict=True)}
    return step.losses.numpy(), grads


def _task_paths(trainer: Trainer, task: str) -> set[str]:
    return {v.path for v in trainer.model.heads.classifiers[task].trainable_variables}


@pytest.mark.parametrize("method", ["ew", "pcgrad"])
def test_a_task_without_labelled_examples_in_the_batch_gets_zero_loss_and_gradient(method):
    build = _weighting(method)
    trainer = _tiny_trainer(build())
    rng = np.random.default_rng(1)
    y = {
        "a": rng.integers(0, 10, 8),
        "b": np.full(8, MISSING_CLASS),  # no example of this batch is labelled for b
        "c": np.where(np.arange(8) % 2 == 0, rng.integers(0, 3, 8), MISSING_CLASS),
    }
    images, labels = _batch(trainer, y)
    losses, grads = _step(trainer, images, labels)
    assert losses[1] == 0.0 and losses[0] > 0 and losses[2] > 0
    assert all(np.isfinite(g).all() for g in grads.values())
    for path in _task_paths(trainer, "b"):
        assert not grads[path].any(), path  # b's head: exactly zero

    # b's own loss has a zero gradient everywhere, not NaN
    with tf.GradientTape() as tape:
        shares = trainer.step.task_losses(labels, trainer.model(images, training=True))
    b_grads = tape.gradient(shares[1], trainer.model.trainable_variables)
    assert float(shares[1]) == 0.0
    assert all(g is None or not g.numpy().any() for g in b_grads)

    # and the update is that of a model of the labelled tasks only (same initial weights)
    without_b = _tiny_trainer(build(), tasks=(TINY[0], TINY[2]))
    other_losses, other_grads = _step(without_b, *_batch(without_b, y))
    np.testing.assert_allclose(other_losses, losses[[0, 2]], rtol=1e-6)
    shared = [v.path for v in trainer.model.shared_variables]
    for ours, theirs in zip(shared, [v.path for v in without_b.model.shared_variables],
                            strict=True):  # fmt: skip
        scale = np.max(np.abs(other_grads[theirs])) + 1e-30
        np.testing.assert_allclose(grads[ours], other_grads[theirs], rtol=1e-4, atol=1e-5 * scale)


def test_a_task_loss_is_the_mean_over_its_labelled_examples_only():
    regression = TaskSpec("r", kind="regression", label_shape=(2,), options={"standardize": False})
    tasks = (TaskSpec("a", 3), regression, TaskSpec("b", 5))
    trainer = Trainer(
        TrainerConfig(), _model(), EqualWeights(), task_kinds(tasks), precision="float32", seed=0
    )
    a_logits = np.array(
        [[2.0, 0.0, -1.0], [9.0, 9.0, 9.0], [0.0, 1.0, 3.0], [0.5, 1.5, 0.0], [5.0, -5.0, 0.0]]
    )
    a = np.array([0, MISSING_CLASS, 2, 1, MISSING_CLASS])
    r = np.array([[1.0, np.nan], [np.nan, np.nan], [0.0, 2.0], [np.nan, np.nan], [np.nan, np.nan]])
    r_outputs = np.array([[0.5, 9.0], [7.0, 7.0], [1.0, 1.0], [3.0, 3.0], [3.0, 3.0]])
    y = {"a": a, "r": r, "b": np.full(5, MISSING_CLASS)}
    labels = {
        t: (tf.constant(k.encode(y[t])), tf.constant(k.element_labelled(y[t])))
        for t, k in trainer.kinds.items()
    }
    outputs = {
        "a": tf.constant(a_logits, tf.float32),
        "r": tf.constant(r_outputs, tf.float32),
        "b": tf.constant(np.full((5, 5), 4.0), tf.float32),
    }
    shares = [float(s) for s in trainer.step.task_losses(labels, outputs)]

    def cross_entropy(logits: np.ndarray, label: int) -> float:
        return float(np.log(np.sum(np.exp(logits))) - logits[label])

    # a: examples 0, 2 and 3 are labelled; the mean is over those three, not over five
    expected_a = np.mean([cross_entropy(a_logits[i], a[i]) for i in (0, 2, 3)])
    # r: example 0 has one target (error 0.5), example 2 two (errors 1 and 1); per example the
    # mean squared error over its present targets, then the mean over the two examples
    expected_r = (0.5**2 + (1.0**2 + 1.0**2) / 2) / 2
    assert shares == pytest.approx([expected_a, expected_r, 0.0], rel=1e-6)


@pytest.mark.parametrize("method", ["ew", "pcgrad"])
def test_fit_trains_when_some_batches_lack_a_tasks_labels(method):
    build = _weighting(method)
    trainer = _tiny_trainer(build())
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    y = {t.name: rng.integers(0, t.num_classes, 64) for t in TINY}
    y["b"][8:] = MISSING_CLASS  # b: 8 labelled examples of 64, most batches have none
    initial = [v.numpy().copy() for v in trainer.model.trainable_variables]
    result = trainer.fit(Split(x, y), Split(x[:24], {t: v[:24] for t, v in y.items()}))
    record = result.history[0]
    assert record.steps == 8 and record.skipped_steps == 0
    assert all(np.isfinite(v) for v in record.train_loss.values())
    assert all(np.isfinite(v.numpy()).all() for v in trainer.model.trainable_variables)
    assert any(
        not np.array_equal(a, v.numpy())
        for a, v in zip(initial, trainer.model.trainable_variables, strict=True)
    )
    # b is validated on its 8 labelled validation examples only
    predictions = trainer.evaluate(Split(x[:24], {t: v[:24] for t, v in y.items()}))[1]
    assert result.best_val["b"]["accuracy"] == pytest.approx(
        np.mean(predictions["b"][:8] == y["b"][:8])
    )
