"""The trainer: both weighting paths update correctly, training learns, selection is honest."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import reference_model as _model

from mtbench.config import Optimizer, TrainerConfig
from mtbench.data import Split
from mtbench.trainer import Trainer, classification_metrics, topk_accuracy
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
    trainer = Trainer(config, model, weighting, ["fine", "coarse"], precision=precision, seed=0)
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
    model = _model("mixed_bfloat16")
    config = TrainerConfig(batch_size=64, epochs=4, progress=False)
    trainer = Trainer(
        config, model, EqualWeights(), ["fine", "coarse"], precision="mixed_bfloat16", seed=0
    )
    train, val = _split(synthetic_arrays, "train"), _split(synthetic_arrays, "test")
    result = trainer.fit(train, val)
    assert len(result.history) == 4 and len(result.epoch_seconds) == 4
    scores = [np.mean([r.val[t]["accuracy"] for t in ("fine", "coarse")]) for r in result.history]
    assert result.best_epoch == int(np.argmax(scores)) + 1
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
            config, model, EqualWeights(), ["fine", "coarse"], precision="float32", seed=5
        )
        return trainer.fit(_split(synthetic_arrays, "train"), _split(synthetic_arrays, "test"))

    a, b = run(), run()
    assert [r.train_loss for r in a.history] == [r.train_loss for r in b.history]
    assert a.best_val == b.best_val


def test_batch_larger_than_data_is_a_clear_error(synthetic_arrays):
    config = TrainerConfig(batch_size=4096, epochs=1, progress=False)
    trainer = Trainer(config, _model(), EqualWeights(), ["fine"], precision="float32", seed=0)
    with pytest.raises(
        ValueError, match="trainer.batch_size=4096 is larger than the training split"
    ):
        trainer.fit(_split(synthetic_arrays, "train"), _split(synthetic_arrays, "test"))


def test_topk_and_metrics():
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    labels = np.array([1, 2, 0])
    assert topk_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, labels, 2) == pytest.approx(1 / 3)  # row 2: top2 = {2, 1}
    assert topk_accuracy(logits, labels, 5) == 1.0  # k >= classes
    metrics = classification_metrics(logits, labels)
    assert metrics == {"accuracy": pytest.approx(1 / 3), "top5_accuracy": 1.0}
