"""Methods that draw several batches per update (MoDo, SDMGrad): the formulas against numpy
re-implementations of LibMTL's ``LibMTL/weighting/MoDo.py`` and ``SDMGrad.py`` (commit 4336804,
both modified by LibMTL from the authors' code), and the trainer's sampling path."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import image_model

import mtbench
from mtbench.config import TrainerConfig
from mtbench.data import Split
from mtbench.tasks import TaskSpec, task_kinds
from mtbench.trainer import Trainer
from mtbench_plugins.weighting.sampling import project_to_simplex

TASKS = ("a", "b", "c")


def _simplex_reference(v: np.ndarray) -> np.ndarray:
    """LibMTL SDMGrad.euclidean_proj_simplex, s=1."""
    n = v.shape[0]
    u = np.sort(v)[::-1]
    cssv = np.cumsum(u)
    rho = np.nonzero(u * np.arange(1, n + 1) > (cssv - 1))[0][-1]
    theta = float(cssv[rho] - 1) / (rho + 1)
    return (v - theta).clip(min=0)


@pytest.mark.parametrize("seed", range(5))
def test_simplex_projection_matches_the_reference(seed):
    v = np.random.default_rng(seed).normal(size=7) * 3
    ours = project_to_simplex(tf.constant(v, tf.float64)).numpy()
    np.testing.assert_allclose(ours, _simplex_reference(v), atol=1e-12)
    assert ours.min() >= 0 and ours.sum() == pytest.approx(1.0)


def _grads(seed: int, tasks: int = 3, size: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grads = rng.normal(size=(3, tasks, size))
    grads[:, 1] *= -0.5  # conflicting
    return grads.astype(np.float32)


def _modo_reference(grads, lambd, gamma, rho):
    g = grads.astype(np.float64)
    lambd = _simplex_reference(lambd - gamma * (g[0] @ (g[1].T @ lambd) + rho * lambd))
    return lambd @ g[2], lambd


def _sdmgrad_reference(grads, w, lamda, niter, lr=5.0, momentum=0.5):
    zeta, xi1, xi2 = grads.astype(np.float64)
    gg = xi1 @ xi2.T
    diag = np.maximum(np.diag(gg), 0)
    gg = gg / (np.mean(np.sqrt(diag)) ** 2 + 1e-8)
    gg_mean = gg.mean(axis=1)
    buf = None
    for _ in range(niter):
        grad = gg @ w + lamda * gg_mean
        buf = grad if buf is None else momentum * buf + grad  # torch SGD, dampening 0
        w = _simplex_reference(w - lr * buf)
    update = (w @ zeta + lamda * zeta.mean(axis=0)) / (1 + lamda)
    return update, w


def _method(name, **options):
    method = mtbench.build_plugin("weighting", {"name": name, **options})
    method.setup(TASKS)
    return method


@pytest.mark.parametrize("seed", range(3))
def test_modo_matches_the_reference_over_several_updates(seed):
    method = _method("modo", gamma=0.05, rho=0.1)
    lambd = np.full(3, 1 / 3)
    for step in range(3):
        grads = _grads(10 * seed + step)
        update, weights = method.aggregate_samples(tf.constant(grads), tf.ones([3, 3]))
        expected, lambd = _modo_reference(grads, lambd, 0.05, 0.1)
        np.testing.assert_allclose(weights.numpy(), lambd, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(update.numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_sdmgrad_matches_the_reference_over_several_updates(seed):
    method = _method("sdmgrad")
    w = np.full(3, 1 / 3)
    for step in range(3):
        grads = _grads(10 * seed + step)
        update, weights = method.aggregate_samples(tf.constant(grads), tf.ones([3, 3]))
        expected, w = _sdmgrad_reference(grads, w, 0.3, 20)
        np.testing.assert_allclose(weights.numpy(), (w + 0.3 / 3) / 1.3, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(update.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_when_the_batches_agree_sdmgrad_never_leaves_the_simplex_and_stays_finite():
    same = np.repeat(_grads(0)[:1], 3, axis=0)
    same[:, 2] = 0.0  # a zero task gradient
    method = _method("sdmgrad")
    update, weights = method.aggregate_samples(tf.constant(same), tf.ones([3, 3]))
    assert np.all(np.isfinite(update.numpy())) and np.all(np.isfinite(weights.numpy()))
    w = method.w.numpy()
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name", ["modo", "sdmgrad"])
def test_sampling_methods_train_through_the_trainer(name):
    tasks = [TaskSpec(t, 4) for t in TASKS]
    model = image_model("seed_cnn", "dense", tasks, shape=(8, 8, 3), precision="float32")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(96, 8, 8, 3), dtype=np.uint8)
    split = Split(images, {t: rng.integers(0, 4, 96) for t in TASKS})
    initial = [v.numpy().copy() for v in model.trainable_variables]
    config = TrainerConfig(batch_size=16, epochs=2, progress=False, checkpoint_every=0)
    trainer = Trainer(config, model, _method(name), task_kinds(tasks), precision="float32", seed=0)
    result = trainer.fit(split, split)
    # 6 batches per epoch, three per update: 2 updates per epoch, every image seen once
    assert [r.steps for r in result.history] == [2, 2]
    assert result.steps_per_epoch == 2 and result.images_seen == 2 * 96
    assert all(np.isfinite(v) for r in result.history for v in r.train_loss.values())
    changed = [
        not np.array_equal(a, v.numpy())
        for a, v in zip(initial, model.trainable_variables, strict=True)
    ]
    assert all(changed)  # the backbone and every head moved
    state = trainer.weighting.variables[0].numpy()
    assert state.min() >= 0 and state.sum() == pytest.approx(1.0, abs=1e-5)


def test_a_sampling_method_needs_enough_batches_per_epoch():
    tasks = [TaskSpec(t, 4) for t in TASKS]
    model = image_model("seed_cnn", "dense", tasks, shape=(8, 8, 3), precision="float32")
    rng = np.random.default_rng(0)
    split = Split(
        rng.integers(0, 256, size=(32, 8, 8, 3), dtype=np.uint8),
        {t: rng.integers(0, 4, 32) for t in TASKS},
    )
    config = TrainerConfig(batch_size=16, epochs=1, progress=False, checkpoint_every=0)
    trainer = Trainer(
        config, model, _method("modo"), task_kinds(tasks), precision="float32", seed=0
    )
    with pytest.raises(ValueError, match="draws 3 batches per update, but an epoch has only 2"):
        trainer.fit(split, split)
