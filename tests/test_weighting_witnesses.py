"""Witnesses of issue 12: gradient matrices on which float32 Gram matrices gave wrong results.

Each case runs the method as the trainer does (float32 ``[T, P]`` gradients, inside a
``tf.function``) and compares it with an independent float64 numpy implementation of the
reference formula written here, on the same float32-rounded gradients. On the float32 Gram
matrices these methods used before, every test here failed.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import minimize

from mtbench import registry
from mtbench_plugins.weighting.common import gramian

FLOAT32_EPSILON = float(np.finfo(np.float32).eps)


def _method(name: str, num_tasks: int, **options):
    weighting = registry.build("weighting", {"name": name, **options})
    weighting.setup([f"task{t}" for t in range(num_tasks)])
    return weighting


def _float32(grads) -> np.ndarray:
    """The gradients as the trainer hands them over (float32), in float64 for the references."""
    return np.asarray(grads, np.float32).astype(np.float64)


def _aggregate(weighting, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    step = tf.function(weighting.aggregate)
    update, weights = step(tf.constant(grads, tf.float32), tf.ones([grads.shape[0]]))
    assert update.dtype == tf.float32 and weights.dtype == tf.float32
    return update.numpy().astype(np.float64), weights.numpy().astype(np.float64)


# ----------------------------------------------------------------------------------- CAGrad
def _cagrad_exact_2d(grads: np.ndarray, c: float) -> np.ndarray:
    """CAGrad's primal problem ``argmax_{|d - g0| <= c |g0|} min_i <g_i, d>`` (before any
    rescaling) for two-dimensional gradients, by search over the circle ``|d - g0| = c |g0|``
    (the optimum lies on it unless the gradients are Pareto-stationary): a fine grid, then
    golden-section search around its best point."""
    g0 = grads.mean(0)
    radius = c * np.linalg.norm(g0)

    def value(theta: float) -> float:
        return float((grads @ (g0 + radius * np.array([np.cos(theta), np.sin(theta)]))).min())

    grid = np.linspace(0.0, 2 * np.pi, 2**16, endpoint=False)
    best = grid[np.argmax([value(t) for t in grid])]
    low, high = best - 2 * (grid[1] - grid[0]), best + 2 * (grid[1] - grid[0])
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    while high - low > 1e-15:
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if value(a) < value(b):
            low = a
        else:
            high = b
    theta = (low + high) / 2
    return g0 + radius * np.array([np.cos(theta), np.sin(theta)])


def _cagrad_official(grads: np.ndarray, alpha: float) -> np.ndarray:
    """The authors' code (github.com/Cranial-XIX/CAGrad, nyuv2/utils.py ``cagrad``, rescale=1,
    before ``overwrite_grad``'s multiplication by T), transcribed to numpy: SciPy's SLSQP with
    its default tolerance on the dual with ``+1e-8`` inside the square root, then
    ``lambda = c / (|g_w| + 1e-8)``."""
    num_tasks = len(grads)
    gram = grads @ grads.T
    g0_norm = np.sqrt(gram.mean() + 1e-8)
    b = np.ones(num_tasks) / num_tasks
    c = alpha * g0_norm + 1e-8

    def objective(x):
        return x @ gram @ b + c * np.sqrt(x @ gram @ x + 1e-8)

    w = minimize(
        objective, b.copy(), bounds=[(0, 1)] * num_tasks,
        constraints={"type": "eq", "fun": lambda x: 1 - x.sum()},
    ).x  # fmt: skip
    gw = w @ grads
    return (grads.mean(0) + c / (np.linalg.norm(gw) + 1e-8) * gw) / (1 + alpha**2)


def test_cagrad_update_stays_in_its_ball_when_task_gradients_nearly_cancel():
    # float32 Gram matrices gave [0, 575.05] (weights [5.75e6, 5.75e6, 0.287])
    grads = _float32([[1.0, 0.0], [-1.0, 1e-4], [0.0, 1.0]])
    c = 0.4
    update, weights = _aggregate(_method("cagrad", 3, c=c, rescale=1), grads)
    g0 = grads.mean(0)
    d = update * (1 + c**2)  # rescale=1 divides the update by 1 + c^2
    assert np.linalg.norm(d - g0) <= c * np.linalg.norm(g0) * (1 + 1e-6)
    # the logged float32 weights (about [1149, 1149, 0.29]) give the update up to their rounding
    rounding = 2 * FLOAT32_EPSILON * np.abs(weights) @ np.abs(grads)
    assert (np.abs(update - weights @ grads) <= rounding).all()
    # the exact optimum: [2.0e-5, 0.40234] after rescaling
    exact = _cagrad_exact_2d(grads, c)
    np.testing.assert_allclose(update, exact / (1 + c**2), atol=2e-6)
    assert (grads @ d).min() >= (grads @ exact).min() - 1e-6
    # the authors' code gives about [-0.0040, 0.4022]: its +1e-8 inside the square root and
    # SLSQP's tolerance move w by ~1e-6, which turns g_w (|g_w| ~ 5e-5) by ~0.03 rad
    official = _cagrad_official(grads, c)
    np.testing.assert_allclose(official, [-0.0040, 0.4022], atol=1e-3)
    np.testing.assert_allclose(update, official, atol=5e-3)


def test_cagrad_logs_modest_weights_when_a_task_gradient_is_zero():
    # float32 Gram matrices logged ~2e7 for the zero gradient (with the right update)
    c = 0.4
    grads = _float32([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    update, weights = _aggregate(_method("cagrad", 3, c=c), grads)
    # the dual optimum is w = e_1 (objective w'G g0 + c|g0| |g_w| = 0, its least value), so
    # g_w = 0 and the reference formula d = g0 + lambda g_w gives the mean gradient
    np.testing.assert_allclose(update, grads.mean(0) / (1 + c**2), rtol=1e-6)
    np.testing.assert_allclose(weights, np.full(3, 1 / 3 / (1 + c**2)), rtol=1e-6)
    # and among random gradients
    rng = np.random.default_rng(0)
    grads = _float32(np.vstack([rng.normal(size=(2, 20)), np.zeros((1, 20)), rng.normal(size=20)]))
    update, weights = _aggregate(_method("cagrad", 4, c=c, rescale=0), grads)
    assert np.isfinite(weights).all() and np.abs(weights).max() < 10, weights
    g0 = grads.mean(0)
    assert np.linalg.norm(update - g0) <= c * np.linalg.norm(g0) * (1 + 1e-6)


def test_cagrad_sum_scale_multiplies_the_update_by_the_number_of_tasks():
    # the authors' overwrite_grad: "newgrad = newgrad * T  # to match the sum loss"
    grads = _float32(np.random.default_rng(1).normal(size=(3, 10)))
    update, weights = _aggregate(_method("cagrad", 3), grads)
    summed, summed_weights = _aggregate(_method("cagrad", 3, sum_scale=True), grads)
    np.testing.assert_allclose(summed, 3 * update, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(summed_weights, 3 * weights, rtol=1e-6)


# ---------------------------------------------------------------------------------- GradVac
def _gradvac_reference(grads, orders, beta, target):
    """Gradient Vaccine on the vectors themselves (Wang et al. 2021, Algorithm 2; LibMTL's
    GradVac without its ``+1e-8`` guards), float64. Returns the coefficients ``C`` with
    ``g_i' = sum_k C[i, k] g_k`` and the updated targets."""
    num_tasks = len(grads)
    target = np.array(target, np.float64)
    coefficients = np.eye(num_tasks)
    for i in range(num_tasks):
        for j in orders[i]:
            adjusted = coefficients[i] @ grads
            own, other = np.linalg.norm(adjusted), np.linalg.norm(grads[j])
            phi = adjusted @ grads[j] / (own * other)
            phi_hat = target[i, j]
            if phi < phi_hat:
                root_hat = np.sqrt(1 - phi_hat**2)
                shift = own * (phi_hat * np.sqrt(1 - phi**2) - phi * root_hat) / (other * root_hat)
                coefficients[i, j] += shift
            target[i, j] = (1 - beta) * phi_hat + beta * phi
    return coefficients, target


def test_gradvac_measures_the_corrected_gradient_that_nearly_cancels():
    # float32 Gram matrices stored target[0, 2] = 0.0 and gave the third weight 1.0
    grads = _float32([[1.0, 0.0, 0.0], [-1.0, 1e-4, 0.0], [0.3, -1.0, 1.0]])
    orders = [[1, 2], [0, 2], [0, 1]]  # row i: the tasks g_i is corrected against, in order
    gradvac = _method("gradvac", 3, beta=0.5)
    gram = gramian(tf.constant(grads, tf.float32))
    coefficients, target = gradvac.coefficients(gram, tf.constant(orders), tf.zeros([3, 3]))
    expected_coefficients, expected_target = _gradvac_reference(
        grads, orders, 0.5, np.zeros((3, 3))
    )
    np.testing.assert_allclose(expected_target[0, 2], -0.3458, atol=1e-4)
    np.testing.assert_allclose(expected_coefficients.sum(0)[2], 1.000096, atol=1e-6)
    np.testing.assert_allclose(target.numpy(), expected_target, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(coefficients.numpy(), expected_coefficients, rtol=1e-6, atol=1e-7)
    weights = tf.reduce_sum(coefficients, axis=0).numpy()
    np.testing.assert_allclose(weights, expected_coefficients.sum(0), rtol=1e-7, atol=1e-7)


# ----------------------------------------------------------------------------------- IMTL-G
def _imtl_reference(grads: np.ndarray) -> np.ndarray:
    """IMTL-G's closed form ``a_{2:T} = g_1 U' (D U')^-1`` on the vectors (Liu et al. 2021;
    LibMTL's IMTL), float64."""
    units = grads / np.linalg.norm(grads, axis=1, keepdims=True)
    d, u = grads[0] - grads[1:], units[0] - units[1:]
    rest = grads[0] @ u.T @ np.linalg.inv(d @ u.T)
    return np.array([1 - rest.sum(), *rest])


@pytest.mark.parametrize("spread", [1e-3, 3e-4])
def test_imtl_matches_its_closed_form_on_nearly_parallel_gradients(spread):
    # float32 Gram matrices were off by 2.4% (spread 1e-3) and 43% (3e-4)
    rng = np.random.default_rng(0)
    direction = rng.normal(size=40)
    grads = _float32([s * (direction + spread * rng.normal(size=40)) for s in (1.0, 2.0, 0.5)])
    update, weights = _aggregate(_method("imtl", 3), grads)
    expected = _imtl_reference(grads)
    np.testing.assert_allclose(weights, expected, rtol=1e-5)
    np.testing.assert_allclose(update, expected @ grads, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ Aligned-MTL
def _aligned_mtl_reference(grads: np.ndarray) -> np.ndarray:
    """Aligned-MTL's weights ``B 1`` (Senushkin et al. 2023; LibMTL's Aligned_MTL, scale
    ``min``), float64: eigenvalues at most ``max(lambda) T eps_float32`` are dropped."""
    gram = grads @ grads.T
    eigenvalues, vectors = np.linalg.eigh(gram)
    kept = eigenvalues > eigenvalues.max() * len(grads) * FLOAT32_EPSILON
    eigenvalues, vectors = eigenvalues[kept], vectors[:, kept]
    b = np.sqrt(eigenvalues.min()) * (vectors / np.sqrt(eigenvalues)) @ vectors.T
    return b.sum(0)


def test_aligned_mtl_decides_the_rank_on_the_exact_gram_matrix():
    # g_2 = g_1 + delta e_2: the smallest eigenvalue is about delta^2 / 2, the threshold
    # 2 * 2 * eps_float32; with delta^2 = 8.24 * 2^-23 (3% above it) float32's Gram matrix
    # rounds 1 + delta^2 to 1 + 8 * 2^-23, dropped the direction and gave weights [1, 1]
    for ulps, rank in [(8.24, 2), (7.9, 1)]:
        delta = np.sqrt(ulps * 2.0**-23)
        grads = _float32([[1.0, 0.0], [1.0, delta]])
        eigenvalues = np.linalg.eigvalsh(grads @ grads.T)
        assert (eigenvalues > eigenvalues.max() * 2 * FLOAT32_EPSILON).sum() == rank
        update, weights = _aggregate(_method("aligned_mtl", 2), grads)
        expected = _aligned_mtl_reference(grads)
        np.testing.assert_allclose(weights, expected, rtol=1e-6)
        np.testing.assert_allclose(update, expected @ grads, rtol=1e-6, atol=1e-9)
