"""Weighting zoo II, the balancing methods: ``db_mtl``, ``excess_mtl`` and the log-loss variants
``mgda_log``, ``cagrad_log`` and ``imtl_log``.

Each method runs as the trainer runs it (float32 ``[T, P]`` gradients, inside a ``tf.function``)
and is compared with an independent float64 numpy transcription, written here, of its reference
code, on the same float32-rounded gradients:

- LibMTL, github.com/median-research-group/LibMTL at 4336804847eaa5e0b924b743d76beec7ac3fdc97:
  ``LibMTL/weighting/DB_MTL.py`` (``DB_MTL.backward``) and ``LibMTL/weighting/ExcessMTL.py``
  (``ExcessMTL.backward``, the same as the authors' github.com/yifei-he/ExcessMTL at
  b179956021c9ac26f93f986a35d034ffea38f790, ``LibMTL/LibMTL/weighting/ExcessMTL.py``); the
  defaults from ``LibMTL/config.py``.
- FAMO, github.com/Cranial-XIX/FAMO at 0a6ad06dbdd55fce73ec01e3a175c2498cd1e5e9:
  ``methods/weight_methods.py`` (``LOG_MGDA``, ``LOG_CAGrad``, ``LOG_IMTLG``) and
  ``methods/min_norm_solvers.py`` (``gradient_normalizers``). The reference's per-task gradient
  of ``log(L_t + eps)`` is ``g_t / (L_t + eps)``, and the shared parameters' gradient of its
  weighted objective is what mtbench's update is compared with.

Where the reference's solver is approximate (LOG_MGDA's ``MinNormSolver``, LOG_CAGrad's SLSQP),
the transcription solves the same problem to high accuracy instead (an exact enumeration of the
supports; SLSQP on the scaled objective with its exact gradient and ``ftol=1e-15``), so that the
comparison measures the formula, not the solver's stopping rule (one witness shows SLSQP, called
as the reference calls it, stalling). Cases where the reference code divides by zero (a zero
gradient for ExcessMTL, LOG_CAGrad and LOG_IMTLG) are checked by the properties mtbench promises
instead.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from helpers import train_tiny
from scipy.optimize import minimize

from mtbench import registry

NAMES = ("db_mtl", "excess_mtl", "mgda_log", "cagrad_log", "imtl_log")

STATEFUL = ("db_mtl", "excess_mtl")
SIZE = 30  # parameters per task gradient
RTOL = 1e-5  # float32 results and float32 state against float64 references


# ---------------------------------------------------------------------------------- helpers
def _method(name: str, num_tasks: int, **options):
    weighting = registry.build("weighting", {"name": name, **options})
    weighting.setup([f"task{t}" for t in range(num_tasks)])
    return weighting


class _Runner:
    """``weighting.aggregate`` in one ``tf.function`` (as in the trainer), float64 results."""

    def __init__(self, weighting) -> None:
        self.weighting = weighting
        self.step = tf.function(weighting.aggregate)

    def __call__(self, grads: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        update, weights = self.step(tf.constant(grads, tf.float32), tf.constant(losses, tf.float32))
        assert update.dtype == tf.float32 and weights.dtype == tf.float32
        return update.numpy().astype(np.float64), weights.numpy().astype(np.float64)


def _float32(array) -> np.ndarray:
    """As the trainer hands values over (float32), in float64 for the references."""
    return np.asarray(array, np.float32).astype(np.float64)


def _case(kind: str, num_tasks: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-task gradients ``[T, SIZE]`` and positive losses ``[T]`` of one named kind."""
    rng = np.random.default_rng(seed)
    losses = rng.uniform(0.2, 3.0, num_tasks)
    if kind == "random":
        grads = rng.normal(size=(num_tasks, SIZE)) * rng.uniform(0.2, 3.0, (num_tasks, 1))
    elif kind == "conflicting":  # every pair at an obtuse angle (cosines about -1/(T-1))
        simplex = np.eye(num_tasks) - 1.0 / num_tasks
        basis = np.linalg.qr(rng.normal(size=(SIZE, num_tasks)))[0]
        grads = simplex @ basis.T * rng.uniform(0.5, 2.0, (num_tasks, 1))
        grads += 0.05 * rng.normal(size=grads.shape)
    elif kind == "nearly_parallel":
        direction = rng.normal(size=SIZE)
        noise = 1e-2 * rng.normal(size=(num_tasks, SIZE))
        grads = np.arange(1, 1 + num_tasks)[:, None] * (direction + noise)
    elif kind == "one_1000x":
        grads = rng.normal(size=(num_tasks, SIZE))
        grads[0] *= 1000.0
    elif kind == "one_zero":
        grads = rng.normal(size=(num_tasks, SIZE))
        grads[1] = 0.0
    else:
        raise ValueError(kind)
    return _float32(grads), _float32(losses)


def _steps(kind: str, num_tasks: int, count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """A sequence of steps: the case's gradients, moved a little at each step."""
    grads, losses = _case(kind, num_tasks, seed)
    rng = np.random.default_rng(seed + 1000)
    steps = []
    for _ in range(count):
        moved = grads * rng.uniform(0.7, 1.3, (num_tasks, 1)) + 0.1 * rng.normal(size=grads.shape)
        if kind == "one_zero":
            moved[1] = 0.0
        steps.append((_float32(moved), _float32(losses * rng.uniform(0.8, 1.2, num_tasks))))
    return steps


KINDS = ["random", "conflicting", "nearly_parallel", "one_1000x", "one_zero"]
CASES = [(kind, t) for kind in KINDS for t in (2, 3, 5)]
CASE_IDS = [f"{kind}-T{t}" for kind, t in CASES]
# the cases where the reference code divides by zero are left to the property tests
DEFINED = [case for case in CASES if case[0] != "one_zero"]
DEFINED_IDS = [f"{kind}-T{t}" for kind, t in DEFINED]


def _assert_update(got: np.ndarray, want: np.ndarray, terms: np.ndarray, rtol: float = RTOL):
    """Elementwise, relative to the size of the terms summed (the update can cancel to much
    less than its terms, and then only their size sets the round-off)."""
    scale = np.abs(terms).sum(axis=0).max()
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


# ------------------------------------------------------------------- references (float64 numpy)
def _db_mtl_reference(steps, beta: float, beta_sigma: float):
    """LibMTL ``DB_MTL.backward``, step by step: the log-loss gradients' moving average, each
    rescaled to the largest norm. Returns ``(new_grads, alpha, grad_buffer)`` per step."""
    num_tasks = steps[0][0].shape[0]
    grad_buffer = np.zeros((num_tasks, steps[0][0].shape[1]))
    out = []
    for step, (grads, losses) in enumerate(steps, start=1):
        batch_grads = grads / (losses + 1e-8)[:, None]  # grad of log(losses + 1e-8)
        grad_buffer = batch_grads + (beta / step**beta_sigma) * (grad_buffer - batch_grads)
        u_grad = np.linalg.norm(grad_buffer, axis=-1)
        alpha = u_grad.max() / (u_grad + 1e-8)
        new_grads = sum(alpha[i] * grad_buffer[i] for i in range(num_tasks))
        out.append((new_grads, alpha, grad_buffer.copy()))
    return out


def _excess_mtl_reference(steps, robust_step_size: float):
    """LibMTL ``ExcessMTL.backward``, step by step. Returns ``(update, loss_weight)`` per step;
    the update is the shared parameters' gradient of ``sum_t loss_weight_t L_t``."""
    num_tasks = steps[0][0].shape[0]
    loss_weight = np.ones(num_tasks)
    grad_sum = None
    first_epoch = True
    initial_w = None
    out = []
    for grads, _ in steps:
        if grad_sum is None:
            grad_sum = np.zeros_like(grads)
        w = np.zeros(num_tasks)
        for i in range(num_tasks):
            grad_sum[i] += grads[i] ** 2
            h_i = np.sqrt(grad_sum[i] + 1e-7)
            w[i] = grads[i] * (1 / h_i) @ grads[i]
        if first_epoch:
            initial_w = w
            first_epoch = False
        else:
            w = w / initial_w
            loss_weight = loss_weight * np.exp(w * robust_step_size)
            loss_weight = loss_weight / loss_weight.sum() * num_tasks
        out.append((loss_weight @ grads, loss_weight.copy()))
    return out


def _min_norm(gram: np.ndarray) -> np.ndarray:
    """``argmin_{a in simplex} a'Ga`` exactly: the best feasible solution of the equality-
    constrained problem on every support (the optimum is one of them)."""
    num_tasks = len(gram)
    best, best_value = None, np.inf
    for size in range(1, num_tasks + 1):
        for support in itertools.combinations(range(num_tasks), size):
            index = np.array(support)
            kkt = np.zeros((size + 1, size + 1))
            kkt[:size, :size] = gram[np.ix_(index, index)]
            kkt[:size, size] = kkt[size, :size] = 1.0
            rhs = np.zeros(size + 1)
            rhs[size] = 1.0
            solution = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:size]
            if (solution < -1e-12).any():
                continue
            a = np.zeros(num_tasks)
            a[index] = np.maximum(solution, 0.0) / np.maximum(solution, 0.0).sum()
            value = a @ gram @ a
            if value < best_value * (1 - 1e-12):
                best, best_value = a, value
    return best


def _mgda_log_reference(grads, losses, normalization: str = "none"):
    """FAMO ``LOG_MGDA.get_weighted_loss``: min-norm weights of the (normalised) gradients of
    ``log(L + 1e-8)``; the objective ``sum_i log(L_i + 1e-8) sol_i / c`` with
    ``c = sum_i sol_i / (L_i + 1e-8)``. Returns the shared gradient of that objective and the
    weights ``sol_i / (c (L_i + 1e-8))`` it puts on the task gradients."""
    log_grads = grads / (losses + 1e-8)[:, None]
    norms = np.linalg.norm(log_grads, axis=1)
    gn = {"none": np.ones_like(losses), "l2": norms, "loss": losses, "loss+": losses * norms}
    normalised = log_grads / gn[normalization][:, None]
    sol = _min_norm(normalised @ normalised.T)
    c = sum(sol[i] / (losses[i] + 1e-8) for i in range(len(sol)))
    update = sum(log_grads[i] * sol[i] / c for i in range(len(sol)))
    return update, sol / (losses + 1e-8) / c


def _cagrad_log_reference(grads, losses, alpha=0.4, rescale=1, as_famo_calls_slsqp=False):
    """FAMO ``LOG_CAGrad``: ``cagrad`` on the gradients of ``log L`` (no epsilon), before
    ``overwrite_grad``'s multiplication by T. Returns the update and its coefficients on the
    task gradients.

    SLSQP minimises the reference's objective divided by the Gram matrix's mean diagonal (the
    same minimiser), with its exact gradient and ``ftol=1e-15``; with ``as_famo_calls_slsqp`` it
    runs as the reference calls it (unscaled, finite-difference gradients, default options)."""
    num_tasks = len(grads)
    log_grads = grads / losses[:, None]
    gg = log_grads @ log_grads.T
    g0_norm = np.sqrt(gg.mean() + 1e-8)
    x_start = np.ones(num_tasks) / num_tasks
    b = x_start.copy()
    c = alpha * g0_norm + 1e-8

    def objfn(x):
        return x @ gg @ b + c * np.sqrt(x @ gg @ x + 1e-8)

    def jacobian(x):
        return gg @ b + c * gg @ x / np.sqrt(x @ gg @ x + 1e-8)

    constraints = {"type": "eq", "fun": lambda x: 1 - sum(x)}
    if as_famo_calls_slsqp:
        w_cpu = minimize(objfn, x_start, bounds=[(0, 1)] * num_tasks, constraints=constraints).x
    else:
        scale = gg.diagonal().mean()
        w_cpu = minimize(
            lambda x: objfn(x) / scale, x_start, jac=lambda x: jacobian(x) / scale,
            bounds=[(0, 1)] * num_tasks, constraints=constraints,
            options={"ftol": 1e-15, "maxiter": 1000},
        ).x  # fmt: skip
    gw = w_cpu @ log_grads
    lmbda = c / (np.linalg.norm(gw) + 1e-8)
    divisor = {0: 1.0, 1: 1 + alpha**2, 2: 1 + alpha}[rescale]
    g = (log_grads.mean(0) + lmbda * gw) / divisor
    coefficients = (np.full(num_tasks, 1.0 / num_tasks) + lmbda * w_cpu) / divisor
    return g, coefficients / losses


def _imtl_log_reference(grads, losses):
    """FAMO ``LOG_IMTLG.get_weighted_loss``: IMTL-G's closed form on the gradients of
    ``log(L + 1e-8)``; the objective ``sum_t alpha_t log(L_t + 1e-8)``. Returns its shared
    gradient and the weights ``alpha_t / (L_t + 1e-8)`` on the task gradients."""
    eps = 1e-8
    log_grads = grads / (losses + eps)[:, None]
    norm_grads = log_grads / np.linalg.norm(log_grads, axis=1, keepdims=True)
    d = log_grads[0] - log_grads[1:]
    u = norm_grads[0] - norm_grads[1:]
    first_element = log_grads[0] @ u.T
    try:
        second_element = np.linalg.inv(d @ u.T)
    except np.linalg.LinAlgError:
        second_element = np.linalg.inv(np.eye(len(grads) - 1) * 1e-8 + d @ u.T)
    alpha_ = first_element @ second_element
    alpha = np.concatenate([[1 - alpha_.sum()], alpha_])
    return alpha @ log_grads, alpha / (losses + eps)


# ---------------------------------------------------------------------- reference comparisons
@pytest.mark.parametrize("beta,beta_sigma", [(0.9, 0.0), (0.5, 0.5)])
@pytest.mark.parametrize("kind,num_tasks", CASES, ids=CASE_IDS)
def test_db_mtl_matches_libmtl(kind, num_tasks, beta, beta_sigma):
    steps = _steps(kind, num_tasks, count=4, seed=num_tasks)
    runner = _Runner(_method("db_mtl", num_tasks, beta=beta, beta_sigma=beta_sigma))
    for (grads, losses), (want, alpha, buffer) in zip(
        steps, _db_mtl_reference(steps, beta, beta_sigma), strict=True
    ):
        update, weights = runner(grads, losses)
        _assert_update(update, want, alpha[:, None] * buffer)
        nonzero = np.linalg.norm(buffer, axis=1) > 0
        np.testing.assert_allclose(weights[nonzero], alpha[nonzero], rtol=RTOL)
        assert (weights[~nonzero] == 0).all()  # the reference's max/1e-8 on a zero vector
    assert int(runner.weighting.steps.numpy()) == len(steps)


@pytest.mark.parametrize("robust_step_size", [0.01, 1.0])
@pytest.mark.parametrize("kind,num_tasks", DEFINED, ids=DEFINED_IDS)
def test_excess_mtl_matches_libmtl(kind, num_tasks, robust_step_size):
    steps = _steps(kind, num_tasks, count=5, seed=10 + num_tasks)
    runner = _Runner(_method("excess_mtl", num_tasks, robust_step_size=robust_step_size))
    for (grads, losses), (want, loss_weight) in zip(
        steps, _excess_mtl_reference(steps, robust_step_size), strict=True
    ):
        update, weights = runner(grads, losses)
        np.testing.assert_allclose(weights, loss_weight, rtol=RTOL)
        _assert_update(update, want, loss_weight[:, None] * grads)


def test_excess_mtl_zero_gradient_task_waits_for_its_first_estimate():
    """The reference divides by the zero first estimate (NaN weights). mtbench keeps that task's
    exponent until its first positive estimate; the other tasks' weights keep the reference's
    ratios (the normalisation is common to all tasks)."""
    steps = _steps("one_zero", 3, count=5, seed=7)
    runner = _Runner(_method("excess_mtl", 3, robust_step_size=1.0))
    others = [(g[[0, 2]], losses[[0, 2]]) for g, losses in steps]
    for (grads, losses), (_, loss_weight) in zip(
        steps, _excess_mtl_reference(others, 1.0), strict=True
    ):
        update, weights = runner(grads, losses)
        assert np.isfinite(update).all() and np.isfinite(weights).all()
        np.testing.assert_allclose(weights.sum(), 3.0, rtol=1e-6)
        ratio = loss_weight[0] / loss_weight[1]
        np.testing.assert_allclose(weights[0] / weights[2], ratio, rtol=RTOL)
        _assert_update(update, weights @ grads, weights[:, None] * grads)
    # the task's gradient appears: its estimate is recorded and its weight starts moving next step
    grads, losses = steps[-1][0].copy(), steps[-1][1]
    grads[1] = 1.0
    before = runner(grads, losses)[1]
    assert runner.weighting.initial_excess.numpy()[1] > 0
    after = runner(grads, losses)[1]
    assert after[1] / after[0] > before[1] / before[0]


@pytest.mark.parametrize("normalization", ["none", "l2", "loss", "loss+"])
@pytest.mark.parametrize("kind,num_tasks", CASES, ids=CASE_IDS)
def test_mgda_log_matches_famo(kind, num_tasks, normalization):
    if kind == "one_zero" and normalization in ("l2", "loss+"):
        pytest.skip("the reference divides the zero gradient by its zero norm")
    grads, losses = _case(kind, num_tasks, seed=20 + num_tasks)
    update, weights = _Runner(_method("mgda_log", num_tasks, normalization=normalization))(
        grads, losses
    )
    want, want_weights = _mgda_log_reference(grads, losses, normalization)
    _assert_update(update, want, want_weights[:, None] * grads, rtol=2e-5)
    np.testing.assert_allclose(weights, want_weights, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("rescale", [0, 1])
@pytest.mark.parametrize("kind,num_tasks", DEFINED, ids=DEFINED_IDS)
def test_cagrad_log_matches_famo(kind, num_tasks, rescale):
    grads, losses = _case(kind, num_tasks, seed=30 + num_tasks)
    update, weights = _Runner(_method("cagrad_log", num_tasks, rescale=rescale))(grads, losses)
    want, want_weights = _cagrad_log_reference(grads, losses, 0.4, rescale)
    _assert_update(update, want, want_weights[:, None] * grads)
    atol = RTOL * np.abs(want_weights).max()
    np.testing.assert_allclose(weights, want_weights, rtol=RTOL, atol=atol)
    # sum_scale is the reference's overwrite_grad (x T)
    summed, _ = _Runner(_method("cagrad_log", num_tasks, rescale=rescale, sum_scale=True))(
        grads, losses
    )
    _assert_update(summed, num_tasks * want, num_tasks * want_weights[:, None] * grads)


def test_cagrad_log_finds_the_dual_optimum_where_the_references_slsqp_stalls():
    """With one gradient 1000x larger, SLSQP as the reference calls it stops at its starting
    point (``w = (0.5, 0.5)``, reported as a success, dual objective 2.6e7 against 1.5e3 at
    the optimum ``w = (0, 1)``); mtbench's exact solver finds the optimum."""
    grads, losses = _case("one_1000x", 2, seed=32)
    update, weights = _Runner(_method("cagrad_log", 2, rescale=0))(grads, losses)
    stalled, stalled_weights = _cagrad_log_reference(grads, losses, 0.4, 0, True)
    np.testing.assert_allclose(stalled_weights * losses, [0.7, 0.7], rtol=1e-6)
    want, want_weights = _cagrad_log_reference(grads, losses, 0.4, 0)
    np.testing.assert_allclose(weights, want_weights, rtol=1e-5)
    log_grads = grads / losses[:, None]
    # w = (0, 1): d = h_0 + c |h_0| h_1 / |h_1|, its least projection is the larger
    best = log_grads.mean(0) + 0.4 * np.linalg.norm(log_grads.mean(0)) * (
        log_grads[1] / np.linalg.norm(log_grads[1])
    )
    _assert_update(update, best, np.abs(want_weights[:, None] * grads), rtol=1e-5)
    assert (log_grads @ update).min() > (log_grads @ stalled).min()


@pytest.mark.parametrize("kind,num_tasks", DEFINED, ids=DEFINED_IDS)
def test_imtl_log_matches_famo(kind, num_tasks):
    grads, losses = _case(kind, num_tasks, seed=40 + num_tasks)
    update, weights = _Runner(_method("imtl_log", num_tasks))(grads, losses)
    want, want_weights = _imtl_log_reference(grads, losses)
    _assert_update(update, want, want_weights[:, None] * grads)
    atol = RTOL * np.abs(want_weights).max()
    np.testing.assert_allclose(weights, want_weights, rtol=RTOL, atol=atol)


# ------------------------------------------------------------------------------- properties
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_finite_on_zero_gradients(name, num_tasks):
    runner = _Runner(_method(name, num_tasks))
    for grads, losses in [
        _case("one_zero", num_tasks, seed=1),
        (np.zeros((num_tasks, SIZE)), np.ones(num_tasks)),  # a stationary point
        _case("random", num_tasks, seed=2),
    ]:
        update, weights = runner(grads, losses)
        assert update.shape == (SIZE,) and weights.shape == (num_tasks,)
        assert np.isfinite(update).all() and np.isfinite(weights).all(), (name, grads)


@pytest.mark.parametrize("name", NAMES)
def test_task_order_does_not_matter(name):
    steps = _steps("random", 4, count=3, seed=5)
    original = _Runner(_method(name, 4))
    order = [2, 0, 3, 1]
    permuted = _Runner(_method(name, 4))
    for grads, losses in steps:
        update, weights = original(grads, losses)
        permuted_update, permuted_weights = permuted(grads[order], losses[order])
        _assert_update(permuted_update, update, weights[:, None] * grads, rtol=1e-5)
        np.testing.assert_allclose(permuted_weights, weights[order], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["db_mtl", "imtl_log", "cagrad_log", "mgda_log"])
def test_scaling_a_task_loss_does_not_change_the_direction(name):
    """The point of the logarithm: ``k L_t`` has the log-gradient of ``L_t``. The update is
    unchanged, except mgda_log's length, which follows ``c = sum_t a_t / L_t``."""
    grads, losses = _case("random", 3, seed=6)
    scaled_grads, scaled_losses = grads.copy(), losses.copy()
    scaled_grads[0] *= 100.0
    scaled_losses[0] *= 100.0
    update, _ = _Runner(_method(name, 3))(grads, losses)
    scaled, _ = _Runner(_method(name, 3))(_float32(scaled_grads), _float32(scaled_losses))
    if name == "mgda_log":
        scaled *= np.linalg.norm(update) / np.linalg.norm(scaled)
    np.testing.assert_allclose(scaled, update, rtol=1e-4, atol=1e-5 * np.abs(update).max())


def test_db_mtl_gives_every_orthogonal_task_the_largest_norm():
    basis = np.linalg.qr(np.random.default_rng(3).normal(size=(SIZE, 3)))[0].T
    grads = _float32(basis * np.array([[0.1], [1.0], [7.0]]))
    losses = _float32([0.5, 1.0, 2.0])
    update, weights = _Runner(_method("db_mtl", 3, beta=0.0))(grads, losses)
    largest = np.linalg.norm(grads / losses[:, None], axis=1).max()
    np.testing.assert_allclose(basis @ update, np.full(3, largest), rtol=1e-5)
    np.testing.assert_allclose(weights.min(), 1.0, rtol=1e-6)  # the largest is kept as it is


def test_db_mtl_averages_log_gradients_across_steps():
    grads, losses = _case("random", 2, seed=4)
    runner = _Runner(_method("db_mtl", 2, beta=0.9))
    for _ in range(3):
        runner(grads, losses)
    # the same gradients every step: the average is (1 - 0.9^k) h, so the update is the
    # one-step update scaled by (1 - 0.9^4) / (1 - 0.9)
    update, _ = runner(grads, losses)
    once, _ = _Runner(_method("db_mtl", 2, beta=0.9))(grads, losses)
    np.testing.assert_allclose(update, once * (1 - 0.9**4) / 0.1, rtol=1e-5, atol=1e-6)


def test_excess_mtl_weights_sum_to_the_number_of_tasks_and_start_equal():
    steps = _steps("random", 3, count=6, seed=8)
    runner = _Runner(_method("excess_mtl", 3, robust_step_size=1.0))
    update, weights = runner(*steps[0])
    np.testing.assert_allclose(weights, np.ones(3), rtol=1e-6)  # the first step is ew
    np.testing.assert_allclose(update, steps[0][0].sum(0), rtol=1e-5, atol=1e-6)
    for grads, losses in steps[1:]:
        _, weights = runner(grads, losses)
        assert (weights > 0).all()
        np.testing.assert_allclose(weights.sum(), 3.0, rtol=1e-6)
    still = _Runner(_method("excess_mtl", 3, robust_step_size=0.0))
    for grads, losses in steps:
        update, weights = still(grads, losses)
        np.testing.assert_allclose(weights, np.ones(3), rtol=1e-6)
        np.testing.assert_allclose(update, grads.sum(0), rtol=1e-5, atol=1e-5)


def test_excess_mtl_favours_the_task_further_from_convergence():
    """Task 0's gradient stays as large as at the start; task 1's shrinks as if converging: the
    preconditioned estimate ``g' diag(S)^-1/2 g`` falls for task 1, so task 0 gains weight."""
    rng = np.random.default_rng(9)
    base = rng.normal(size=(2, SIZE))
    runner = _Runner(_method("excess_mtl", 2, robust_step_size=1.0))
    for k in range(6):
        grads = _float32(base * np.array([[1.0], [0.5**k]]))
        _, weights = runner(grads, np.ones(2))
    assert weights[0] > 1.0 > weights[1]


def test_mgda_log_is_a_common_descent_direction_of_the_log_losses():
    for seed in range(5):
        grads, losses = _case("conflicting", 4, seed=seed)
        update, weights = _Runner(_method("mgda_log", 4))(grads, losses)
        assert (weights >= -1e-7).all()
        np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-6)
        log_grads = grads / losses[:, None]
        assert (log_grads @ update >= -1e-6 * np.linalg.norm(log_grads, axis=1).max() ** 2).all()


@pytest.mark.parametrize("c", [0.0, 0.4, 1.0])
def test_cagrad_log_stays_in_its_ball_around_the_mean_log_gradient(c):
    grads, losses = _case("conflicting", 3, seed=11)
    update, _ = _Runner(_method("cagrad_log", 3, c=c, rescale=0))(grads, losses)
    mean = (grads / losses[:, None]).mean(0)
    if c == 0.0:
        np.testing.assert_allclose(update, mean, rtol=1e-5, atol=1e-6)
    assert np.linalg.norm(update - mean) <= c * np.linalg.norm(mean) * (1 + 1e-5) + 1e-7
    # a zero task gradient: the dual optimum puts all weight on it and the update is the mean
    grads[1] = 0.0
    grads[[0, 2]] = np.abs(grads[[0, 2]])  # agreeing, so no other combination does better
    update, weights = _Runner(_method("cagrad_log", 3, c=c, rescale=0))(grads, losses)
    np.testing.assert_allclose(update, (grads / losses[:, None]).mean(0), rtol=1e-5, atol=1e-6)


def test_imtl_log_projects_equally_on_every_unit_log_gradient():
    grads, losses = _case("random", 4, seed=12)
    update, weights = _Runner(_method("imtl_log", 4))(grads, losses)
    log_grads = grads / (losses + 1e-8)[:, None]
    projections = log_grads @ update / np.linalg.norm(log_grads, axis=1)
    np.testing.assert_allclose(projections, projections.mean(), rtol=1e-5)
    np.testing.assert_allclose((weights * (losses + 1e-8)).sum(), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", ["mgda_log", "imtl_log"])
def test_feature_variants_scale_each_row_by_its_loss(name):
    """``upper_bound`` hands over each task's gradient of the (flattened) batch features;
    the log variant divides each row by its own loss, whatever the row's length."""
    weighting = _method(name, 3, upper_bound=True)
    assert weighting.gradient_of == "features"
    features = _float32(np.random.default_rng(13).normal(size=(3, 16 * 8)))  # batch 16 x 8
    losses = _float32([0.5, 1.0, 2.0])
    update, weights = _Runner(weighting)(features, losses)
    plain, plain_weights = _Runner(_method(name, 3))(features, losses)
    np.testing.assert_array_equal(update, plain)
    np.testing.assert_array_equal(weights, plain_weights)
    if name == "imtl_log":
        want, want_weights = _imtl_log_reference(features, losses)
    else:
        want, want_weights = _mgda_log_reference(features, losses)
    _assert_update(update, want, want_weights[:, None] * features, rtol=2e-5)


def test_a_task_whose_loss_is_not_positive_contributes_no_log_gradient():
    grads, losses = _case("random", 3, seed=14)
    losses[1] = 0.0
    update, weights = _Runner(_method("cagrad_log", 3))(grads, losses)
    assert np.isfinite(update).all() and weights[1] == 0.0


# ------------------------------------------------------------------------------------ state
@pytest.mark.parametrize("name", STATEFUL)
def test_state_lives_in_the_layer_weights(name):
    """A copy given the original's weights continues exactly like it: a checkpoint is enough.
    (The ``[T, P]`` state is created by the first call; the copy makes one before taking the
    original's weights.)"""
    steps = _steps("random", 3, count=4, seed=15)
    original = _Runner(_method(name, 3))
    for grads, losses in steps[:3]:
        original(grads, losses)
    copy = _Runner(_method(name, 3))
    copy(*steps[0])
    assert len(copy.weighting.variables) == len(original.weighting.variables)
    for target, source in zip(copy.weighting.variables, original.weighting.variables, strict=True):
        target.assign(source)
    for got, want in zip(copy(*steps[3]), original(*steps[3]), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", STATEFUL)
def test_a_skipped_non_finite_step_leaves_the_state_alone(name):
    steps = _steps("random", 3, count=2, seed=16)
    runner = _Runner(_method(name, 3))
    runner(*steps[0])
    before = [v.numpy().copy() for v in runner.weighting.variables]
    bad = steps[1][0].copy()
    bad[0, 0] = np.nan
    update, _ = runner(bad, steps[1][1])
    assert not np.isfinite(update).all()  # the trainer sees it
    for saved, variable in zip(before, runner.weighting.variables, strict=True):
        np.testing.assert_array_equal(variable.numpy(), saved)


def test_a_different_gradient_size_is_refused():
    runner = _Runner(_method("db_mtl", 2))
    runner(*_case("random", 2, seed=17))
    with pytest.raises(ValueError, match="use one weighting instance per model"):
        runner.weighting.aggregate(tf.zeros([2, SIZE + 1]), tf.ones([2]))


@pytest.mark.parametrize(
    "name,key,value",
    [
        ("db_mtl", "beta", 1.0), ("db_mtl", "beta", -0.1), ("db_mtl", "beta_sigma", -1.0),
        ("excess_mtl", "robust_step_size", -0.01), ("mgda_log", "normalization", "norm"),
        ("cagrad_log", "c", -0.4), ("imtl_log", "upper_bound", "yes"),
    ],
)  # fmt: skip
def test_out_of_range_options_name_the_key(name, key, value):
    with pytest.raises(ValueError, match=rf"^weighting\.{key}="):
        registry.build("weighting", {"name": name, key: value})


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trips_and_the_yaml_holds_the_defaults(name):
    import yaml

    plugin = registry.get("weighting", name)
    weighting = registry.build("weighting", {"name": name})
    clone = type(weighting).from_config(weighting.get_config())
    defaults = {f.name: f.default for f in dataclasses.fields(plugin.config)}
    for field, default in defaults.items():
        assert getattr(clone, field) == getattr(weighting, field) == default
    path = Path(__file__).parents[1] / "conf" / "weighting" / f"{name}.yaml"
    text = yaml.safe_load(path.read_text())
    schema = registry.schema_name("weighting", name)  # the stored schema the file extends
    assert text.pop("defaults") == [f"/{schema}@_here_", "_self_"]
    assert text == defaults


# --------------------------------------------------------------------------- a tiny training
def _train(config: dict, checkpoint_dir: Path | None = None, resume: bool = False):
    return train_tiny(config, checkpoint_dir=checkpoint_dir, resume=resume)


TRAINED = [
    {"name": "db_mtl"},
    {"name": "db_mtl", "beta_sigma": 0.5},
    {"name": "excess_mtl", "robust_step_size": 1.0},
    {"name": "mgda_log"},
    {"name": "mgda_log", "upper_bound": True, "normalization": "loss+"},
    {"name": "cagrad_log"},
    {"name": "imtl_log"},
    {"name": "imtl_log", "upper_bound": True},
]


@pytest.mark.parametrize("config", TRAINED, ids=lambda c: "-".join(map(str, c.values())))
def test_trains_the_joint_model(config):
    weighting, _, _ = _train(config)  # finite losses, weights, state; the model moved
    if config["name"] == "db_mtl":
        assert int(weighting.steps.numpy()) == 4  # 2 epochs of 2 steps
    if config["name"] == "excess_mtl":
        assert not np.allclose(weighting.log_weights.numpy(), 0.0)


@pytest.mark.parametrize("name", STATEFUL)
def test_a_resumed_run_restores_the_per_parameter_state(name, tmp_path):
    """The ``[T, P]`` state is created when the trainer traces its step, before it restores
    ``last.npz``; a resumed run starts from the saved values."""
    weighting, _, _ = _train({"name": name}, checkpoint_dir=tmp_path)
    saved = [v.numpy().copy() for v in weighting.variables]
    assert any(v.ndim == 2 for v in saved)
    resumed, _, result = _train({"name": name}, checkpoint_dir=tmp_path, resume=True)
    assert result.resumed_from is not None
    for want, variable in zip(saved, resumed.variables, strict=True):
        np.testing.assert_array_equal(variable.numpy(), want)
