"""Training-recipe options: schedules, optimizers, label smoothing, steps per call, budgets."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import kinds, reference_model

from mtbench.config import Optimizer, Schedule, TrainerConfig
from mtbench.data import Split
from mtbench.inputs import ImageInputs, ImagePreprocessing, Inputs, channel_statistics
from mtbench.optim import OneCycle, learning_rate, make_optimizer
from mtbench.tasks import TaskSpec, task_kind, task_kinds
from mtbench.trainer import Budget, Trainer
from mtbench.weighting import EqualWeights


def _split(arrays, part: str, n: int | None = None) -> Split:
    return Split(
        arrays[f"x_{part}"][:n],
        {"fine": arrays[f"y_{part}_fine"][:n], "coarse": arrays[f"y_{part}_coarse"][:n]},
    )


def _fit(arrays, budget: Budget | None = None, **options):
    config = TrainerConfig(**{"batch_size": 64, "epochs": 2, "progress": False, **options})
    trainer = Trainer(
        config, reference_model(), EqualWeights(), kinds("fine", "coarse"),
        precision="float32", seed=0, budget=budget,
    )  # fmt: skip
    result = trainer.fit(_split(arrays, "train", 320), _split(arrays, "test", 100))
    return trainer, result


def test_cosine_schedule_warms_up_to_the_peak_then_decays_to_zero():
    schedule = learning_rate("cosine", 0.1, steps_per_epoch=10, epochs=10, warmup_epochs=2)
    values = [float(schedule(step)) for step in (0, 10, 20, 60, 100)]
    assert values[0] == pytest.approx(0.0) and values[1] == pytest.approx(0.05)
    assert values[2] == pytest.approx(0.1) and 0 < values[3] < 0.1
    assert values[4] == pytest.approx(0.0, abs=1e-7)
    assert learning_rate("constant", 0.1, 10, 10, 0) == 0.1


def test_onecycle_is_triangular():
    schedule = OneCycle(peak=1.0, total_steps=100, warmup_steps=25, div=10, final_div=100)
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(25)) == pytest.approx(1.0)
    assert float(schedule(100)) == pytest.approx(0.01)
    assert float(schedule(50)) == pytest.approx(1.0 - 0.99 / 3, rel=1e-5)
    with pytest.raises(ValueError, match="trainer.schedule"):
        learning_rate("step", 0.1, 1, 1, 0)


def test_weight_decay_skips_biases_and_normalization():
    optimizer = make_optimizer(
        "sgd", 0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, precision="float32"
    )
    model = reference_model()
    decayed = {v.path for v in model.trainable_variables if optimizer._use_weight_decay(v)}
    assert decayed and not any("bias" in path for path in decayed)
    assert all("kernel" in path for path in decayed)
    assert optimizer.nesterov and optimizer.momentum == 0.9


def test_label_smoothing_is_the_smoothed_cross_entropy():
    """``trainer.label_smoothing`` reaches a classification task as its kind's default (a task
    that sets its own keeps it); the loss is the cross-entropy with the smoothed target."""
    logits = tf.constant([[2.0, 0.0, -1.0], [0.5, 1.5, -0.5]])
    labels, present = tf.constant([0, 2], tf.int64), tf.constant([True, True])
    p = tf.nn.log_softmax(logits).numpy()
    expected = [
        -(0.9 + 0.1 / 3) * p[0, 0] - (0.1 / 3) * (p[0, 1] + p[0, 2]),
        -(0.9 + 0.1 / 3) * p[1, 2] - (0.1 / 3) * (p[1, 0] + p[1, 1]),
    ]
    smoothed = task_kind(TaskSpec("fine", 3), {"label_smoothing": 0.1})
    np.testing.assert_allclose(smoothed.loss(labels, logits, present).numpy(), expected, rtol=1e-6)
    own = task_kind(TaskSpec("fine", 3, options={"label_smoothing": 0.0}), {"label_smoothing": 0.1})
    np.testing.assert_allclose(
        own.loss(labels, logits, present).numpy(), [-p[0, 0], -p[1, 2]], rtol=1e-6
    )
    # the trainer's loss of the task is the mean of the smoothed per-example losses (the outputs
    # are given: the model is not called)
    trainer = Trainer(
        TrainerConfig(), reference_model(), EqualWeights(),
        task_kinds([TaskSpec("fine", 3)], {"label_smoothing": 0.1}), precision="float32", seed=0,
    )  # fmt: skip
    (share,) = trainer.step.task_losses({"fine": (labels, present)}, {"fine": logits})
    assert float(share) == pytest.approx(np.mean(expected), rel=1e-6)


def test_several_steps_per_call_train_exactly_like_one(synthetic_arrays):
    one = _fit(synthetic_arrays, steps_per_call=1)[1]
    three = _fit(synthetic_arrays, steps_per_call=3)[1]  # 5 steps per epoch: calls of 3 and 2
    assert [r.train_loss for r in one.history] == [r.train_loss for r in three.history]
    assert [r.steps for r in three.history] == [5, 5]


@pytest.mark.parametrize("optimizer", list(Optimizer))
@pytest.mark.parametrize("schedule", list(Schedule))
def test_every_optimizer_and_schedule_trains(synthetic_arrays, optimizer, schedule):
    _, result = _fit(
        synthetic_arrays, optimizer=optimizer, schedule=schedule, learning_rate=0.01,
        weight_decay=1e-4, warmup_epochs=0.5, epochs=1,
    )  # fmt: skip
    assert np.isfinite(result.history[0].train_loss["fine"])
    assert result.history[0].learning_rate > 0 or schedule is Schedule.cosine


def test_time_budget_stops_training_and_says_so(synthetic_arrays):
    _, result = _fit(synthetic_arrays, budget=Budget(time_budget_s=1e-6), epochs=5)
    assert result.stopped_by == "time_budget" and len(result.history) == 1
    assert result.history[0].steps == 1  # stopped after the first call
    assert result.best_epoch == 1  # the partial epoch is still validated


def test_time_to_target_is_recorded_and_can_stop_the_run(synthetic_arrays):
    _, reached = _fit(synthetic_arrays, budget=Budget(target={"coarse": 0.01}), epochs=3)
    assert reached.time_to_target["epoch"] == 1 and reached.stopped_by == "epochs"
    assert reached.time_to_target["train_seconds"] == reached.history[0].train_seconds_so_far
    _, stopped = _fit(
        synthetic_arrays, budget=Budget(target={"coarse": 0.01}, stop_at_target=True), epochs=3
    )
    assert stopped.stopped_by == "target" and len(stopped.history) == 1
    _, missed = _fit(synthetic_arrays, budget=Budget(target={"coarse": 1.0}), epochs=1)
    assert missed.time_to_target is None


def test_normalization_standardizes_inside_the_model():
    model = reference_model()
    preprocessing = ImagePreprocessing(255.0, mean=[0.5, 0.5, 0.5], std=[0.25] * 3)
    normalized = type(model)(model.backbone, model.heads, preprocessing=preprocessing)
    images = tf.constant(np.full((1, 2, 2, 3), 255, np.uint8))
    np.testing.assert_allclose(normalized.preprocess(images).numpy(), 2.0)
    assert normalized.get_config()["preprocessing"]["config"]["mean"] == [0.5, 0.5, 0.5]
    # the dataset's declaration fits the statistics on the training images
    train = np.random.default_rng(0).integers(0, 256, (10, 4, 4, 3), dtype=np.uint8)
    layer = ImageInputs(normalize=True).layer(train)
    mean, std = channel_statistics(train)
    assert layer.divisor == 255.0 and layer.mean == mean and layer.std == std
    scaled = layer(tf.constant(train)).numpy().reshape(-1, 3)
    np.testing.assert_allclose(scaled.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(scaled.std(axis=0), 1.0, rtol=1e-4)
    plain = ImageInputs().layer(train)
    assert plain.mean is None and plain.std is None


def _trainer(model, inputs=None) -> Trainer:
    return Trainer(
        TrainerConfig(), model, EqualWeights(), kinds("fine"), inputs=inputs,
        precision="float32", seed=0,
    )  # fmt: skip


def test_eval_flip_averages_the_image_and_its_mirror(synthetic_arrays):
    model = reference_model()
    plain = _trainer(model)
    flipped = _trainer(model, ImageInputs(eval_flip=True))
    split = _split(synthetic_arrays, "test", 20)
    mirror = Split(split.x[:, :, ::-1], split.y)
    expected = (plain.predict(split)["fine"] + plain.predict(mirror)["fine"]) / 2
    np.testing.assert_allclose(flipped.predict(split)["fine"], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(flipped.predict(split)["fine"], plain.predict(split)["fine"])
    # without eval_flip, the declaration's one view is the image itself
    np.testing.assert_array_equal(
        _trainer(model, ImageInputs()).predict(split)["fine"], plain.predict(split)["fine"]
    )


class ThreeViews(Inputs):
    """The image, its mirror and its upside-down copy."""

    def views(self, x):
        return [x, tf.reverse(x, axis=[2]), tf.reverse(x, axis=[1])]


def test_evaluation_averages_the_outputs_of_every_view_the_dataset_declares(synthetic_arrays):
    model = reference_model()
    plain = _trainer(model)
    split = _split(synthetic_arrays, "test", 20)
    views = [split, Split(split.x[:, :, ::-1], split.y), Split(split.x[:, ::-1], split.y)]
    expected = np.mean([plain.predict(v)["fine"] for v in views], axis=0)
    averaged = _trainer(model, ThreeViews()).predict(split)["fine"]
    np.testing.assert_allclose(averaged, expected, rtol=1e-5, atol=1e-6)
