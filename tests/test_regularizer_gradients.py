"""The losses a model adds itself (``add_loss``: DSelect-k's gate regularisers) reach the shared
variables in every kind of gradient-level step: ``combined_gradients`` adds their gradient to the
method's update, and ``sampled_gradients`` (methods that read several batches per update) adds
its mean over the batches, as it does for the heads' gradients."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mtbench.tasks import task_kinds
from mtbench.training.step import ReplicaStep
from mtbench.weighting import GradientWeighting
from tests.helpers import tiny_architecture_model, tiny_vector_tasks


class _ZeroUpdate(GradientWeighting):
    """An update of zero for the shared variables: what is left is the regulariser's gradient."""

    def aggregate(self, grads, losses):
        return tf.zeros_like(grads[0]), tf.ones_like(losses)

    def aggregate_samples(self, grads, losses):
        return tf.zeros_like(grads[0, 0]), tf.ones_like(losses[0])


class _ZeroUpdateOfThree(_ZeroUpdate):
    samples_per_step = 3


def _batch(seed: int, size: int = 12):
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(size, 6)).astype(np.float32))
    labels = {
        t.name: (tf.constant(rng.integers(0, t.num_classes, size)), tf.ones([size], tf.bool))
        for t in tiny_vector_tasks()
    }
    return x, labels


def _regularizer_gradient(model, x):
    """The gradient of the model's own losses on ``x`` for its shared variables."""
    with tf.GradientTape() as tape:
        model(x, training=True)
        total = tf.add_n(model.losses)
    shared = model.shared_variables
    grads = tape.gradient(total, shared)
    return [
        np.zeros(v.shape, np.float32) if g is None else np.asarray(g)
        for g, v in zip(grads, shared, strict=True)
    ]


@pytest.mark.parametrize("weighting", [_ZeroUpdate, _ZeroUpdateOfThree])
def test_the_models_own_losses_reach_the_shared_variables(weighting):
    model = tiny_architecture_model("dselect_k")
    method = weighting()
    method.setup([t.name for t in tiny_vector_tasks()])
    tasks = tiny_vector_tasks()
    kinds = dict(zip([t.name for t in tasks], task_kinds(tasks), strict=True))
    strategy = tf.distribute.get_strategy()
    step = ReplicaStep(model, method, kinds, strategy, "float32", lambda: None)
    shared = len(model.shared_variables)
    if method.samples_per_step == 1:
        x, labels = _batch(0)
        grads = step.combined_gradients(x, labels).grads[:shared]
        want = _regularizer_gradient(model, x)
    else:
        batches = [_batch(seed) for seed in range(3)]
        xs = tuple(x for x, _ in batches)
        grads = step.sampled_gradients(xs, tuple(y for _, y in batches)).grads[:shared]
        each = [_regularizer_gradient(model, x) for x in xs]
        want = [np.mean(np.stack(g), axis=0) for g in zip(*each, strict=True)]
    assert model.losses, "dselect_k with entropy_weight > 0 adds its gate regulariser"
    assert max(float(np.abs(w).max()) for w in want) > 1e-6  # the regulariser reaches them
    for got, expected in zip(grads, want, strict=True):
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-7)
