"""Loss-level weightings: each follows its formula and reacts to the losses as its paper says."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtbench import registry


def _method(name: str, num_tasks: int, **options):
    weighting = registry.build("weighting", {"name": name, **options})
    weighting.setup([f"task{t}" for t in range(num_tasks)])
    return weighting


def _slopes(weighting, losses: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The objective, the weights it reports and d objective / d losses (what the model feels)."""
    losses = tf.constant(losses, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(losses)
        objective, weights = weighting.combine(losses)
    return float(objective), weights.numpy(), tape.gradient(objective, losses).numpy()


# --------------------------------------------------------------------------------------- UW
@pytest.mark.parametrize("form,factor", [("classification", 1.0), ("regression", 0.5)])
def test_uw_log_variances_receive_gradients_and_move_to_their_optimum(form, factor):
    uw = _method("uw", 3, form=form)
    losses = tf.constant([0.5, 1.0, 3.0])
    optimizer = keras.optimizers.Adam(0.05)
    optimizer.build(uw.trainable_variables)
    step = tf.function(lambda: optimizer.apply(_gradients(uw, losses), uw.trainable_variables))
    assert len(uw.trainable_variables) == 1
    first = _gradients(uw, losses)[0].numpy()
    np.testing.assert_allclose(first, 0.5 - factor * losses.numpy(), rtol=1e-6)  # at s = 0
    for _ in range(600):
        step()
    # d/ds (k exp(-s) L + s/2) = 0  <=>  s = log(2 k L): a larger loss gets a smaller weight
    np.testing.assert_allclose(uw.log_variance.numpy(), np.log(2 * factor * losses), atol=0.02)
    _, weights, slopes = _slopes(uw, losses.numpy())
    np.testing.assert_allclose(weights, slopes, rtol=1e-6)
    assert weights[0] > weights[1] > weights[2]


def _gradients(uw, losses):
    with tf.GradientTape() as tape:
        objective, _ = uw.combine(losses)
    return tape.gradient(objective, uw.trainable_variables)


# -------------------------------------------------------------------------------------- DWA
def test_dwa_weights_follow_its_formula_from_the_loss_history():
    dwa = _method("dwa", 3, temperature=2.0)
    losses = np.array([1.0, 1.0, 1.0], np.float32)
    history = [np.array([2.0, 1.0, 4.0]), np.array([1.0, 0.9, 3.0]), np.array([0.8, 0.85, 1.5])]
    np.testing.assert_array_equal(dwa.loss_weights(losses), np.ones(3))  # epoch 1
    dwa.on_epoch_end(1, history[0])
    np.testing.assert_array_equal(dwa.loss_weights(losses), np.ones(3))  # epoch 2
    for epoch in (2, 3):
        dwa.on_epoch_end(epoch, history[epoch - 1])
        ratio = history[epoch - 1] / history[epoch - 2]
        expected = 3 * np.exp(ratio / 2.0) / np.exp(ratio / 2.0).sum()
        np.testing.assert_allclose(dwa.loss_weights(losses), expected, rtol=1e-6)
        objective, weights, slopes = _slopes(dwa, [1.0, 2.0, 3.0])
        np.testing.assert_allclose(slopes, expected, rtol=1e-6)
        assert objective == pytest.approx(float(expected @ [1.0, 2.0, 3.0]), rel=1e-6)
    # the task whose loss fell least (task 1: 0.9 -> 0.85) now weighs most
    assert np.argmax(dwa.loss_weights(losses)) == 1


# ------------------------------------------------------------------------------------- FAMO
@pytest.mark.parametrize("num_tasks", [2, 4])
def test_famo_shifts_weight_away_from_the_task_whose_loss_falls_faster(num_tasks):
    famo = _method("famo", num_tasks)
    before = np.ones(num_tasks, np.float32)
    after = np.full(num_tasks, 0.9, np.float32)
    after[0] = 0.5  # task 0 improves much faster
    learn = tf.function(famo.after_update)
    for _ in range(10):
        learn(tf.constant(before), tf.constant(after))
    _, weights, slopes = _slopes(famo, before)
    assert weights[0] < weights[1] and np.allclose(weights[1:], weights[1])
    np.testing.assert_allclose(slopes, weights, rtol=1e-5)
    assert weights.sum() == pytest.approx(1.0, rel=1e-5)


def test_famo_loss_weights_are_inverse_to_the_losses_at_equal_logits():
    _, weights, _ = _slopes(_method("famo", 3), np.array([1.0, 2.0, 4.0]))
    np.testing.assert_allclose(weights, np.array([4.0, 2.0, 1.0]) / 7.0, rtol=1e-5)


def test_famo_same_batch_asks_for_the_losses_after_the_update_and_next_batch_does_not():
    assert _method("famo", 2).needs_losses_after_update
    famo = _method("famo", 2, update="next_batch")
    assert not famo.needs_losses_after_update
    combine = tf.function(famo.combine)
    for step in range(10):  # task 0's loss falls faster from one batch to the next
        combine(tf.constant([1.0 * 0.5**step, 1.0 * 0.95**step]))
    z = tf.nn.softmax(famo.logits).numpy()
    assert z[0] < z[1]


def test_famo_ignores_a_non_finite_step():
    famo = _method("famo", 2)
    famo.after_update(tf.constant([1.0, 1.0]), tf.constant([np.nan, 0.5]))
    assert np.isfinite(famo.logits.numpy()).all() and float(famo.adam.steps.numpy()) == 0.0


# -------------------------------------------------------------------------------------- RLW
@pytest.mark.parametrize("distribution", ["normal", "uniform", "dirichlet"])
def test_rlw_weights_are_random_points_of_the_simplex(distribution):
    rlw = _method("rlw", 3, distribution=distribution, seed=1)
    combine = tf.function(rlw.combine)
    draws = np.stack([combine(tf.ones([3]))[1].numpy() for _ in range(200)])
    assert (draws > 0).all() and np.allclose(draws.sum(1), 1.0, atol=1e-5)
    assert np.abs(draws.mean(0) - 1 / 3).max() < 0.05  # no task is favoured
    assert draws.std(0).min() > 0.05  # they do change from step to step


def test_rlw_same_seed_same_weights():
    def draws(**options):
        rlw = _method("rlw", 4, **options)
        return np.stack([rlw.loss_weights(tf.ones([4])).numpy() for _ in range(5)])

    np.testing.assert_array_equal(draws(seed=3), draws(seed=3))
    assert not np.allclose(draws(seed=3), draws(seed=4))
    keras.utils.set_random_seed(7)  # what the benchmark does with the run's seed
    first = draws()
    keras.utils.set_random_seed(7)
    np.testing.assert_array_equal(draws(), first)


# -------------------------------------------------------------------------------------- GLS
def test_gls_is_the_geometric_mean_and_weights_tasks_inversely_to_their_loss():
    losses = np.array([0.5, 2.0, 4.0])
    objective, weights, slopes = _slopes(_method("gls", 3), losses)
    assert objective == pytest.approx(float(np.prod(losses) ** (1 / 3)), rel=1e-6)
    np.testing.assert_allclose(slopes, objective / (3 * losses), rtol=1e-5)
    np.testing.assert_allclose(weights, slopes, rtol=1e-5)
