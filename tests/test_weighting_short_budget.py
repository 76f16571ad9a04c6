"""``db_mtl``, ``moco``, ``modo`` and ``sdmgrad`` on what a short run gives them: the first
steps of their state, tasks without a labelled example in the batch, and many noisy tasks.

These four trail ``ew`` by 17-32 points of Δm in 2-epoch runs (README, "Every method on
MultiFashion"). The diagnosis (README, the paragraph after that table) found no deviation from
the reference code; these tests pin the behaviour it relies on:

- a task with no labelled example in a batch reaches the methods as loss 0 and gradient 0
  (``masked_task_losses``); LibMTL's code on those inputs (``log(0 + 1e-8)``'s gradient is
  ``0 / 1e-8 = 0``; MoCo's ``0 / (0 + 1e-8) * 0 = 0``) only decays that task's averaged or
  tracked gradient, and so does mtbench, from the first step on, also through the trainer;
- ``db_mtl`` with ``beta=0`` and ``moco`` with ``beta=1, beta_sigma=0`` keep no gradient
  average: every update is computed from this step's gradients alone (the switches the
  diagnosis used to show that the averaging is what slows the short runs);
- on twenty tasks whose per-task gradients are mostly noise (``cifar100_tasks``: about six
  labelled examples per task in a batch), SDMGrad's weights, as the reference computes them,
  sit on one or two tasks at each update.

References, transcribed here in float64 numpy (LibMTL, github.com/median-research-group/LibMTL
at 4336804847eaa5e0b924b743d76beec7ac3fdc97): ``LibMTL/weighting/DB_MTL.py``,
``LibMTL/weighting/MoCo.py`` and ``LibMTL/weighting/SDMGrad.py``, with ``LibMTL/config.py``'s
defaults.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import image_model

from mtbench import registry
from mtbench.config import TrainerConfig
from mtbench.data import Split
from mtbench.tasks import TaskSpec, task_kinds
from mtbench.trainer import Trainer

SIZE = 40  # parameters per task gradient
RTOL = 1e-5  # float32 results against float64 references


def _method(name: str, num_tasks: int, **options):
    weighting = registry.build("weighting", {"name": name, **options})
    weighting.setup([f"task{t}" for t in range(num_tasks)])
    return weighting


def _f32(array) -> np.ndarray:
    """As the trainer hands values over (float32), in float64 for the references."""
    return np.asarray(array, np.float32).astype(np.float64)


def _steps(num_tasks: int, count: int, seed: int, unlabelled: dict[int, set[int]]):
    """``count`` steps of gradients ``[T, SIZE]`` and losses ``[T]``; task ``t`` has no labelled
    example (loss 0, gradient 0, as ``masked_task_losses`` gives) on the steps
    ``unlabelled[t]`` (counted from 0)."""
    rng = np.random.default_rng(seed)
    steps = []
    for k in range(count):
        grads = rng.normal(size=(num_tasks, SIZE)) * rng.uniform(0.2, 3.0, (num_tasks, 1))
        losses = rng.uniform(0.2, 3.0, num_tasks)
        for task, when in unlabelled.items():
            if k in when:
                grads[task], losses[task] = 0.0, 0.0
        steps.append((_f32(grads), _f32(losses)))
    return steps


def _state(weighting, name: str) -> np.ndarray:
    """The value of the method's state variable ``name``."""
    (variable,) = [v for v in weighting.variables if v.name == name]
    return variable.numpy()


def _run(weighting, grads: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    step = getattr(weighting, "_test_step", None)
    if step is None:
        step = weighting._test_step = tf.function(weighting.aggregate)  # as in the trainer
    update, weights = step(tf.constant(grads, tf.float32), tf.constant(losses, tf.float32))
    return update.numpy().astype(np.float64), weights.numpy().astype(np.float64)


def _close(got: np.ndarray, want: np.ndarray, terms: np.ndarray) -> None:
    """Elementwise, relative to the size of the terms summed."""
    scale = np.abs(terms).sum(axis=0).max()
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * scale)


# ------------------------------------------------------------------------ references (numpy)
def _db_mtl_reference(steps, beta: float = 0.9, beta_sigma: float = 0.0):
    """``DB_MTL.backward`` step by step: ``(new_grads, alpha, grad_buffer)`` per step."""
    buffer = np.zeros_like(steps[0][0])
    out = []
    for k, (grads, losses) in enumerate(steps, start=1):
        batch_grads = grads / (losses + 1e-8)[:, None]  # the gradient of log(losses + 1e-8)
        buffer = batch_grads + (beta / k**beta_sigma) * (buffer - batch_grads)
        u_grad = np.linalg.norm(buffer, axis=-1)
        alpha = u_grad.max() / (u_grad + 1e-8)
        out.append((alpha @ buffer, alpha, buffer.copy()))
    return out


def _moco_reference(steps, beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.0):
    """``MoCo.backward`` step by step: ``(new_grads, lambd, y)`` per step."""
    num_tasks = steps[0][0].shape[0]
    y = np.zeros_like(steps[0][0])
    lambd = np.ones(num_tasks) / num_tasks
    out = []
    for k, (grads, losses) in enumerate(steps, start=1):
        rescaled = grads / (np.linalg.norm(grads, axis=1, keepdims=True) + 1e-8) * losses[:, None]
        y = y - (beta / k**beta_sigma) * (y - rescaled)
        z = lambd - (gamma / k**gamma_sigma) * (y @ y.T + rho * np.eye(num_tasks)) @ lambd
        lambd = np.exp(z - z.max()) / np.exp(z - z.max()).sum()  # F.softmax
        out.append((y.T @ lambd, lambd.copy(), y.copy()))
    return out


def _simplex(v: np.ndarray) -> np.ndarray:
    """``SDMGrad.euclidean_proj_simplex`` with ``s=1``."""
    u = np.sort(v)[::-1]
    cssv = np.cumsum(u)
    rho = np.nonzero(u * np.arange(1, len(v) + 1) > (cssv - 1))[0][-1]
    return (v - float(cssv[rho] - 1) / (rho + 1)).clip(min=0)


def _sdmgrad_reference(batches, w, lamda=0.3, niter=20, lr=5.0, momentum=0.5):
    """``SDMGrad.backward`` on the three batches' gradients: ``(g, w)``."""
    zeta, xi1, xi2 = batches
    gram = xi1 @ xi2.T
    scale = np.mean(np.sqrt(np.maximum(np.diag(gram), 0.0)))
    gram = gram / (scale**2 + 1e-8)
    mean_column = gram.mean(axis=1)
    buffer = None
    for _ in range(niter):  # torch.optim.SGD(lr, momentum), a new one at every call
        gradient = gram @ w + lamda * mean_column
        buffer = gradient if buffer is None else momentum * buffer + gradient
        w = _simplex(w - lr * buffer)
    return (zeta * w[:, None]).sum(0) / (1 + lamda) + lamda * zeta.mean(0) / (1 + lamda), w


# ------------------------------------------------------------------------ unlabelled tasks
UNLABELLED = {1: {0, 2, 3, 6}}  # task 1 has no label on the first step and three later ones


def test_db_mtl_with_an_unlabelled_task_matches_libmtl():
    steps = _steps(3, count=8, seed=1, unlabelled=UNLABELLED)
    weighting = _method("db_mtl", 3)
    for k, ((grads, losses), (want, alpha, buffer)) in enumerate(
        zip(steps, _db_mtl_reference(steps), strict=True)
    ):
        update, weights = _run(weighting, grads, losses)
        _close(update, want, alpha[:, None] * buffer)
        state = _state(weighting, "gradient_average")
        np.testing.assert_allclose(state, buffer, rtol=RTOL, atol=RTOL * np.abs(buffer).max())
        if k == 0:  # never labelled yet: its average is exactly zero, its weight is logged as 0
            assert weights[1] == 0.0 and not state[1].any()
        else:
            np.testing.assert_allclose(weights, alpha, rtol=RTOL)
    # an unlabelled step only decays the task's average: m <- 0.9 m
    weighting = _method("db_mtl", 3)
    for grads, losses in steps[:2]:
        _run(weighting, grads, losses)
    before = _state(weighting, "gradient_average")[1]
    _run(weighting, *steps[2])
    np.testing.assert_allclose(_state(weighting, "gradient_average")[1], 0.9 * before, rtol=1e-6)


def test_moco_with_an_unlabelled_task_matches_libmtl():
    steps = _steps(3, count=8, seed=2, unlabelled=UNLABELLED)
    weighting = _method("moco", 3)
    for (grads, losses), (want, lambd, y) in zip(steps, _moco_reference(steps), strict=True):
        update, weights = _run(weighting, grads, losses)
        _close(update, want, lambd[:, None] * y)
        np.testing.assert_allclose(weights, lambd, rtol=RTOL)
        tracked = _state(weighting, "tracked_gradients")
        np.testing.assert_allclose(tracked, y, rtol=RTOL, atol=RTOL * np.abs(y).max())
    # an unlabelled step moves the task's tracked gradient towards 0 by beta_k
    weighting = _method("moco", 3)
    for grads, losses in steps[:2]:
        _run(weighting, grads, losses)
    before = _state(weighting, "tracked_gradients")[1]
    _run(weighting, *steps[2])
    beta_3 = 0.5 / 3**0.5
    after = _state(weighting, "tracked_gradients")[1]
    np.testing.assert_allclose(after, (1 - beta_3) * before, rtol=1e-6)


# --------------------------------------------------------------- the switches without averaging
def test_db_mtl_with_beta_zero_keeps_no_average():
    """``beta=0``: every update is the one-step update of its own gradients (a fresh method's);
    with the default ``beta=0.9`` the past steps change it."""
    steps = _steps(3, count=5, seed=3, unlabelled={})
    memoryless, averaging = _method("db_mtl", 3, beta=0.0), _method("db_mtl", 3)
    for k, (grads, losses) in enumerate(steps):
        fresh, fresh_weights = _run(_method("db_mtl", 3, beta=0.0), grads, losses)
        update, weights = _run(memoryless, grads, losses)
        np.testing.assert_allclose(update, fresh, rtol=1e-6, atol=1e-6 * np.abs(fresh).max())
        np.testing.assert_allclose(weights, fresh_weights, rtol=1e-6)
        averaged, _ = _run(averaging, grads, losses)
        cosine = averaged @ fresh / np.linalg.norm(averaged) / np.linalg.norm(fresh)
        if k == 0:  # the average starts at zero: 0.1 h, the same direction
            assert cosine == pytest.approx(1.0, abs=1e-6)
        else:
            assert cosine < 0.99


def test_moco_with_beta_one_tracks_nothing():
    """``beta=1, beta_sigma=0``: the tracked gradients are this step's ``L_t g_t / |g_t|``, and
    the update combines them with the weights of the reference's recursion."""
    steps = _steps(3, count=5, seed=4, unlabelled={1: {2}})
    weighting = _method("moco", 3, beta=1.0, beta_sigma=0.0)
    reference = _moco_reference(steps, beta=1.0, beta_sigma=0.0)
    for (grads, losses), (want, lambd, _) in zip(steps, reference, strict=True):
        update, weights = _run(weighting, grads, losses)
        rescaled = grads / (np.linalg.norm(grads, axis=1, keepdims=True) + 1e-8) * losses[:, None]
        tracked = _state(weighting, "tracked_gradients")
        np.testing.assert_allclose(tracked, rescaled, rtol=1e-6, atol=1e-7)
        _close(update, want, lambd[:, None] * rescaled)
        np.testing.assert_allclose(weights, lambd, rtol=RTOL)


# ---------------------------------------------------------------------- many noisy tasks
def test_sdmgrad_on_twenty_noisy_tasks_matches_the_reference_and_weights_few_tasks():
    """Twenty tasks whose gradients are mostly noise (signal 0.2 of the noise per coordinate),
    three independent batches per update: the cross-batch Gram matrix is indefinite and the
    reference's 20 projected steps of size 5 end on one or two tasks. mtbench matches it, so
    the effective weights ``(w + 0.3 / 20) / 1.3`` leave most tasks at ``0.3 / 20 / 1.3``."""
    rng = np.random.default_rng(5)
    num_tasks, size = 20, 2000
    signal = 0.2 * rng.normal(size=(num_tasks, size))
    weighting = _method("sdmgrad", num_tasks)
    w = np.full(num_tasks, 1.0 / num_tasks)
    supports = []
    for _ in range(6):
        batches = _f32(signal + rng.normal(size=(3, num_tasks, size)))
        update, weights = weighting.aggregate_samples(
            tf.constant(batches, tf.float32), tf.ones([3, num_tasks])
        )
        want, w = _sdmgrad_reference(batches, w)
        np.testing.assert_allclose(_state(weighting, "w"), w, atol=1e-5)
        effective = (w + 0.3 / num_tasks) / 1.3
        np.testing.assert_allclose(weights.numpy(), effective, rtol=1e-5, atol=1e-7)
        _close(update.numpy().astype(np.float64), want, np.abs(batches[0]))
        supports.append(int((w > 1e-6).sum()))
    assert max(supports) <= 3, supports  # 1, 1, 1, 1, 2 and 2 tasks


# ------------------------------------------------------------------- through the trainer
TASKS = (TaskSpec("a", 4), TaskSpec("b", 3), TaskSpec("c", 5))


@pytest.mark.parametrize("name", ["db_mtl", "moco", "modo", "sdmgrad"])
def test_trains_with_a_task_labelled_on_one_example(name):
    """Task ``c`` is labelled on one of 48 examples, so at least two of the three batches of
    an epoch have no example of it: losses, weights, state and parameters stay finite, the
    state follows from the steps (it is not all zeros) and the model moves."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(48, 8, 8, 3), dtype=np.uint8)
    labels = {t.name: rng.integers(0, t.num_classes, 48) for t in TASKS}
    labels["c"][1:] = -1
    split = Split(images, labels)
    model = image_model("seed_cnn", "dense", TASKS, shape=(8, 8, 3), precision="float32")
    initial = [v.numpy().copy() for v in model.trainable_variables]
    weighting = registry.build("weighting", {"name": name})
    config = TrainerConfig(batch_size=16, epochs=3, progress=False, checkpoint_every=0)
    trainer = Trainer(config, model, weighting, task_kinds(TASKS), precision="float32", seed=0)
    result = trainer.fit(split, split)
    for record in result.history:
        assert all(np.isfinite(v) for v in record.train_loss.values()), record.train_loss
        assert all(np.isfinite(v) for v in record.weights.values()), record.weights
    # an epoch of three batches has one with c's label at most: its mean loss is at most 1/3
    # of that batch's, and with 16 examples a batch without any labelled c gives 0
    assert result.history[0].train_loss["c"] < result.history[0].train_loss["a"]
    for variable in weighting.variables:
        assert np.isfinite(variable.numpy()).all(), variable.name
    if name in ("db_mtl", "moco"):  # the averaged gradients follow from the steps
        average = {"db_mtl": "gradient_average", "moco": "tracked_gradients"}[name]
        assert np.abs(_state(weighting, average)).sum() > 0
    else:  # the weights stay on the simplex
        weights = _state(weighting, {"modo": "lambda", "sdmgrad": "w"}[name])
        assert weights.min() >= 0 and weights.sum() == pytest.approx(1.0, abs=1e-5)
    assert all(
        not np.array_equal(a, v.numpy())
        for a, v in zip(initial, model.trainable_variables, strict=True)
    )
