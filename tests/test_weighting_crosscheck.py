"""Cross-checks of the gradient-level weightings against torchjd 0.18's aggregators.

torchjd (``pip install -e ".[crosscheck]"``, which pins ``torchjd[full]==0.18.0``) holds public
reference implementations of most gradient-level methods. Each test gives mtbench's method and
torchjd's the same fixed per-task gradient matrix and compares the combined update and the
weights (``update = weights @ J``, which is exactly what torchjd's ``WeightedAggregator`` does
with its ``Weighting``'s output). Matrices: T = 2, 3 and 5 tasks of P = 40 parameters, in four
shapes: ``conflicting`` (tasks of different parity at cosine about -0.5), ``nearly_parallel``
(angles about 1e-3 rad), ``one_1000x_larger`` (the conflicting matrix with task 0 times 1000)
and ``one_zero`` (the conflicting matrix with the last task's gradient 0).

mtbench gets the float32 matrix, as in training; torchjd gets the same numbers in float64 (its
Gramian is then exact to float64 round-off, as mtbench's is), except where the dtype is part of
the method (GradDrop, see its check). Everything runs on the CPU.

Tolerances, relative to the norm of the reference update (floored at ``1e-6`` of the largest
gradient norm, for updates that vanish) and to the largest reference weight:

- ``RTOL = 1e-5`` where both sides compute the same closed form or solve the same problem
  exactly (quadprog and mtbench's active-set solver are both exact for UPGrad's and DualProj's
  QPs; SciPy's least_squares for FairGrad stops at relative tolerances of 1e-8): mtbench
  returns float32, whose rounding is 6e-8; the largest difference seen is 1.3e-7.
- Iterative references get the accuracy their solver certifies, added to ``RTOL``: MGDA's
  Frank-Wolfe iterates carry their duality gap (a bound on their distance to the min-norm
  point; after 1000 iterations it is below 5e-6 of the update except with a 1000x larger
  gradient, 5e-4 for T = 3 and 0.11 for T = 5, where the certificate that counts is that
  mtbench's update is no longer than torchjd's and has a zero duality gap); Nash-MTL's
  sequence of ECOS solves carries the residual of ``G a = 1/a`` that its own stopping rule
  reads; CAGrad's CLARABEL solve is compared on the dual objective (mtbench must
  reach at least as low a value) and to ``1e-3`` (CLARABEL stops at a 1e-8 duality gap, which
  allows solutions about sqrt(1e-8) = 1e-4 apart).

Where mtbench's convention differs from torchjd's on purpose, the check converts one to the
other and says so:

- ``aligned_mtl``: mtbench sums the aligned gradients (``B 1``, LibMTL's ``alpha = B.sum(0)``),
  torchjd averages them (its default preference vector is ``1/T``): mtbench's update is T times
  torchjd's. The rank cut-off uses float32's epsilon in mtbench (as LibMTL's
  ``torch.finfo().eps``), the Gramian's dtype's in torchjd: torchjd is run with float32's.
- ``cagrad``: mtbench's ``rescale=0`` is torchjd's CAGrad (no division by ``1 + c^2``). Where
  the dual's ``g_w`` vanishes (a zero task gradient) torchjd returns a zero update ("on the
  Pareto front"); mtbench, like the authors' code (``g_0 + c / (|g_w| + 1e-8) g_w``), returns
  the mean gradient ``g_0``.
- ``excess_mtl``: mtbench's weights sum to T (LibMTL's), torchjd's to 1; LibMTL (and mtbench)
  only record the baseline excess risk on the first step, which is torchjd's
  ``n_warmup_steps=1`` (its default 0 already moves the weights by the raw excess risk).
- ``nashmtl``: mtbench logs the unclipped weights; torchjd's are clipped with the update.

Random methods are compared with the same randomness: PCGrad's and GradVac's orders of the
other tasks are drawn as torchjd draws them (``torch.randperm`` after ``torch.manual_seed``) and
handed to mtbench through its random stream; GradDrop's uniform draws likewise.

Not compared (no torchjd counterpart): ``moco`` (MoCo), ``db_mtl``, the log-loss variants
``cagrad_log``, ``imtl_log`` and ``mgda_log``, and every loss-level method. ``moco`` and
``db_mtl`` are compared with numpy transcriptions of LibMTL over several steps in
test_weighting_zoo_gradient.py, test_weighting_zoo_balance.py and, with tasks that have no
labelled example on some steps, test_weighting_short_budget.py. Methods whose
plugin module does not exist yet are skipped with that reason.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from mtbench import registry
from mtbench_plugins.weighting.common import combine, gramian
from mtbench_plugins.weighting.mgda import MGDA
from mtbench_plugins.weighting.pcgrad import PCGrad
from mtbench_plugins.weighting.solvers import min_norm_weights
from mtbench_plugins.weighting.upgrad import UPGrad

pytestmark = [
    pytest.mark.crosscheck,
    # the reference's own solvers: Nash-MTL's cvxpy problem is not DPP, and ECOS reports
    # inaccurate solutions where it fails (see check_nashmtl)
    pytest.mark.filterwarnings("ignore::UserWarning:torchjd.aggregation._nash_mtl"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning:cvxpy"),
]

REASON = "the reference implementations are an optional extra: pip install -e '.[crosscheck]'"
torchjd = pytest.importorskip("torchjd", reason=REASON)
torch = pytest.importorskip("torch", reason=REASON)
tja = pytest.importorskip("torchjd.aggregation", reason=REASON)
tjl = pytest.importorskip("torchjd.linalg", reason=REASON)

NUM_PARAMETERS = 40
KINDS = ("conflicting", "nearly_parallel", "one_1000x_larger", "one_zero")
TASK_COUNTS = (2, 3, 5)
RTOL = 1e-5
FINFO = torch.finfo


# --------------------------------------------------------------------------------- the inputs
@dataclasses.dataclass(frozen=True)
class Case:
    kind: str
    num_tasks: int

    def __str__(self) -> str:
        return f"{self.kind}-T{self.num_tasks}"

    def gradients(self) -> np.ndarray:
        """The ``[T, P]`` float32 matrix, fixed by the kind and T."""
        rng = np.random.default_rng([self.num_tasks, KINDS.index(self.kind)])
        if self.kind == "nearly_parallel":
            common = rng.standard_normal(NUM_PARAMETERS)
            grads = common + 1e-3 * rng.standard_normal((self.num_tasks, NUM_PARAMETERS))
        else:
            # random directions plus a shared one with alternating sign
            shared = rng.standard_normal(NUM_PARAMETERS)
            shared *= np.sqrt(NUM_PARAMETERS) / np.linalg.norm(shared)
            signs = np.where(np.arange(self.num_tasks) % 2 == 0, 1.0, -1.0)
            grads = rng.standard_normal((self.num_tasks, NUM_PARAMETERS)) + signs[:, None] * shared
            if self.kind == "one_1000x_larger":
                grads[0] *= 1000.0
            if self.kind == "one_zero":
                grads[-1] = 0.0
        return grads.astype(np.float32)

    def steps(self, count: int) -> list[np.ndarray]:
        """``count`` matrices for stateful methods: the case's, then its rows rescaled by
        factors in [0.5, 2] (the shape of the case, parallel or zero, is kept)."""
        grads = self.gradients()
        rng = np.random.default_rng([self.num_tasks, KINDS.index(self.kind), 1])
        factors = rng.uniform(0.5, 2.0, size=(count - 1, self.num_tasks, 1))
        return [grads] + [(grads * f).astype(np.float32) for f in factors]


CASES = [Case(kind, t) for kind in KINDS for t in TASK_COUNTS]


# ------------------------------------------------------------------------------- both sides
def plugin(name: str, num_tasks: int, **options: Any):
    """mtbench's method ``name``, set up for ``num_tasks`` tasks; skip if it does not exist."""
    module = f"mtbench_plugins.weighting.{name}"
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"plugins/weighting/{name}.py does not exist yet: nothing to compare")
    importlib.import_module(module)  # registers it until pyproject.toml lists its entry point
    weighting = registry.build("weighting", {"name": name, **options})
    weighting.setup([f"task{t}" for t in range(num_tasks)])
    return weighting


def aggregate(weighting, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mtbench's ``(update, weights)`` in float64 numpy, computed on the CPU."""
    with tf.device("/CPU:0"):
        update, weights = weighting.aggregate(tf.constant(grads), tf.ones([grads.shape[0]]))
    return update.numpy().astype(np.float64), weights.numpy().astype(np.float64)


def reference(factory: Callable[[], Any]) -> Any:
    """A torchjd aggregator or weighting; skip if its optional solver is missing."""
    try:
        return factory()
    except ImportError as error:
        pytest.skip(f"torchjd's optional dependency is missing: {error}")


def jacobian(grads: np.ndarray, dtype: Any = None) -> Any:
    return torch.from_numpy(grads.astype(np.float64)).to(dtype or torch.float64)


def gram64(grads: np.ndarray) -> np.ndarray:
    g = grads.astype(np.float64)
    return g @ g.T


def weigh(weighting: Any, grads: np.ndarray, of_gramian: bool = True) -> np.ndarray:
    """A torchjd ``Weighting``'s weights for the Gramian (or the matrix) of ``grads``."""
    stat = torch.from_numpy(gram64(grads)) if of_gramian else jacobian(grads)
    return weighting(stat).detach().numpy().astype(np.float64)


# ---------------------------------------------------------------------------- the comparisons
def update_scale(expected: np.ndarray, grads: np.ndarray) -> float:
    largest = float(np.linalg.norm(grads.astype(np.float64), axis=1).max())
    return max(float(np.linalg.norm(expected)), 1e-6 * largest, 1e-30)


def check_update(
    update: np.ndarray, expected: np.ndarray, grads: np.ndarray, rtol: float, slack: float = 0.0
) -> float:
    """Assert ``|update - expected| <= rtol * scale + slack``; return the error over scale."""
    scale = update_scale(expected, grads)
    error = float(np.linalg.norm(update - expected))
    allowed = rtol * scale + slack
    assert error <= allowed, (
        f"update: |mtbench - torchjd| = {error:.3e} > {allowed:.3e} "
        f"(rtol {rtol:g} of {scale:.4g} + {slack:.2e}); mtbench {update[:4]}..., "
        f"torchjd {expected[:4]}..."
    )
    return error / scale


def check_weights(
    weights: np.ndarray, expected: np.ndarray, rtol: float, slack: float = 0.0
) -> float:
    """Assert ``max |weights - expected| <= rtol * max |expected| + slack``."""
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    error = float(np.max(np.abs(weights - expected)))
    allowed = rtol * scale + slack
    assert error <= allowed, (
        f"weights: max |mtbench - torchjd| = {error:.3e} > {allowed:.3e}; "
        f"mtbench {weights}, torchjd {expected}"
    )
    return error / scale


def closed_form(make: Callable[[], Any], of_gramian: bool = True) -> Callable[..., dict]:
    """Check a method that computes the same thing as torchjd's ``Weighting`` ``make()``."""

    def check(weighting, case: Case, monkeypatch: pytest.MonkeyPatch) -> dict:
        grads = case.gradients()
        update, weights = aggregate(weighting, grads)
        expected = weigh(reference(make), grads, of_gramian)
        return {
            "update": check_update(update, expected @ grads.astype(np.float64), grads, RTOL),
            "weights": check_weights(weights, expected, RTOL),
        }

    return check


def check_aligned_mtl(scale_mode: str) -> Callable[..., dict]:
    def check(weighting, case: Case, monkeypatch: pytest.MonkeyPatch) -> dict:
        grads = case.gradients()
        update, weights = aggregate(weighting, grads)
        made = reference(lambda: tja.AlignedMTLWeighting(scale_mode=scale_mode))
        # torchjd's rank cut-off takes the Gramian's dtype's epsilon, mtbench (like LibMTL's
        # torch.finfo().eps) float32's: run torchjd on the float64 Gramian with float32's.
        with monkeypatch.context() as patch:
            patch.setattr(torch, "finfo", lambda dtype=None: FINFO(torch.float32))
            expected = weigh(made, grads)
        # torchjd averages the aligned gradients (preference 1/T), mtbench sums them
        expected *= case.num_tasks
        return {
            "update": check_update(update, expected @ grads.astype(np.float64), grads, RTOL),
            "weights": check_weights(weights, expected, RTOL),
        }

    return check


# MGDA ------------------------------------------------------------------------------------------
def frank_wolfe_gap(gram: np.ndarray, weights: np.ndarray) -> float:
    """The Frank-Wolfe duality gap of ``w'Gw`` on the simplex at ``weights``: an upper bound on
    ``w'Gw - min``, and so on ``|J'w - d*|^2`` (``d*`` the min-norm point)."""
    along = gram @ weights
    return max(2.0 * float(weights @ along - along.min()), 0.0)


def mgda_slack(gram: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """How far torchjd's Frank-Wolfe ``weights`` can be from the exact solution: (in the update,
    in the weights). The weights' bound uses ``w'Gw - min >= lambda_min |w - w*|^2``."""
    gap = frank_wolfe_gap(gram, weights)
    lowest = max(float(np.linalg.eigvalsh(gram)[0]), 1e-12 * float(np.trace(gram)), 1e-300)
    return float(np.sqrt(gap)), float(np.sqrt(gap / lowest))


MGDA_REFERENCE = {"epsilon": 1e-12, "max_iters": 1000}  # Frank-Wolfe, run (nearly) to the end


def check_mgda(weighting, case: Case, monkeypatch: pytest.MonkeyPatch) -> dict:
    grads = case.gradients()
    gram = gram64(grads)
    update, weights = aggregate(weighting, grads)
    expected = weigh(reference(lambda: tja.MGDAWeighting(**MGDA_REFERENCE)), grads)
    # mtbench solves the min-norm problem exactly: it may not be longer than the reference's
    normalised = gram / np.mean(np.diag(gram)) if np.any(gram) else gram
    mine = weights / weights.sum()
    assert mine @ normalised @ mine <= expected @ normalised @ expected + 1e-9, (
        f"MGDA: mtbench's |update|^2 {mine @ gram @ mine:.9g} exceeds the reference's "
        f"{expected @ gram @ expected:.9g}"
    )
    # ... and it is the min-norm point: its own duality gap is round-off (float32 weights)
    assert frank_wolfe_gap(normalised, mine) <= 1e-6, "MGDA: mtbench's weights are not optimal"
    slack_update, slack_weights = mgda_slack(gram, expected)
    return {
        "update": check_update(update, expected @ grads, grads, RTOL, slack_update),
        "weights": check_weights(weights, expected, RTOL, slack_weights),
    }


def check_cr_mogm(weighting, case: Case, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Three steps of CR-MOGM's moving average of MGDA's weights (alpha = 0.9 on both sides);
    the Frank-Wolfe slack of each step is averaged the same way."""
    inner = reference(lambda: tja.MGDAWeighting(**MGDA_REFERENCE))
    smoothed = reference(lambda: tja.CRMOGMWeighting(inner, alpha=0.9))
    fresh: list[np.ndarray] = []
    inner.register_forward_hook(lambda module, args, output: fresh.append(output.numpy()))
    errors = {"update": 0.0, "weights": 0.0}
    slack_weights = 0.0
    for step, grads in enumerate(case.steps(3)):
        gram = gram64(grads)
        update, weights = aggregate(weighting, grads)
        expected = weigh(smoothed, grads)
        bound = mgda_slack(gram, fresh[-1])[1]
        slack_weights = bound if step == 0 else 0.9 * slack_weights + 0.1 * bound
        # |J'(a - b)| <= sqrt(lambda_max) |a - b|_2 <= sqrt(lambda_max T) |a - b|_inf
        spread = float(np.sqrt(np.linalg.eigvalsh(gram)[-1] * case.num_tasks))
        errors["update"] = max(
            errors["update"],
            check_update(update, expected @ grads, grads, RTOL, spread * slack_weights),
        )
        errors["weights"] = max(
            errors["weights"], check_weights(weights, expected, RTOL, slack_weights)
        )
    return errors


# CAGrad ----------------------------------------------------------------------------------------
def cagrad_dual(gram: np.ndarray, coefficients: np.ndarray, c: float) -> float:
    """CAGrad's dual objective ``w'G g_0 + c |g_0| |g_w|`` (trace-normalised ``G``) at the ``w``
    that the update's coefficients ``1/T + (c |g_0| / |g_w|) w`` encode."""
    t = len(coefficients)
    g = gram / np.trace(gram)
    mean = np.full(t, 1.0 / t)
    w = (coefficients - mean) / np.sum(coefficients - mean)
    return float(w @ g @ mean + c * np.sqrt(mean @ g @ mean) * np.sqrt(max(w @ g @ w, 0.0)))


CAGRAD_C = 0.4


def check_cagrad(weighting, case: Case, monkeypatch: pytest.MonkeyPatch) -> dict:
    grads = case.gradients()
    update, weights = aggregate(weighting, grads)
    expected = weigh(reference(lambda: tja.CAGradWeighting(c=CAGRAD_C, norm_eps=1e-4)), grads)
    if case.kind == "one_zero":
        # g_w = 0: torchjd returns 0 ("on the Pareto front"), mtbench and the authors' code g_0
        assert not np.any(expected), f"torchjd's CAGrad weights {expected}, expected zeros"
        expected = np.full(case.num_tasks, 1.0 / case.num_tasks)
        rtol = RTOL
    else:
        gram = gram64(grads)
        ours, theirs = cagrad_dual(gram, weights, CAGRAD_C), cagrad_dual(gram, expected, CAGRAD_C)
        assert ours <= theirs + 1e-8, f"CAGrad dual: mtbench {ours:.12g} > torchjd {theirs:.12g}"
        rtol = 1e-3  # CLARABEL's 1e-8 duality gap leaves the solution about 1e-4 loose
    return {
        "update": check_update(update, expected @ grads, grads, rtol),
        "weights": check_weights(weights, expected, rtol),
    }


# Nash-MTL --------------------------------------------------------------------------------------
def check_nashmtl(weighting, case: Case, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The first call (both start from scratch). Both solve ``G a = 1/a``, the minimiser of the
    convex ``f(a) = a'Ga/2 - sum log a``, on ``K = G / |G|_F`` (``a_K = a |G|_F^(1/2)``):
    mtbench must reach at least as low an ``f`` as torchjd's ECOS sequence, and where that met
    its own stopping rule (``|K a - 1/a| < 1e-3``) the two must agree to what the residual
    allows, ``|a - a*| <= max(a)^2 |K a - 1/a|`` (the Hessian is at least ``diag(1/a^2)``)."""
    grads = case.gradients()
    jac = jacobian(grads)
    options = {"n_tasks": case.num_tasks, "update_weights_every": 1, "optim_niter": 20}
    unclipped = reference(lambda: tja.NashMTL(max_norm=0.0, **options))
    clipped = reference(lambda: tja.NashMTL(max_norm=1.0, **options))
    expected = unclipped.weighting(jac).numpy().astype(np.float64)
    expected_update = clipped(jac).numpy().astype(np.float64)
    update, weights = aggregate(weighting, grads)  # update clipped to norm 1, weights not

    gram = gram64(grads)
    size = float(np.linalg.norm(gram))
    k = gram / size

    def objective(a: np.ndarray) -> float:
        a = a * np.sqrt(size)
        return float(a @ k @ a / 2.0 - np.sum(np.log(a)))

    assert objective(weights) <= objective(expected) + 1e-9 * (1.0 + abs(objective(expected))), (
        f"Nash-MTL: mtbench's f(a) {objective(weights):.12g} above torchjd's "
        f"{objective(expected):.12g}"
    )
    scaled = expected * np.sqrt(size)
    residual = float(np.linalg.norm(k @ scaled - 1.0 / scaled))
    if residual >= 1e-3:
        # The reference did not converge (ECOS fails on these ill-conditioned Gramians and the
        # sequence stops where it started, or at its iteration limit); mtbench must solve the
        # system (a zero gradient has no solution: its weight is capped, the rest solve it).
        mine = weights * np.sqrt(size)
        finite = np.abs(mine) < 1e7
        mismatch = np.abs(k @ mine - 1.0 / mine)[finite]
        assert np.all(mismatch <= 1e-6 * np.abs(1.0 / mine)[finite]), f"|Ka - 1/a| = {mismatch}"
        return {"reference not converged, residual": residual}
    slack = 2.0 * float(np.max(scaled)) ** 2 * residual / np.sqrt(size)
    spread = float(np.sqrt(np.linalg.eigvalsh(gram)[-1] * case.num_tasks))
    return {
        "update": check_update(update, expected_update, grads, RTOL, spread * slack),
        "weights": check_weights(weights, expected, RTOL, slack),
    }


# FairGrad --------------------------------------------------------------------------------------
def check_fairgrad(alpha: float) -> Callable[..., dict]:
    def check(weighting, case: Case, monkeypatch: pytest.MonkeyPatch) -> dict:
        grads = case.gradients()
        update, weights = aggregate(weighting, grads)
        expected = weigh(reference(lambda: tja.FairGradWeighting(alpha=alpha)), grads)
        errors = {"update": check_update(update, expected @ grads, grads, RTOL)}
        # a zero gradient's weight has no finite value (G w = w^(-1/alpha) has no solution);
        # both stop somewhere large, which leaves the update unchanged: compare the others
        moving = np.linalg.norm(grads, axis=1) > 0
        errors["weights"] = check_weights(weights[moving], expected[moving], RTOL)
        return errors

    return check


# ConFIG, GradDrop (aggregators without weights in torchjd) --------------------------------------
def check_config(weighting, case: Case, monkeypatch: pytest.MonkeyPatch) -> dict:
    """torchjd's ConFIG has no ``Weighting``: the update is compared (mtbench's update is its
    weights applied to the gradients, so they are checked with it)."""
    grads = case.gradients()
    update, _ = aggregate(weighting, grads)
    expected = reference(tja.ConFIG)(jacobian(grads)).numpy()
    return {"update": check_update(update, expected, grads, RTOL)}


def check_graddrop(weighting, case: Case, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Both draw one uniform number per parameter; mtbench gets torchjd's draws. The purity is
    compared with the draws in the gradients' dtype on both sides, so torchjd gets the float32
    matrix. torchjd's GradDrop has no weights; mtbench's (the share of each task's L1 mass that
    passes) are checked through the update."""
    grads = case.gradients()
    torch.manual_seed(2024)
    draws = torch.rand(NUM_PARAMETERS, dtype=torch.float32).numpy()
    monkeypatch.setattr(weighting.random, "uniform", lambda shape: tf.constant(draws))
    update, _ = aggregate(weighting, grads)
    torch.manual_seed(2024)
    expected = reference(tja.GradDrop)(torch.from_numpy(grads)).numpy().astype(np.float64)
    return {"update": check_update(update, expected, grads, RTOL)}


# PCGrad, GradVac (random orders) -----------------------------------------------------------------
def order_keys(orders: list[list[int]]) -> tf.Tensor:
    """Uniform draws for which mtbench's ``argsort(draws + 2 I)`` gives ``orders``."""
    t = len(orders)
    keys = np.zeros((t, t), np.float32)
    for i, order in enumerate(orders):
        keys[i, order] = np.arange(len(order)) / t
    return tf.constant(keys)


def pcgrad_orders(num_tasks: int, seed: int) -> list[list[int]]:
    """The orders torchjd's PCGradWeighting draws after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return [[j for j in torch.randperm(num_tasks).tolist() if j != i] for i in range(num_tasks)]


def gradvac_orders(num_tasks: int, seed: int) -> list[list[int]]:
    """The orders torchjd's GradVacWeighting draws after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    orders = []
    for i in range(num_tasks):
        others = [j for j in range(num_tasks) if j != i]
        orders.append([others[k] for k in torch.randperm(len(others)).tolist()])
    return orders


def check_pcgrad(weighting, case: Case, monkeypatch: pytest.MonkeyPatch) -> dict:
    grads = case.gradients()
    orders = pcgrad_orders(case.num_tasks, seed=7)
    monkeypatch.setattr(weighting.random, "uniform", lambda shape: order_keys(orders))
    update, weights = aggregate(weighting, grads)
    torch.manual_seed(7)
    expected = weigh(reference(tja.PCGradWeighting), grads)
    return {
        "update": check_update(update, expected @ grads, grads, RTOL),
        "weights": check_weights(weights, expected, RTOL),
    }


def check_gradvac(weighting, case: Case, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Three steps (the targets are state), beta = 0.5 on both sides."""
    made = reference(lambda: tja.GradVacWeighting(beta=0.5, eps=1e-8))
    errors = {"update": 0.0, "weights": 0.0}
    for step, grads in enumerate(case.steps(3)):
        orders = gradvac_orders(case.num_tasks, seed=11 + step)
        monkeypatch.setattr(weighting.random, "uniform", lambda shape, o=orders: order_keys(o))
        update, weights = aggregate(weighting, grads)
        torch.manual_seed(11 + step)
        expected = weigh(made, grads)
        errors["update"] = max(
            errors["update"], check_update(update, expected @ grads, grads, RTOL)
        )
        errors["weights"] = max(errors["weights"], check_weights(weights, expected, RTOL))
    return errors


# Stateful matrix weightings -----------------------------------------------------------------------
def stateful(
    make: Callable[[], Any], of_gramian: bool, scale: Callable[[int], float] = lambda t: 1.0
) -> Callable[..., dict]:
    """Four steps of a stateful method; torchjd's weights times ``scale(T)``."""

    def check(weighting, case: Case, monkeypatch: pytest.MonkeyPatch) -> dict:
        made = reference(make)
        errors = {"update": 0.0, "weights": 0.0}
        for grads in case.steps(4):
            update, weights = aggregate(weighting, grads)
            expected = weigh(made, grads, of_gramian) * scale(case.num_tasks)
            errors["update"] = max(
                errors["update"], check_update(update, expected @ grads, grads, RTOL)
            )
            errors["weights"] = max(errors["weights"], check_weights(weights, expected, RTOL))
        return errors

    return check


def sampled(
    make: Callable[[], Any], gram_of: tuple[int, int], update_of: int
) -> Callable[..., dict]:
    """Four updates of a method that draws three batches per update (MoDo, SDMGrad): mtbench
    gets the three batches' gradients; torchjd's weighting gets ``J_a J_b'`` of the two batches
    ``gram_of`` (its documented input, from independent batches) and the update is its weights
    on batch ``update_of``."""

    def check(weighting, case: Case, monkeypatch: pytest.MonkeyPatch) -> dict:
        made = reference(make)
        errors = {"update": 0.0, "weights": 0.0}
        steps = case.steps(6)
        for k in range(4):
            batches = np.stack([steps[k], steps[k + 1], steps[k + 2]])
            with tf.device("/CPU:0"):
                update, weights = weighting.aggregate_samples(
                    tf.constant(batches), tf.ones(batches.shape[:2])
                )
            update, weights = update.numpy().astype(np.float64), weights.numpy().astype(np.float64)
            a, b = (batches[i].astype(np.float64) for i in gram_of)
            expected = made(torch.from_numpy(a @ b.T)).detach().numpy().astype(np.float64)
            target = batches[update_of].astype(np.float64)
            errors["update"] = max(
                errors["update"], check_update(update, expected @ target, target, RTOL)
            )
            errors["weights"] = max(errors["weights"], check_weights(weights, expected, RTOL))
        return errors

    return check


# ------------------------------------------------------------------------------------ the table
@dataclasses.dataclass(frozen=True)
class Method:
    """mtbench's plugin ``name`` with ``options``, checked by ``check`` against torchjd."""

    id: str
    name: str
    options: dict
    check: Callable[..., dict]


def quadprog(norm_eps: float = 1e-4, reg_eps: float = 1e-4) -> Any:
    return tjl.QuadprogProjector(norm_eps=norm_eps, reg_eps=reg_eps)


METHODS = [
    Method(
        "upgrad",
        "upgrad",
        {"norm_eps": 1e-4, "reg_eps": 1e-4},
        closed_form(lambda: tja.UPGradWeighting(projector=quadprog())),
    ),
    Method(
        "dualproj",
        "dualproj",
        {"norm_eps": 1e-4, "reg_eps": 1e-4},
        closed_form(lambda: tja.DualProjWeighting(projector=quadprog())),
    ),
    Method("imtl", "imtl", {"upper_bound": False}, closed_form(tja.IMTLGWeighting)),
    *(
        Method(f"aligned_mtl-{mode}", "aligned_mtl", {"scale_mode": mode}, check_aligned_mtl(mode))
        for mode in ("min", "median", "rmse")
    ),
    Method("mgda", "mgda", {"normalization": "none"}, check_mgda),
    Method("cr_mogm", "cr_mogm", {"alpha": 0.9}, check_cr_mogm),
    Method("cagrad", "cagrad", {"c": CAGRAD_C, "rescale": 0, "sum_scale": False}, check_cagrad),
    Method(
        "nashmtl",
        "nashmtl",
        {"update_weights_every": 1, "optim_niter": 20, "max_norm": 1.0},
        check_nashmtl,
    ),
    *(
        Method(f"fairgrad-{alpha:g}", "fairgrad", {"alpha": alpha}, check_fairgrad(alpha))
        for alpha in (1.0, 2.0)
    ),
    Method("config", "config", {}, check_config),
    Method("pcgrad", "pcgrad", {"reduction": "sum"}, check_pcgrad),
    Method("gradvac", "gradvac", {"beta": 0.5}, check_gradvac),
    Method("graddrop", "graddrop", {"leak": 0.0}, check_graddrop),
    Method(
        "excess_mtl",
        "excess_mtl",
        {"robust_step_size": 0.5},
        stateful(
            lambda: tja.ExcessMTLWeighting(robust_step_size=0.5, n_warmup_steps=1),
            of_gramian=False,
            scale=float,  # torchjd's weights sum to 1, mtbench's to T
        ),
    ),
    Method(
        "modo",
        "modo",
        {"gamma": 0.1, "rho": 0.1},
        sampled(lambda: tja.MoDoWeighting(gamma=0.1, rho=0.1), gram_of=(0, 1), update_of=2),
    ),
    Method(
        "sdmgrad",
        "sdmgrad",
        {"lamda": 0.3, "niter": 20, "weight_lr": 10.0, "weight_momentum": 0.5},
        sampled(
            lambda: tja.SDMGradWeighting(lr=10.0, momentum=0.5, n_iter=20, lambda_=0.3),
            gram_of=(1, 2),
            update_of=0,
        ),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.id)
def test_matches_torchjd(method: Method, case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    weighting = plugin(method.name, case.num_tasks, **method.options)
    method.check(weighting, case, monkeypatch)


# ------------------------------------------------------------------- the checks can fail at all


def flip_cross_terms(gram: tf.Tensor) -> tf.Tensor:
    """``<g_i, g_j>`` negated for ``i != j``: every conflict reads as agreement and back."""
    eye = tf.eye(gram.shape[0], dtype=gram.dtype)
    return gram * (2.0 * eye - 1.0)


class SignFlippedPCGrad(PCGrad):
    """Projects where gradients agree instead of where they conflict."""

    def coefficients(self, gram: tf.Tensor, orders: tf.Tensor) -> tf.Tensor:
        return super().coefficients(flip_cross_terms(tf.cast(gram, tf.float64)), orders)


class SignFlippedUPGrad(UPGrad):
    def weights_from_gram(self, gram: tf.Tensor) -> tf.Tensor:
        return super().weights_from_gram(flip_cross_terms(tf.cast(gram, tf.float64)))


class SignFlippedMGDA(MGDA):
    def aggregate(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        weights = min_norm_weights(flip_cross_terms(gramian(grads)))
        return combine(grads, weights), weights


PERTURBED = [
    (SignFlippedPCGrad, {"reduction": "sum"}, check_pcgrad),
    (SignFlippedUPGrad, {}, METHODS[0].check),
    (SignFlippedMGDA, {}, check_mgda),
]


@pytest.mark.parametrize("kind", ["conflicting", "one_1000x_larger"])
@pytest.mark.parametrize("perturbed", PERTURBED, ids=lambda p: p[0].__name__)
def test_a_perturbed_method_fails(perturbed, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same comparison rejects a method with a sign flipped in its projection."""
    cls, options, check = perturbed
    case = Case(kind, 3)
    weighting = cls(**options)
    weighting.setup([f"task{t}" for t in range(case.num_tasks)])
    with pytest.raises(AssertionError, match="mtbench"):
        check(weighting, case, monkeypatch)
