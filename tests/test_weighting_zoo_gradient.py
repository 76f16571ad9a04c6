"""Gradient-level weightings of the zoo, issue 12: ``fairgrad``, ``moco``, ``dualproj``,
``config`` and ``cr_mogm``.

Each method runs as the trainer runs it (inside a ``tf.function``, on float32 ``[T, P]``
gradients) and is compared with an independent numpy float64 implementation written here from
the reference code, line by line where the reference is code:

- FairGrad: LibMTL ``LibMTL/weighting/FairGrad.py`` (median-research-group/LibMTL at
  4336804847eaa5e0b924b743d76beec7ac3fdc97; the same solve as the authors'
  ``methods/weight_methods.py`` at OptMN-Lab/fairgrad 2b8cba1e3d070583ee1d00f8fc0ccc9bc4695c50):
  ``scipy.optimize.least_squares`` on ``G w - w^(-1/alpha)`` from ``1/T`` with ``w >= 0``, with
  tighter tolerances than its defaults so that the reference is accurate to about 1e-10.
- MoCo: LibMTL ``LibMTL/weighting/MoCo.py`` (same commit), several steps.
- DualProj: torchjd ``src/torchjd/aggregation/_dualproj.py``, ``_linalg/_gramian.py`` and
  ``_utils/dual_cone.py`` (TorchJD/torchjd at 46962c2be7788503c151007fa013f761a6238ef2); the
  quadprog call is replaced by an exact enumeration of the active sets of the box QP.
- ConFIG: torchjd ``src/torchjd/aggregation/_config.py`` (same commit), the pseudo-inverse path
  of the authors' ``conflictfree/grad_operator.py`` ``ConFIG_update`` (tum-pbs/ConFIG at
  94862437f451f175673bce9c85f3e14bd9182c21).
- CR-MOGM: no reference code of the authors is public; the moving average as torchjd states it
  (SimplexLab/TorchJD ``src/torchjd/aggregation/_cr_mogm.py`` at
  e19dd8060523bff61d413df0dca9ab15f46db02d), on MGDA weights from an exact enumeration of the
  simplex QP's active sets.

Tolerances: results are compared relative to the largest magnitude of the expected vector
(``_close``); float32 inputs and outputs and float64 solvers leave errors near 1e-6 of it, and
the tolerances are 1e-5 unless a case says otherwise.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers import aggregate, weighting_for
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from scipy.optimize import least_squares

from mtbench import registry
from mtbench.cli import config_dir, prepare

NAMES = ("fairgrad", "moco", "dualproj", "config", "cr_mogm")


# ------------------------------------------------------------------------------------ helpers


def _close(actual, expected, rtol=1e-5):
    """Equal up to ``rtol`` of the largest magnitude in ``expected``."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(np.abs(expected).max(), 1e-30)
    error = np.abs(actual - expected).max()
    assert error <= rtol * scale, (
        f"error {error:.3g} > {rtol:g} * {scale:.3g}\n{actual}\n{expected}"
    )


def _f32(grads) -> np.ndarray:
    """The gradients as the method sees them (float32), in float64 for the references."""
    return np.asarray(grads, np.float32).astype(np.float64)


def _cases(num_tasks: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    size = 12

    def random() -> np.ndarray:
        return rng.normal(size=(num_tasks, size)) * rng.uniform(0.3, 3.0, size=(num_tasks, 1))

    conflicting = random()
    conflicting[1] = -0.8 * conflicting[0] + 0.3 * conflicting[1]
    parallel = rng.normal(size=size) + 1e-2 * rng.normal(size=(num_tasks, size))
    larger = random()
    larger[0] *= 1000.0
    return {"random": random(), "conflicting": conflicting, "parallel": parallel, "1000x": larger}


CASES = [
    (num_tasks, case)
    for num_tasks in (2, 3, 5)
    for case in ("random", "conflicting", "parallel", "1000x")
]
CASE_IDS = [f"T{t}-{c}" for t, c in CASES]


def _zero_case(num_tasks: int, seed: int) -> np.ndarray:
    grads = _cases(num_tasks, seed)["random"]
    grads[-1] = 0.0
    return grads


# --------------------------------------------------------------------- numpy references
def fairgrad_reference(grads: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """LibMTL ``FairGrad.backward`` (tighter tolerances)."""
    num_tasks = len(grads)
    GTG = grads @ grads.T
    x_start = np.ones(num_tasks) / num_tasks
    A = GTG

    def objfn(x):
        return np.dot(A, x) - np.power(1 / x, 1 / alpha)

    res = least_squares(
        objfn, x_start, bounds=(0, np.inf), ftol=1e-15, xtol=1e-15, gtol=1e-15, max_nfev=20000
    )
    w = res.x
    residual = np.abs(objfn(w)).max() / np.abs(np.power(1 / w, 1 / alpha)).max()
    assert residual < 1e-8, f"the reference did not converge: relative residual {residual:.2g}"
    return w @ grads, w


def moco_reference(
    grad_steps, loss_steps, beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """LibMTL ``MoCo.init_param`` and ``MoCo.backward`` over a sequence of steps."""
    task_num, grad_dim = grad_steps[0].shape
    y = np.zeros((task_num, grad_dim))
    lambd = np.ones(task_num) / task_num
    outputs = []
    for step, (grads, losses) in enumerate(zip(grad_steps, loss_steps, strict=True), start=1):
        grads = grads.copy()
        for tn in range(task_num):
            grads[tn] = grads[tn] / (np.linalg.norm(grads[tn]) + 1e-8) * losses[tn]
        y = y - (beta / step**beta_sigma) * (y - grads)
        z = lambd - (gamma / step**gamma_sigma) * (y @ y.T + rho * np.eye(task_num)) @ lambd
        lambd = np.exp(z - z.max()) / np.exp(z - z.max()).sum()  # F.softmax
        new_grads = y.T @ lambd
        outputs.append((new_grads, lambd.copy()))
    return outputs


def box_qp(G: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``argmin_v v'Gv`` subject to ``v >= u`` (G positive definite), by trying every active set:
    the one whose solution is feasible and whose multipliers are >= 0 is the optimum."""
    m = len(G)
    scale = np.abs(G).max() * max(np.abs(u).max(), 1e-300)
    for size in range(m + 1):
        for free in itertools.combinations(range(m), size):
            free = list(free)
            fixed = [i for i in range(m) if i not in free]
            v = u.copy()
            if free:
                v[free] = np.linalg.solve(G[np.ix_(free, free)], -G[np.ix_(free, fixed)] @ u[fixed])
            multipliers = (G @ v)[fixed]
            if (v[free] >= u[free] - 1e-12 * (1 + np.abs(u).max())).all() and (
                multipliers >= -1e-12 * scale
            ).all():
                return v
    raise AssertionError("no active set satisfies the KKT conditions")


def dualproj_reference(grads, u=None, norm_eps=1e-4, reg_eps=1e-4):
    """torchjd ``DualProjWeighting.forward``: ``normalize``, ``regularize``, ``project_weights``."""
    gramian = grads @ grads.T
    m = len(gramian)
    u = np.ones(m) / m if u is None else u  # MeanWeighting
    squared_frobenius_norm = np.trace(gramian)
    G = (
        np.zeros_like(gramian)
        if squared_frobenius_norm < norm_eps
        else gramian / squared_frobenius_norm
    )
    G = G + reg_eps * np.eye(m)
    w = box_qp(G, u)  # quadprog's solve_qp(G, 0, -I, -u)
    return w @ grads, w


def config_reference(matrix, weights=None):
    """torchjd ``ConFIG.forward`` (``SumWeighting`` by default)."""
    weights = np.ones(len(matrix)) if weights is None else weights
    with np.errstate(invalid="ignore", divide="ignore"):
        units = np.nan_to_num(matrix / np.linalg.norm(matrix, axis=1)[:, None], nan=0.0)
    best_direction = np.linalg.pinv(units) @ weights
    unit_target_vector = best_direction / max(np.linalg.norm(best_direction), 1e-12)
    length = np.sum(matrix @ unit_target_vector)
    return length * unit_target_vector


def min_norm_reference(G: np.ndarray) -> np.ndarray:
    """MGDA: ``argmin_{x in simplex} x'Gx`` by trying every support; the best KKT point."""
    m = len(G)
    best, best_value = None, np.inf
    scale = np.abs(G).max()
    for size in range(1, m + 1):
        for support in itertools.combinations(range(m), size):
            s = list(support)
            system = np.block([[G[np.ix_(s, s)], -np.ones((size, 1))], [np.ones((1, size)), 0]])
            solution = np.linalg.lstsq(system, np.r_[np.zeros(size), 1.0], rcond=None)[0]
            x = np.zeros(m)
            x[s], nu = solution[:size], solution[size]
            if (x >= -1e-12).all() and (G @ x >= nu - 1e-10 * scale).all():
                value = x @ G @ x
                if value < best_value - 1e-14 * scale:
                    best, best_value = x, value
    assert best is not None
    return best


def cr_mogm_reference(grad_steps, alpha=0.9) -> list[tuple[np.ndarray, np.ndarray]]:
    """torchjd ``CRMOGMWeighting.forward`` wrapping MGDA: ``lambda_0 = lambda_hat_1``."""
    outputs, previous = [], None
    for grads in grad_steps:
        lambda_hat = min_norm_reference(grads @ grads.T)
        lambda_prev = lambda_hat if previous is None else previous
        previous = alpha * lambda_prev + (1.0 - alpha) * lambda_hat
        outputs.append((previous @ grads, previous.copy()))
    return outputs


# ---------------------------------------------------------------------------------- FairGrad
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("num_tasks,case", CASES, ids=CASE_IDS)
def test_fairgrad_matches_the_reference_solve(num_tasks, case, alpha):
    grads = _f32(_cases(num_tasks, seed=num_tasks)[case])
    update, weights = aggregate(weighting_for("fairgrad", num_tasks, alpha=alpha), grads)
    expected_update, expected_weights = fairgrad_reference(grads, alpha)
    rtol = 1e-4 if case == "parallel" else 1e-5  # G is nearly singular there
    _close(weights, expected_weights, rtol)
    _close(update, expected_update, rtol)
    # the optimality condition itself: <g_t, d> = w_t^(-1/alpha)
    _close(grads @ (weights @ grads), weights ** (-1 / alpha), 10 * rtol)


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_fairgrad_with_a_zero_gradient_solves_the_other_tasks_system(num_tasks):
    grads = _f32(_zero_case(num_tasks, seed=10 + num_tasks))
    update, weights = aggregate(weighting_for("fairgrad", num_tasks, alpha=2.0), grads)
    assert np.isfinite(update).all() and np.isfinite(weights).all()
    expected_update, expected_weights = fairgrad_reference(grads[:-1], 2.0)
    _close(weights[:-1], expected_weights)
    _close(update, expected_update)
    assert weights[-1] > 100 * weights[:-1].max()  # it has no finite solution


def test_fairgrad_with_alpha_one_is_nash_mtl_and_alpha_zero_the_mean():
    grads = _f32(_cases(3, seed=20)["conflicting"])
    _, fair = aggregate(weighting_for("fairgrad", 3, alpha=1.0), grads)
    _, nash = aggregate(weighting_for("nashmtl", 3, max_norm=0.0), grads)
    _close(fair, nash, 1e-4)
    update, weights = aggregate(weighting_for("fairgrad", 3, alpha=0.0), grads)
    _close(update, grads.mean(0))
    _close(weights, np.full(3, 1 / 3))


def test_fairgrad_larger_alpha_favours_the_worst_off_task():
    grads = _f32(_cases(3, seed=21)["random"])
    worst = []
    for alpha in (0.5, 1.0, 2.0, 8.0):
        update, _ = aggregate(weighting_for("fairgrad", 3, alpha=alpha), grads)
        utilities = grads @ (update / np.linalg.norm(update))
        worst.append(utilities.min())
    assert worst == sorted(worst)


# -------------------------------------------------------------------------------------- MoCo
@pytest.mark.parametrize("num_tasks", [2, 3, 5])
@pytest.mark.parametrize("options", [{}, {"rho": 0.1, "beta": 0.9, "gamma": 0.5}])
def test_moco_matches_the_reference_over_several_steps(num_tasks, options):
    rng = np.random.default_rng(num_tasks)
    cases = list(_cases(num_tasks, seed=30 + num_tasks).values()) + [_zero_case(num_tasks, 31)]
    grad_steps = [_f32(c) for c in cases]
    loss_steps = [rng.uniform(0.2, 3.0, num_tasks).astype(np.float32) for _ in grad_steps]
    moco = weighting_for("moco", num_tasks, **options)
    expected = moco_reference(
        grad_steps, [loss.astype(np.float64) for loss in loss_steps], **options
    )
    for grads, losses, (expected_update, expected_weights) in zip(
        grad_steps, loss_steps, expected, strict=True
    ):
        update, weights = aggregate(moco, grads, losses)
        _close(weights, expected_weights)
        _close(update, expected_update)
        assert abs(weights.sum() - 1) < 1e-6 and (weights > 0).all()


def test_moco_first_step_uses_the_rescaled_gradients():
    grads = _f32([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]])
    losses = np.array([2.0, 0.5], np.float32)
    update, weights = aggregate(weighting_for("moco", 2, beta=1.0), grads, losses)
    rescaled = np.array([[1.2, 1.6, 0.0], [0.0, 0.0, 0.5]])  # L_t g_t / |g_t|
    _close(update, weights @ rescaled)


def test_moco_keeps_its_state_in_weights_given_the_gradient_size():
    grads = [_f32(c) for c in _cases(3, seed=40).values()]
    original = weighting_for("moco", 3)
    for step in grads[:3]:
        aggregate(original, step)
    copy = weighting_for("moco", 3)
    copy.build_gradient_state(grads[0].shape[1])
    for target, source in zip(copy.variables, original.variables, strict=True):
        target.assign(source)
    np.testing.assert_array_equal(aggregate(copy, grads[3])[0], aggregate(original, grads[3])[0])
    with pytest.raises(ValueError, match="shared parameters changed"):
        copy.build_gradient_state(5)


# ---------------------------------------------------------------------------------- DualProj
@pytest.mark.parametrize("num_tasks,case", CASES, ids=CASE_IDS)
def test_dualproj_matches_the_reference_projection(num_tasks, case):
    grads = _f32(_cases(num_tasks, seed=50 + num_tasks)[case])
    update, weights = aggregate(weighting_for("dualproj", num_tasks), grads)
    expected_update, expected_weights = dualproj_reference(grads)
    _close(weights, expected_weights)
    _close(update, expected_update)


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_dualproj_with_a_zero_gradient_and_a_preference(num_tasks):
    grads = _f32(_zero_case(num_tasks, seed=60 + num_tasks))
    grads[1] = -grads[0] + 0.2 * grads[1]
    update, weights = aggregate(weighting_for("dualproj", num_tasks), grads)
    _close(update, dualproj_reference(grads)[0])
    preference = {"task0": 3.0, "task1": 0.5}
    u = np.array([preference.get(f"task{t}", 1.0) for t in range(num_tasks)]) / num_tasks
    update, weights = aggregate(weighting_for("dualproj", num_tasks, preference=preference), grads)
    expected_update, expected_weights = dualproj_reference(grads, u)
    _close(weights, expected_weights)
    _close(update, expected_update)


def test_dualproj_result_conflicts_with_no_task_beyond_the_regularisation():
    for num_tasks, seed in [(2, 0), (3, 1), (3, 2), (5, 3), (5, 4)]:
        grads = _f32(_cases(num_tasks, seed)["conflicting"])
        update, weights = aggregate(weighting_for("dualproj", num_tasks), grads)
        assert (weights >= 1 / num_tasks - 1e-7).all()
        # KKT of the regularised problem: (G/tr + reg_eps I) w >= 0, so <g_t, d> >= -reg_eps tr w_t
        bound = -1e-4 * np.trace(grads @ grads.T) * weights
        slack = 1e-5 * np.linalg.norm(update) * np.linalg.norm(grads, axis=1)
        assert (grads @ update >= bound - slack).all()
    grads = _f32(_cases(3, seed=5)["conflicting"])
    update, _ = aggregate(weighting_for("dualproj", 3, reg_eps=1e-9), grads)
    assert (grads @ update >= -1e-6 * np.linalg.norm(update) * np.linalg.norm(grads, axis=1)).all()


def test_dualproj_is_the_mean_gradient_without_conflicts():
    grads = _f32(np.abs(_cases(4, seed=6)["random"]))
    update, weights = aggregate(weighting_for("dualproj", 4), grads)
    _close(update, grads.mean(0))
    _close(weights, np.full(4, 0.25))


# ------------------------------------------------------------------------------------ ConFIG
@pytest.mark.parametrize("num_tasks,case", CASES, ids=CASE_IDS)
def test_config_matches_the_reference(num_tasks, case):
    grads = _f32(_cases(num_tasks, seed=70 + num_tasks)[case])
    update, weights = aggregate(weighting_for("config", num_tasks), grads)
    rtol = 1e-4 if case == "parallel" else 1e-5
    _close(update, config_reference(grads), rtol)
    _close(weights @ grads, update, rtol)


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_config_with_a_zero_gradient_and_a_preference(num_tasks):
    grads = _f32(_zero_case(num_tasks, seed=80 + num_tasks))
    update, weights = aggregate(weighting_for("config", num_tasks), grads)
    _close(update, config_reference(grads))
    assert weights[-1] == 0.0
    preference = {"task1": 2.5}
    wanted = np.array([preference.get(f"task{t}", 1.0) for t in range(num_tasks)])
    update, _ = aggregate(weighting_for("config", num_tasks, preference=preference), grads)
    _close(update, config_reference(grads, wanted))


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_config_is_conflict_free_with_equal_projections_on_the_unit_gradients(num_tasks):
    grads = _f32(_cases(num_tasks, seed=90 + num_tasks)["conflicting"])
    update, _ = aggregate(weighting_for("config", num_tasks), grads)
    cosines = grads @ update / (np.linalg.norm(grads, axis=1) * np.linalg.norm(update))
    assert (cosines > 0).all()
    _close(cosines, np.full(num_tasks, cosines[0]), 1e-4)
    # the length: the sum of the gradients' projections on the direction
    _close(np.linalg.norm(update), np.sum(grads @ update) / np.linalg.norm(update))


def test_config_of_parallel_gradients_is_their_sum():
    base = np.random.default_rng(7).normal(size=10)
    grads = _f32(np.outer([0.5, 2.0, 1.0], base))
    update, _ = aggregate(weighting_for("config", 3), grads)
    _close(update, grads.sum(0))


# ----------------------------------------------------------------------------------- CR-MOGM
@pytest.mark.parametrize("num_tasks", [2, 3, 5])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9])
def test_cr_mogm_matches_the_moving_average_of_mgda_weights(num_tasks, alpha):
    cases = _cases(num_tasks, seed=100 + num_tasks)
    grad_steps = [_f32(cases[c]) for c in ("random", "conflicting", "1000x", "random")]
    grad_steps.append(_f32(_zero_case(num_tasks, seed=101)))
    cr_mogm = weighting_for("cr_mogm", num_tasks, alpha=alpha)
    for grads, (expected_update, expected_weights) in zip(
        grad_steps, cr_mogm_reference(grad_steps, alpha), strict=True
    ):
        update, weights = aggregate(cr_mogm, grads)
        _close(weights, expected_weights, 1e-5)
        _close(update, expected_update, 1e-5)
        assert abs(weights.sum() - 1) < 1e-6 and (weights >= 0).all()


def test_cr_mogm_is_mgda_on_its_first_step_and_keeps_its_state_in_weights():
    grads = [_f32(c) for c in _cases(3, seed=110).values()]
    _close(
        aggregate(weighting_for("cr_mogm", 3), grads[0])[1],
        aggregate(weighting_for("mgda", 3), grads[0])[1],
    )
    original = weighting_for("cr_mogm", 3)
    for step in grads[:3]:
        aggregate(original, step)
    copy = weighting_for("cr_mogm", 3)
    for target, source in zip(copy.variables, original.variables, strict=True):
        target.assign(source)
    np.testing.assert_array_equal(aggregate(copy, grads[3])[1], aggregate(original, grads[3])[1])


# --------------------------------------------------------------------------- every method
@pytest.mark.parametrize("name", NAMES)
def test_agreeing_gradients_give_the_common_direction(name):
    """Identical gradients: the mean for dualproj and cr_mogm, the sum (ew's update) for
    config; fairgrad and moco keep the direction (their lengths follow from G and the losses)."""
    g = np.random.default_rng(8).normal(size=10)
    grads = _f32(np.stack([g] * 3))
    update, _ = aggregate(weighting_for(name, 3), grads)
    expected = {"dualproj": g, "cr_mogm": g, "config": 3 * g}.get(name)
    if expected is not None:
        _close(update, _f32(expected))
    cosine = update @ g / (np.linalg.norm(update) * np.linalg.norm(g))
    assert cosine > 1 - 1e-6


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("num_tasks", [2, 5])
def test_finite_on_zero_and_identical_gradients(name, num_tasks):
    weighting = weighting_for(name, num_tasks)
    rng = np.random.default_rng(num_tasks)
    for grads in (
        rng.normal(size=(num_tasks, 20)),
        np.zeros((num_tasks, 20)),
        np.vstack([rng.normal(size=(num_tasks - 1, 20)), np.zeros((1, 20))]),
        np.stack([rng.normal(size=20)] * num_tasks),
    ):
        update, weights = aggregate(weighting, grads, np.linspace(0.5, 2, num_tasks))
        assert update.shape == (20,) and weights.shape == (num_tasks,)
        assert np.isfinite(update).all() and np.isfinite(weights).all(), (name, grads)


@pytest.mark.parametrize("name", ["fairgrad", "dualproj", "config", "cr_mogm", "moco"])
def test_the_result_does_not_depend_on_task_order(name):
    grads = _f32(_cases(4, seed=9)["conflicting"])
    losses = np.array([0.5, 1.0, 1.5, 2.0])
    update, weights = aggregate(weighting_for(name, 4), grads, losses)
    order = [3, 1, 0, 2]
    permuted_update, permuted_weights = aggregate(
        weighting_for(name, 4), grads[order], losses[order]
    )
    _close(permuted_update, update, 1e-5)
    _close(permuted_weights, weights[order], 1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_a_wrong_option_value_names_the_key_and_the_config_round_trips(name):
    plugin = registry.get("weighting", name)
    for key in plugin.config.__dataclass_fields__:
        with pytest.raises(ValueError, match=rf"^weighting\.{key}=") as error:
            registry.build("weighting", {"name": name, key: -7})
        assert "\n" not in str(error.value)
    weighting = registry.build("weighting", {"name": name})
    clone = type(weighting).from_config(weighting.get_config())
    for key in plugin.config.__dataclass_fields__:
        assert getattr(clone, key) == getattr(weighting, key)


@pytest.mark.parametrize("name", ["dualproj", "config"])
def test_a_preference_naming_no_task_is_refused(name):
    with pytest.raises(ValueError, match=r"weighting\.preference names tasks \['fnie'\]"):
        weighting_for(name, 2, preference={"fnie": 2.0})
    with pytest.raises(ValueError, match=r"^weighting\.preference="):
        registry.build("weighting", {"name": name, "preference": {"task0": -1.0}})


@pytest.mark.parametrize("name", NAMES)
def test_config_file_holds_the_plugin_defaults(name):
    prepare()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=cifar100_mtl", f"weighting={name}"])
    schema = registry.get("weighting", name).schema
    assert OmegaConf.to_container(cfg.weighting) == OmegaConf.to_container(
        OmegaConf.structured(schema)
    )
