"""Gradient-level weightings, tested on small synthetic gradient sets by what each one promises.

Each method runs as the trainer runs it: inside a ``tf.function``, on float32 ``[T, P]`` gradients.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf
from helpers import aggregate, weighting_for
from scipy.optimize import minimize

import mtbench
from mtbench import registry

GRADIENT_METHODS = [
    name
    for name in mtbench.list_plugins("weighting")
    if registry.get("weighting", name).factory.level == "gradient"
]
# Methods whose result does not depend on the order of the tasks (no random order, no drops).
SYMMETRIC = ["aligned_mtl", "cagrad", "gradnorm", "imtl", "mgda", "nashmtl", "upgrad"]
NON_NEGATIVE = ["cagrad", "graddrop", "gradnorm", "gradvac", "mgda", "nashmtl", "pcgrad", "upgrad"]


def _random_grads(num_tasks: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(num_tasks, size)) * rng.uniform(0.2, 3.0, size=(num_tasks, 1))


# ------------------------------------------------------------------------------ every method
@pytest.mark.parametrize("name", GRADIENT_METHODS)
@pytest.mark.parametrize("num_tasks", [2, 4])
def test_update_and_weights_are_finite(name, num_tasks):
    weighting = weighting_for(name, num_tasks)
    for grads in (
        _random_grads(num_tasks, 40, seed=num_tasks),
        np.zeros((num_tasks, 40)),  # a stationary point
        np.vstack([np.zeros((1, 40)), _random_grads(num_tasks - 1, 40, seed=1)]),
        np.vstack([_random_grads(1, 40, seed=2)] * num_tasks),  # identical gradients
    ):
        update, weights = aggregate(weighting, grads, np.linspace(0.5, 2, num_tasks))
        assert update.shape == (40,) and weights.shape == (num_tasks,)
        assert np.isfinite(update).all() and np.isfinite(weights).all(), (name, grads)


@pytest.mark.parametrize("name", NON_NEGATIVE)
def test_weights_are_non_negative_where_the_method_says_so(name):
    weighting = weighting_for(name, 4)
    for seed in range(5):
        _, weights = aggregate(weighting, _random_grads(4, 30, seed))
        assert (weights >= -1e-6).all(), (name, weights)


@pytest.mark.parametrize("name", SYMMETRIC)
def test_symmetric_methods_do_not_depend_on_task_order(name):
    grads = _random_grads(4, 25, seed=3)
    losses = np.array([0.5, 1.0, 1.5, 2.0])
    update, weights = aggregate(weighting_for(name, 4), grads, losses)
    for order in ([3, 1, 0, 2], [1, 2, 3, 0]):
        permuted_update, permuted_weights = aggregate(
            weighting_for(name, 4), grads[order], losses[order]
        )
        np.testing.assert_allclose(permuted_update, update, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(permuted_weights, weights[order], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_a_mistyped_option_value_names_the_key(name):
    plugin = registry.get("weighting", name)
    for key in plugin.config.__dataclass_fields__:
        bad = {"upper_bound": "yes"}.get(key, -7)
        with pytest.raises(ValueError, match=rf"^weighting\.{key}=") as error:
            registry.build("weighting", {"name": name, key: bad})
        assert "\n" not in str(error.value)


# ----------------------------------------------------------------------------------- PCGrad
def test_pcgrad_removes_exactly_the_conflicting_component_of_two_gradients():
    g1, g2 = np.array([1.0, 0.0, 1.0]), np.array([-1.0, 2.0, 0.5])
    assert g1 @ g2 < 0
    pcgrad = weighting_for("pcgrad", 2)
    projected = pcgrad.project(tf.constant(np.stack([g1, g2]), tf.float32)).numpy()
    np.testing.assert_allclose(projected[0], g1 - (g1 @ g2) / (g2 @ g2) * g2, atol=1e-6)
    np.testing.assert_allclose(projected[1], g2 - (g1 @ g2) / (g1 @ g1) * g1, atol=1e-6)
    assert projected[0] @ g2 >= -1e-6 and projected[1] @ g1 >= -1e-6
    update, _ = aggregate(pcgrad, [g1, g2])
    np.testing.assert_allclose(update, projected.sum(0), atol=1e-6)


@pytest.mark.parametrize("num_tasks", [2, 3, 4])
def test_pcgrad_leaves_non_conflicting_gradients_unchanged(num_tasks):
    grads = np.abs(_random_grads(num_tasks, 10, seed=num_tasks))  # pairwise dot products > 0
    pcgrad = weighting_for("pcgrad", num_tasks)
    projected = pcgrad.project(tf.constant(grads, tf.float32)).numpy()
    np.testing.assert_allclose(projected, grads, rtol=1e-6)
    update, weights = aggregate(pcgrad, grads)
    np.testing.assert_allclose(update, grads.sum(0), rtol=1e-5)
    np.testing.assert_allclose(weights, np.ones(num_tasks))


@pytest.mark.parametrize("num_tasks", [3, 4])
def test_pcgrad_projected_gradient_does_not_conflict_with_the_last_one_it_met(num_tasks):
    grads = _random_grads(num_tasks, 6, seed=7)
    pcgrad = weighting_for("pcgrad", num_tasks)
    for perm_seed in range(4):
        rng = np.random.default_rng(perm_seed)
        orders = np.stack(
            [rng.permutation([j for j in range(num_tasks) if j != i]) for i in range(num_tasks)]
        )
        projected = pcgrad.project(tf.constant(grads, tf.float32), tf.constant(orders)).numpy()
        for i in range(num_tasks):
            last = orders[i, -1]
            scale = np.linalg.norm(projected[i]) * np.linalg.norm(grads[last])
            assert projected[i] @ grads[last] >= -1e-5 * scale
            # and the sequential reference algorithm agrees
            expected = grads[i].copy()
            for j in orders[i]:
                if expected @ grads[j] < 0:
                    expected -= (expected @ grads[j]) / (grads[j] @ grads[j]) * grads[j]
            np.testing.assert_allclose(projected[i], expected, rtol=1e-4, atol=1e-5)


def test_pcgrad_random_order_is_reproducible_from_the_seed():
    grads = _random_grads(4, 8, seed=1)
    grads[1] = -grads[0] + 0.3 * grads[1]  # conflicts make the order matter
    runs = [aggregate(weighting_for("pcgrad", 4, seed=5), grads) for _ in range(2)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])


# ------------------------------------------------------------------------------------- MGDA
def _simplex_grid(num_tasks: int, steps: int) -> np.ndarray:
    points = [
        np.array([*head, steps - sum(head)]) / steps
        for head in itertools.product(range(steps + 1), repeat=num_tasks - 1)
        if sum(head) <= steps
    ]
    return np.stack(points)


MGDA_CASES = [
    np.array([[1.0, 0.0], [0.0, 1.0]]),  # interior, orthogonal
    np.array([[1.0, 0.2], [3.0, 0.0]]),  # the min-norm point is a vertex
    np.array([[1.0, 1.0], [-1.0, 0.5]]),  # conflicting
    np.array([[2.0, 0.0, 1.0], [0.0, 1.0, 0.5], [1.0, 1.0, -2.0]]),
    np.array([[1.0, 0.0], [-0.5, 1.0], [-0.5, -1.0]]),  # the origin is inside the hull
    _random_grads(3, 7, seed=11),
    _random_grads(2, 9, seed=12),
]


@pytest.mark.parametrize("grads", MGDA_CASES, ids=range(len(MGDA_CASES)))
def test_mgda_returns_the_min_norm_point_of_the_convex_hull(grads):
    update, weights = aggregate(weighting_for("mgda", len(grads)), grads)
    assert (weights >= -1e-7).all() and abs(weights.sum() - 1) < 1e-5
    np.testing.assert_allclose(update, weights @ grads, atol=1e-6)
    grid = _simplex_grid(len(grads), 2000 if len(grads) == 2 else 300)
    points = grid @ grads
    norms2 = (points**2).sum(1)
    brute = points[np.argmin(norms2)]
    assert update @ update <= brute @ brute + 1e-6
    # the hull is convex and x* is its point nearest 0: |x - x*|^2 <= |x|^2 - |x*|^2 for x in it
    assert (update - brute) @ (update - brute) <= brute @ brute - update @ update + 1e-6
    # the min-norm point is a common descent direction: <g_t, x*> >= |x*|^2 for every task
    assert (grads @ update >= update @ update - 1e-5).all()


def test_mgda_upper_bound_asks_for_feature_gradients_and_normalization_keeps_raw_gradients():
    assert weighting_for("mgda", 2).gradient_of == "shared_parameters"
    assert weighting_for("mgda", 2, upper_bound=True).gradient_of == "features"
    grads = np.array([[10.0, 0.0], [0.0, 1.0]])
    update, weights = aggregate(weighting_for("mgda", 2, normalization="l2"), grads)
    np.testing.assert_allclose(weights, [0.5, 0.5], atol=1e-6)  # equal once normalised
    np.testing.assert_allclose(update, [5.0, 0.5], atol=1e-5)  # applied to the raw gradients


# ----------------------------------------------------------------------------------- CAGrad
@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_cagrad_with_c_zero_is_the_mean_gradient(num_tasks):
    grads = _random_grads(num_tasks, 12, seed=num_tasks)
    update, weights = aggregate(weighting_for("cagrad", num_tasks, c=0.0), grads)
    np.testing.assert_allclose(update, grads.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weights, np.full(num_tasks, 1 / num_tasks), atol=1e-6)


def _cagrad_dual(w, gram, c):
    mean = np.full(len(gram), 1 / len(gram))
    return w @ gram @ mean + c * np.sqrt(mean @ gram @ mean) * np.sqrt(max(w @ gram @ w, 0) + 1e-12)


@pytest.mark.parametrize("num_tasks,c", [(2, 0.4), (3, 0.4), (3, 0.9), (5, 0.5)])
def test_cagrad_solves_its_dual_and_stays_in_the_ball_around_the_mean(num_tasks, c):
    grads = _random_grads(num_tasks, 15, seed=20 + num_tasks)
    grads[1] = -0.8 * grads[0] + 0.3 * grads[1]  # a conflict
    gram = grads @ grads.T
    update, _ = aggregate(weighting_for("cagrad", num_tasks, c=c, rescale=0), grads)
    g0 = grads.mean(0)
    assert np.linalg.norm(update - g0) <= c * np.linalg.norm(g0) * (1 + 1e-4)
    # the dual optimum, by SciPy from every vertex: ours is at least as good
    reference = min(
        minimize(
            _cagrad_dual, start, args=(gram, c), method="SLSQP", bounds=[(0, 1)] * num_tasks,
            constraints={"type": "eq", "fun": lambda w: w.sum() - 1},
            options={"ftol": 1e-14, "maxiter": 1000},
        ).fun
        for start in np.eye(num_tasks) * 0.9 + 0.1 / num_tasks
    )  # fmt: skip
    w = np.linalg.lstsq(grads.T, update - g0, rcond=None)[0]
    w = w / w.sum()
    assert _cagrad_dual(w, gram, c) <= reference + 1e-5 * abs(reference) + 1e-7
    # the worst task improves at least as much as under the mean gradient
    assert (grads @ update).min() >= (grads @ g0).min() - 1e-6


# ----------------------------------------------------------------------------------- IMTL-G
@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_imtl_projections_on_every_unit_gradient_are_equal(num_tasks):
    grads = _random_grads(num_tasks, 20, seed=30 + num_tasks)
    update, weights = aggregate(weighting_for("imtl", num_tasks), grads)
    units = grads / np.linalg.norm(grads, axis=1, keepdims=True)
    projections = units @ update
    np.testing.assert_allclose(projections, projections[0], rtol=1e-4)
    assert abs(weights.sum() - 1) < 1e-5


def test_imtl_matches_the_papers_closed_form():
    grads = _random_grads(3, 10, seed=40)
    _, weights = aggregate(weighting_for("imtl", 3), grads)
    units = grads / np.linalg.norm(grads, axis=1, keepdims=True)
    d, u = grads[0] - grads[1:], units[0] - units[1:]
    rest = grads[0] @ u.T @ np.linalg.inv(d @ u.T)
    np.testing.assert_allclose(weights, [1 - rest.sum(), *rest], rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------- UPGrad
def test_upgrad_result_conflicts_with_no_task():
    for num_tasks, seed in [(2, 0), (3, 1), (3, 2), (5, 3), (5, 4)]:
        grads = _random_grads(num_tasks, 8, seed)
        grads[1] = -grads[0] + 0.2 * grads[1]
        update, weights = aggregate(weighting_for("upgrad", num_tasks), grads)
        assert (
            grads @ update >= -1e-5 * np.linalg.norm(update) * np.linalg.norm(grads, axis=1)
        ).all()
        assert (weights >= 1 / num_tasks - 1e-6).all()  # each projection keeps its own share


def test_upgrad_is_the_mean_gradient_without_conflicts():
    grads = np.abs(_random_grads(3, 10, seed=5))
    update, _ = aggregate(weighting_for("upgrad", 3), grads)
    np.testing.assert_allclose(update, grads.mean(0), rtol=1e-5)


def test_upgrad_projections_match_a_generic_solver():
    grads = _random_grads(3, 6, seed=9)
    grads[2] = -grads[0] - 0.5 * grads[1]
    _, weights = aggregate(weighting_for("upgrad", 3), grads)
    gram = grads @ grads.T
    gram = gram / np.trace(gram) + 1e-4 * np.eye(3)
    expected = np.zeros(3)
    for i in range(3):
        lower = np.eye(3)[i] / 3
        result = minimize(
            lambda v: v @ gram @ v, lower, jac=lambda v: 2 * gram @ v, method="L-BFGS-B",
            bounds=[(low, None) for low in lower], options={"ftol": 1e-15, "gtol": 1e-12},
        )  # fmt: skip
        expected += result.x
    np.testing.assert_allclose(weights, expected, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------ Aligned-MTL
@pytest.mark.parametrize("scale_mode", ["min", "median", "rmse"])
def test_aligned_gradients_are_orthogonal_with_equal_norms(scale_mode):
    grads = _random_grads(3, 12, seed=50)
    aligned_mtl = weighting_for("aligned_mtl", 3, scale_mode=scale_mode)
    b = tf.function(aligned_mtl.alignment)(tf.constant(grads @ grads.T, tf.float32)).numpy()
    aligned = b @ grads
    gram = aligned @ aligned.T
    np.testing.assert_allclose(gram, gram[0, 0] * np.eye(3), atol=1e-4 * gram[0, 0])
    eigenvalues = np.linalg.eigvalsh(grads @ grads.T)
    expected = {"min": eigenvalues[0], "median": eigenvalues[1], "rmse": eigenvalues.mean()}
    np.testing.assert_allclose(gram[0, 0], expected[scale_mode], rtol=1e-4)
    update, weights = aggregate(aligned_mtl, grads)
    np.testing.assert_allclose(update, aligned.sum(0), rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------- Nash-MTL
@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_nashmtl_weights_solve_the_bargaining_equation(num_tasks):
    grads = _random_grads(num_tasks, 20, seed=60 + num_tasks)
    gram = grads @ grads.T
    update, alpha = aggregate(weighting_for("nashmtl", num_tasks, max_norm=0.0), grads)
    assert (alpha > 0).all()
    np.testing.assert_allclose(gram @ alpha, 1 / alpha, rtol=1e-3)
    np.testing.assert_allclose(update, alpha @ grads, rtol=1e-4, atol=1e-6)


def test_nashmtl_orthogonal_gradients_get_inverse_norm_weights_and_updates_are_clipped():
    grads = np.diag([2.0, 0.5, 4.0])
    _, alpha = aggregate(weighting_for("nashmtl", 3, max_norm=0.0), grads)
    np.testing.assert_allclose(alpha, [0.5, 2.0, 0.25], rtol=1e-5)
    update, _ = aggregate(weighting_for("nashmtl", 3, max_norm=0.1), grads * 100)
    np.testing.assert_allclose(np.linalg.norm(update), 0.1, rtol=1e-5)


def test_nashmtl_update_every_k_steps_reuses_the_last_weights():
    nashmtl = weighting_for("nashmtl", 2, update_weights_every=3, max_norm=0.0)
    assert nashmtl.skips_gradients and not weighting_for("nashmtl", 2).skips_gradients
    needed = tf.function(nashmtl.gradients_needed)
    pattern = [bool(needed()) for _ in range(7)]
    assert pattern == [True, False, False, True, False, False, True]
    _, alpha = aggregate(nashmtl, np.diag([2.0, 4.0]))
    np.testing.assert_allclose(nashmtl.current_weights().numpy(), alpha, rtol=1e-6)


# ---------------------------------------------------------------------------------- GradVac
def test_gradvac_first_step_is_pcgrad_and_later_steps_reach_the_target_similarity():
    grads = np.array([[1.0, 0.0, 1.0], [-1.0, 2.0, 0.5]])
    gram = tf.constant(grads @ grads.T, tf.float32)
    orders = tf.constant([[1], [0]])
    gradvac, pcgrad = weighting_for("gradvac", 2, beta=0.5), weighting_for("pcgrad", 2)
    coefficients, target = gradvac.coefficients(gram, orders, tf.zeros([2, 2]))
    np.testing.assert_allclose(coefficients, pcgrad.coefficients(gram, orders), atol=1e-6)
    phi = grads[0] @ grads[1] / np.prod(np.linalg.norm(grads, axis=1))
    np.testing.assert_allclose(target.numpy(), [[0, phi / 2], [phi / 2, 0]], atol=1e-6)
    wanted = tf.constant([[0.0, 0.3], [0.3, 0.0]])
    coefficients, _ = gradvac.coefficients(gram, orders, wanted)
    adjusted = coefficients.numpy() @ grads
    cosines = [adjusted[0] @ grads[1], adjusted[1] @ grads[0]] / (
        np.linalg.norm(adjusted, axis=1) * np.linalg.norm(grads[::-1], axis=1)
    )
    np.testing.assert_allclose(cosines, [0.3, 0.3], atol=1e-5)


def test_gradvac_keeps_its_targets_between_steps():
    gradvac = weighting_for("gradvac", 3)
    grads = _random_grads(3, 9, seed=70)
    aggregate(gradvac, grads)
    target = gradvac.target.numpy()
    assert np.allclose(np.diag(target), 0) and not np.allclose(target, 0)


# --------------------------------------------------------------------------------- GradDrop
def test_graddrop_keeps_agreeing_signs_and_one_sign_per_conflicting_element():
    graddrop = weighting_for("graddrop", 3)
    grads = np.array([[1.0, -2.0, 3.0, -1.0], [2.0, -1.0, -3.0, 2.0], [0.5, -0.5, 1.0, 1.0]])
    for seed in range(5):
        draws = tf.random.stateless_uniform([4], seed=[seed, 0])
        update, weights = graddrop.drop(tf.constant(grads, tf.float32), draws)
        update, weights = update.numpy(), weights.numpy()
        np.testing.assert_allclose(update[:2], grads[:, :2].sum(0))  # all tasks agree
        for k in (2, 3):
            positive, negative = (
                grads[:, k][grads[:, k] > 0].sum(),
                grads[:, k][grads[:, k] < 0].sum(),
            )
            assert np.isclose(update[k], positive) or np.isclose(update[k], negative)
        assert ((weights >= 0) & (weights <= 1 + 1e-6)).all()


def test_graddrop_keeps_a_sign_with_probability_its_purity():
    graddrop = weighting_for("graddrop", 2)
    grads = np.repeat([[3.0], [-1.0]], 4000, axis=1)  # purity P = (1 + 2/4) / 2 = 0.75
    draws = tf.random.stateless_uniform([4000], seed=[1, 2])
    update, _ = graddrop.drop(tf.constant(grads, tf.float32), draws)
    assert set(np.unique(update.numpy())) == {3.0, -1.0}
    assert abs(np.mean(update.numpy() > 0) - 0.75) < 0.03


def test_graddrop_with_full_leak_is_the_sum():
    grads = _random_grads(3, 10, seed=80)
    update, _ = aggregate(weighting_for("graddrop", 3, leak=1.0), grads)
    np.testing.assert_allclose(update, grads.sum(0), rtol=1e-5)


# --------------------------------------------------------------------------------- GradNorm
def test_gradnorm_lowers_the_weight_of_the_larger_gradient():
    gradnorm = weighting_for("gradnorm", 3, weight_lr=0.05)
    grads = np.array([[4.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    step = tf.function(gradnorm.aggregate)
    for _ in range(20):
        _, used = step(tf.constant(grads, tf.float32), tf.ones([3]))
    weights = gradnorm.task_weights.numpy()
    assert weights[0] < 0.7 and weights[1] > 1.0 and abs(weights.sum() - 3) < 1e-5
    assert (weights > 0).all()


def test_gradnorm_favours_the_task_that_trains_slower():
    gradnorm = weighting_for("gradnorm", 2, weight_lr=0.05, alpha=1.5)
    step = tf.function(gradnorm.aggregate)
    grads = tf.constant(np.eye(2), tf.float32)
    step(grads, tf.constant([1.0, 1.0]))  # the initial losses
    for _ in range(20):
        step(grads, tf.constant([0.5, 0.9]))  # task 1 trains slower
    weights = gradnorm.task_weights.numpy()
    assert weights[1] > weights[0]
