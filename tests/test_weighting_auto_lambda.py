"""Auto-Lambda (``auto_lambda``) and the look-ahead interface that serves it.

The reference is the authors' code, github.com/lorenmt/auto-lambda at commit
bdba6365953f7ebb3a8ae33fabfecd3f933ecc27: ``auto_lambda.py`` (``AutoLambda.virtual_step``,
``unrolled_backward``, ``compute_hessian``) driven as ``trainer_dense.py`` drives it (the meta
step with ``alpha = scheduler.get_last_lr()[0]`` and ``torch.optim.Adam`` on the weights, then
the model's ``torch.optim.SGD`` step on ``sum_t lambda_t L_t``). Its licence does not allow
copying it, so :class:`ReferenceAutoLambda` below re-derives it in numpy float64, line by line,
for a model small enough to differentiate by hand (a shared ``tanh`` layer and a linear head per
task, softmax cross-entropy). That re-derivation was itself checked once against the authors'
class run in PyTorch 2.x (float64, with ``compute_loss`` as plain cross-entropy) on the same
model, weights and batches, four steps with SGD momentum 0.9 and weight decay 0.05 (decaying every
parameter, as the reference does), every task primary and one: the largest relative differences
were 2e-14 (weights), 2e-13 (meta gradients) and 7e-16 (parameters).

mtbench runs the same steps through :class:`mtbench.trainer.Trainer` (the compiled training
function, the meta batches of :mod:`mtbench.pipeline`) in float32, on the same batches, which
the test reads back from the trainer's pipeline. Tolerances (:data:`RTOL`, :data:`META_RTOL`):
parameters and weights to ``1e-4`` of their size; the meta gradient, a central difference of
float32 losses, to ``5e-4`` of its largest entry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import train_tiny

from mtbench import registry
from mtbench.config import Optimizer, TrainerConfig
from mtbench.data import Split
from mtbench.model import MultiTaskModel
from mtbench.pipeline import EpochBatches
from mtbench.tasks import TaskSpec, task_kinds
from mtbench.trainer import Trainer
from mtbench.weighting import LookAhead
from mtbench_plugins.heads.dense import DenseHeads
from mtbench_plugins.weighting.auto_lambda import AutoLambda
from mtbench_plugins.weighting.options import AutoLambdaConfig

REPO = Path(__file__).resolve().parent.parent

if "auto_lambda" not in registry.names("weighting"):  # until pyproject declares it
    registry.register("weighting", "auto_lambda", config=AutoLambdaConfig)(AutoLambda)


# ================================================================== the reference, in numpy
def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class TinyNet:
    """``h = tanh(x W + b)``, ``logits_t = h V_t + c_t``; parameters as a dict of float64 arrays.

    ``grad`` differentiates ``sum_t w_t L_t`` (each ``L_t`` the mean cross-entropy over the
    batch's examples labelled for task t, 0 without one, as mtbench defines it) by hand.
    """

    def __init__(self, tasks: list[str]) -> None:
        self.tasks = tasks

    def losses(self, p: dict, x: np.ndarray, y: dict) -> np.ndarray:
        return self._forward(p, x, y)[0]

    def _forward(self, p: dict, x: np.ndarray, y: dict):
        h = np.tanh(x @ p["W"] + p["b"])
        losses, slopes = [], []
        for t in self.tasks:
            probs = _softmax(h @ p[f"V_{t}"] + p[f"c_{t}"])
            labelled = y[t] >= 0
            n = max(int(labelled.sum()), 1)
            rows = np.flatnonzero(labelled)
            losses.append(-np.log(probs[rows, y[t][rows]]).sum() / n)
            slope = probs.copy()
            slope[rows, y[t][rows]] -= 1.0
            slope[~labelled] = 0.0
            slopes.append(slope / n)
        return np.array(losses), h, slopes

    def grad(self, p: dict, x: np.ndarray, y: dict, w: np.ndarray) -> tuple[np.ndarray, dict]:
        losses, h, slopes = self._forward(p, x, y)
        g, dh = {}, np.zeros_like(h)
        for i, t in enumerate(self.tasks):
            g[f"V_{t}"] = w[i] * h.T @ slopes[i]
            g[f"c_{t}"] = w[i] * slopes[i].sum(axis=0)
            dh += w[i] * slopes[i] @ p[f"V_{t}"].T
        dz = dh * (1.0 - h**2)
        g["W"], g["b"] = x.T @ dz, dz.sum(axis=0)
        return losses, g


class TorchAdam:
    """``torch.optim.Adam`` with its defaults (betas 0.9, 0.999, eps 1e-8, no weight decay)."""

    def __init__(self, lr: float, size: int) -> None:
        self.lr, self.m, self.v, self.t = lr, np.zeros(size), np.zeros(size), 0

    def step(self, param: np.ndarray, grad: np.ndarray) -> np.ndarray:
        self.t += 1
        self.m = 0.9 * self.m + 0.1 * grad
        self.v = 0.999 * self.v + 0.001 * grad**2
        denom = np.sqrt(self.v) / np.sqrt(1 - 0.999**self.t) + 1e-8
        return param - self.lr / (1 - 0.9**self.t) * self.m / denom


class ReferenceAutoLambda:
    """``AutoLambda`` and ``trainer_dense.py``'s training step, in numpy float64.

    ``decayed`` names the parameters the model's optimizer decays (the reference's SGD decays
    all of them; mtbench's skips biases, so the test passes mtbench's set).
    """

    def __init__(self, net, params, primary, init, autol_lr, lr, momentum, weight_decay, decayed):
        self.net, self.p = net, dict(params)
        self.meta_weights = np.full(len(net.tasks), init)
        self.pri_weights = np.array([1.0 if t in primary else 0.0 for t in net.tasks])
        self.meta_optim = TorchAdam(autol_lr, len(net.tasks))
        self.lr, self.momentum, self.wd, self.decayed = lr, momentum, weight_decay, decayed
        self.buffers: dict[str, np.ndarray] = {}  # SGD's momentum_buffer, once it exists
        self.last_meta_grad = np.zeros(len(net.tasks))

    def _wd(self, name: str) -> float:
        return self.wd if name in self.decayed else 0.0

    def virtual_step(self, x, y, alpha):
        _, gradients = self.net.grad(self.p, x, y, self.meta_weights)
        model_ = {}
        for k, weight in self.p.items():
            m = self.buffers.get(k, 0.0) * self.momentum
            model_[k] = weight - alpha * (m + gradients[k] + self._wd(k) * weight)
        return model_

    def unrolled_backward(self, x, y, val_x, val_y, alpha):
        model_ = self.virtual_step(x, y, alpha)
        _, d_model = self.net.grad(model_, val_x, val_y, self.pri_weights)
        hessian = self.compute_hessian(d_model, x, y)
        return -alpha * hessian

    def compute_hessian(self, d_model, x, y):
        norm = np.sqrt(sum(np.sum(d**2) for d in d_model.values()))
        eps = 0.01 / norm
        plus = {k: p + eps * d_model[k] for k, p in self.p.items()}
        d_weight_p = self.net.losses(plus, x, y)  # d/dlambda of sum_t lambda_t L_t(theta+)
        minus = {k: p - eps * d_model[k] for k, p in self.p.items()}
        d_weight_n = self.net.losses(minus, x, y)
        return (d_weight_p - d_weight_n) / (2.0 * eps)

    def train_step(self, x, y, val_x, val_y):
        meta_grad = self.unrolled_backward(x, y, val_x, val_y, self.lr)
        self.last_meta_grad = meta_grad
        self.meta_weights = self.meta_optim.step(self.meta_weights, meta_grad)
        _, grads = self.net.grad(self.p, x, y, self.meta_weights)
        for k, weight in self.p.items():  # torch.optim.SGD (coupled weight decay, dampening 0)
            g = grads[k] + self._wd(k) * weight
            self.buffers[k] = self.momentum * self.buffers[k] + g if k in self.buffers else g
            self.p[k] = weight - self.lr * self.buffers[k]


# =========================================================================== mtbench's side
FEATURES, HIDDEN = 5, 6
TASKS = (TaskSpec("a", 3), TaskSpec("b", 4), TaskSpec("c", 2))


def _model(tasks) -> MultiTaskModel:
    keras.utils.set_random_seed(0)
    backbone = keras.layers.Dense(HIDDEN, activation="tanh", name="shared")
    model = MultiTaskModel(backbone, DenseHeads(tasks, seed=0))
    model(tf.zeros([1, FEATURES]))
    return model


def _params(model: MultiTaskModel, tasks) -> dict[str, np.ndarray]:
    p = {"W": model.backbone.kernel, "b": model.backbone.bias}
    for t in tasks:
        p[f"V_{t.name}"] = model.heads.classifiers[t.name].kernel
        p[f"c_{t.name}"] = model.heads.classifiers[t.name].bias
    return {k: np.asarray(v.numpy(), np.float64) for k, v in p.items()}


def _split(tasks, size: int, seed: int, missing: dict[str, slice] | None = None) -> Split:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(size, FEATURES)).astype(np.float32)
    y = {t.name: rng.integers(0, t.num_classes, size) for t in tasks}
    for name, rows in (missing or {}).items():
        y[name][rows] = -1
    return Split(x, y)


def _kinds(tasks) -> dict:
    return {kind.name: kind for kind in task_kinds(tasks)}


def _labels(encoded: dict) -> dict[str, np.ndarray]:
    """The pipeline's ``(labels, present)`` per task as labels with -1 where missing."""
    return {t: np.where(present.numpy(), y.numpy(), -1) for t, (y, present) in encoded.items()}


def _run(tasks, steps, *, primary=(), momentum=0.9, weight_decay=0.0, missing=None):
    """``steps`` Auto-Lambda steps through the trainer and through the reference, from the same
    weights on the same batches; returns both sides' trajectories."""
    size, batch = 20, 8  # batches of 8, 8 and 4 examples
    options = {"name": "auto_lambda", "weight_lr": 0.01, "primary_tasks": list(primary)}
    weighting = registry.build("weighting", options)
    model = _model(tasks)
    start = _params(model, tasks)
    config = TrainerConfig(
        optimizer=Optimizer.sgd, learning_rate=0.1, momentum=momentum, weight_decay=weight_decay,
        batch_size=batch, epochs=1, progress=False, checkpoint_every=0,
    )  # fmt: skip
    trainer = Trainer(config, model, weighting, task_kinds(tasks), precision="float32", seed=3)
    batches = trainer.prepare(_split(tasks, size, seed=1, missing=missing))
    pairs = [
        tuple((x.numpy().astype(np.float64), _labels(y)) for x, y in p)
        for p in batches.dataset(epoch=1)
    ]
    iterator = trainer.step_iterator(batches)
    names = [t.name for t in tasks]
    reference = ReferenceAutoLambda(
        TinyNet(names), start, primary or names, 0.1, 0.01, 0.1, momentum, weight_decay,
        decayed={"W"} | {f"V_{t}" for t in names},  # mtbench decays no bias
    )  # fmt: skip
    ours, theirs = [], []
    for (x, y), (meta_x, meta_y) in pairs[:steps]:
        reference.train_step(x, y, meta_x, meta_y)
        trainer.run_steps(iterator, 1)
        theirs.append((reference.meta_weights, reference.last_meta_grad, dict(reference.p)))
        ours.append(
            (weighting.lambd.numpy(), weighting.meta_gradient.numpy(), _params(model, tasks))
        )
    return ours, theirs


#: Parameters and weights: float32 rounding through a few steps (1e-5 of their size seen).
RTOL = 1e-4
#: The meta gradient: a central difference of float32 losses, rounding error about
#: ``EPS |L| |d| / radius`` (6e-5 of the largest entry on this model; 2e-5 seen).
META_RTOL = 5e-4


def _close(actual, expected, rtol: float, what: str) -> None:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = float(np.abs(expected).max())
    error = float(np.abs(actual - expected).max())
    assert error <= rtol * scale, f"{what}: off by {error:.3g} > {rtol:g} x {scale:.3g}"


def _compare(ours, theirs) -> None:
    for step, ((lam, meta, params), (ref_lam, ref_meta, ref_params)) in enumerate(
        zip(ours, theirs, strict=True), start=1
    ):
        _close(meta, ref_meta, META_RTOL, f"step {step}: meta gradient")
        _close(lam, ref_lam, RTOL, f"step {step}: lambda")
        for name, value in ref_params.items():
            _close(params[name], value, RTOL, f"step {step}: {name}")


@pytest.mark.parametrize(
    "tasks,primary",
    [(TASKS[:2], ()), (TASKS, ()), (TASKS, ("b",))],
    ids=["2 tasks", "3 tasks", "3 tasks, primary b"],
)
def test_three_sgd_steps_with_momentum_match_the_reference(tasks, primary):
    ours, theirs = _run(tasks, 3, primary=primary)
    _compare(ours, theirs)
    # the check has teeth: the weights moved (by about Adam's step, weight_lr = 0.01, per step)
    # and the tasks' meta gradients differ by far more than the tolerance
    lam, meta = theirs[-1][0], theirs[-1][1]
    assert np.abs(lam - 0.1).min() > 5e-3
    assert np.ptp(meta) > 100 * META_RTOL * np.abs(meta).max()


def test_a_step_with_weight_decay_matches_the_reference():
    # one step: the reference's coupled and Keras's decoupled decay give the same first step
    ours, theirs = _run(TASKS, 1, weight_decay=0.05)
    _compare(ours, theirs)


def test_a_task_without_labels_in_a_batch_matches_the_reference():
    missing = {"c": slice(0, 16)}  # c labelled in 4 of 20 examples
    split = _split(TASKS, 20, seed=1, missing=missing)
    batches = EpochBatches(split, _kinds(TASKS), batch_size=8, seed=3, meta_batches=True)
    lacking = [
        not np.any(_labels(y)["c"] >= 0) for pair in batches.dataset(epoch=1) for _, y in pair
    ]
    assert any(lacking), "no batch or meta batch without a label of c: change the seed"
    ours, theirs = _run(TASKS, 3, missing=missing)
    _compare(ours, theirs)


# ============================================================ analytic check on quadratic losses
class QuadraticLookAhead(LookAhead):
    """A :class:`~mtbench.weighting.LookAhead` without a model: parameters ``theta`` (one
    vector, currently 0) and task losses ``L_t(theta) = l_t + <g_t, theta> + |theta|^2 / 2`` on
    each batch (``l``, ``g`` given per batch), a plain SGD optimizer with ``learning_rate``.
    Central differences of these quadratics are exact, so a method's meta gradient can be
    checked against its closed form, ``-lr <g_t, d>``."""

    def __init__(self, train: tuple, meta: tuple, learning_rate: float) -> None:
        self._batches = {
            "train": tuple(tf.constant(v, tf.float32) for v in train),
            "meta": tuple(tf.constant(v, tf.float32) for v in meta),
        }
        self._rate = tf.constant(learning_rate, tf.float32)
        self._theta = tf.zeros([train[1].shape[1]])

    @property
    def learning_rate(self) -> tf.Tensor:
        return self._rate

    def parameters(self) -> list[tf.Tensor]:
        return [self._theta]

    def losses(self, batch, parameters=None) -> tf.Tensor:
        (theta,) = parameters or [self._theta]
        values, grads = self._batches[batch]
        return values + tf.linalg.matvec(grads, theta) + 0.5 * tf.reduce_sum(theta**2)

    def gradient(self, batch, weights, parameters=None, *, regularization=False):
        (theta,) = parameters or [self._theta]
        _, grads = self._batches[batch]
        weights = tf.cast(weights, tf.float32)
        slope = tf.linalg.matvec(grads, weights, transpose_a=True) + tf.reduce_sum(weights) * theta
        return self.losses(batch, [theta]), [slope]

    def virtual_step(self, gradient) -> list[tf.Tensor]:
        return [self._theta - self._rate * gradient[0]]


@pytest.mark.parametrize("num_tasks", [2, 3, 20])
def test_meta_gradient_has_its_closed_form_on_quadratic_losses(num_tasks):
    rng = np.random.default_rng(num_tasks)
    size, rate, primary = 16, 0.3, [f"t{i}" for i in range(0, num_tasks, 2)]
    train = (rng.uniform(0.5, 2, num_tasks), rng.normal(size=(num_tasks, size)))
    meta = (rng.uniform(0.5, 2, num_tasks), rng.normal(size=(num_tasks, size)))
    weighting = registry.build(
        "weighting", {"name": "auto_lambda", "init_weight": 0.5, "primary_tasks": primary}
    )
    weighting.setup([f"t{i}" for i in range(num_tasks)])
    tf.function(weighting.meta_update)(QuadraticLookAhead(train, meta, rate))
    # theta' = -lr sum_t lambda_t g_t; d = sum_{p primary} (g'_p + theta'); H_t = <g_t, d>
    g, g_meta = train[1].astype(np.float32).astype(np.float64), meta[1].astype(np.float32)
    mask = np.array([1.0 if i % 2 == 0 else 0.0 for i in range(num_tasks)])
    ahead = -rate * 0.5 * g.sum(axis=0)
    d = mask @ g_meta + mask.sum() * ahead
    expected = -rate * (g @ d)
    _close(weighting.meta_gradient.numpy(), expected, 1e-3, "meta gradient")
    # Adam's first step moves every weight by weight_lr against its meta gradient's sign (to
    # float32's spacing at 0.5, 6e-8)
    np.testing.assert_allclose(
        weighting.lambd.numpy(), 0.5 - 1e-4 * np.sign(expected), rtol=0, atol=1.2e-7
    )


def test_a_zero_meta_direction_changes_nothing():
    # a primary task with no labelled example in the meta batch has loss 0 and gradient 0
    train = (np.ones(2), np.ones((2, 4)))
    meta = (np.zeros(2), np.zeros((2, 4)))
    weighting = registry.build("weighting", {"name": "auto_lambda"})
    weighting.setup(["a", "b"])
    look_ahead = QuadraticLookAhead(train, meta, 0.0)  # no look-ahead step: theta' = theta = 0
    before = [v.numpy().copy() for v in weighting.variables]
    tf.function(weighting.meta_update)(look_ahead)
    for value, variable in zip(before, weighting.variables, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.path)


# ====================================================================== interface and trainer
def test_meta_batches_are_the_training_split_in_an_independent_order():
    split = _split(TASKS, 20, seed=1)
    batches = EpochBatches(split, _kinds(TASKS), batch_size=8, seed=3, meta_batches=True)
    train, meta = batches.order(1), batches.order(1, meta=True)
    assert sorted(meta) == list(range(20)) and not np.array_equal(train, meta)
    rows = {tuple(r): i for i, r in enumerate(split.x)}
    seen_train, seen_meta = [], []
    for (x, _), (meta_x, meta_y) in batches.dataset(epoch=1):
        assert meta_x.shape == x.shape
        indices = [rows[tuple(r)] for r in meta_x.numpy()]
        assert np.array_equal(meta_y["a"][0].numpy(), split.y["a"][indices])
        seen_train += [rows[tuple(r)] for r in x.numpy()]
        seen_meta += indices
    assert seen_train == list(train) and seen_meta == list(meta)
    # resuming at batch 1 rebuilds both streams from there
    (x, _), (meta_x, _) = next(iter(batches.dataset(epoch=1, first_batch=1)))
    assert [rows[tuple(r)] for r in meta_x.numpy()] == list(meta[8:16])
    assert [rows[tuple(r)] for r in x.numpy()] == list(train[8:16])


def test_trains_the_joint_model_with_three_tasks():
    weighting, _, result = train_tiny({"name": "auto_lambda", "weight_lr": 0.01}, epochs=2)
    lam = weighting.lambd.numpy()
    assert np.all(np.isfinite(lam)) and np.abs(lam - 0.1).min() > 1e-3  # every weight learned
    assert len(set(np.round(lam, 6))) == 3
    assert all(np.isfinite(list(r.weights.values())).all() for r in result.history)


def test_trains_with_a_task_missing_labels_in_batches():
    weighting = registry.build("weighting", {"name": "auto_lambda", "weight_lr": 0.01})
    model = _model(TASKS)
    config = TrainerConfig(optimizer=Optimizer.sgd, learning_rate=0.1, batch_size=8, epochs=2,
                           progress=False, checkpoint_every=0)  # fmt: skip
    trainer = Trainer(config, model, weighting, task_kinds(TASKS), precision="float32", seed=0)
    # task c labelled in 4 of 24 examples: most batches and meta batches lack it
    result = trainer.fit(_split(TASKS, 24, 1, {"c": slice(4, None)}), _split(TASKS, 8, 2))
    for record in result.history:
        assert np.isfinite(list(record.train_loss.values())).all(), record.train_loss
    assert np.isfinite(weighting.lambd.numpy()).all()
    assert np.isfinite(weighting.meta_gradient.numpy()).all()


def test_no_primary_label_in_the_meta_batch_leaves_the_weights():
    # the meta-batch gradient is zero: no direction to differentiate along, no meta update
    weighting = registry.build("weighting", {"name": "auto_lambda", "primary_tasks": ["c"]})
    model = _model(TASKS)
    config = TrainerConfig(optimizer=Optimizer.sgd, learning_rate=0.1, batch_size=8, epochs=1,
                           progress=False, checkpoint_every=0)  # fmt: skip
    trainer = Trainer(config, model, weighting, task_kinds(TASKS), precision="float32", seed=0)
    before = _params(model, TASKS)
    result = trainer.fit(_split(TASKS, 16, 1, {"c": slice(None)}), _split(TASKS, 8, 2))
    assert np.isfinite(list(result.history[0].train_loss.values())).all()
    np.testing.assert_array_equal(weighting.lambd.numpy(), np.full(3, 0.1, np.float32))
    assert not np.allclose(_params(model, TASKS)["W"], before["W"])  # the model still trained


def test_resume_continues_lambda_and_its_adam_state(tmp_path):
    config = {"name": "auto_lambda", "weight_lr": 0.01}
    straight, model, _ = train_tiny(config, epochs=2, checkpoint_dir=tmp_path / "straight")
    train_tiny(config, epochs=1, checkpoint_dir=tmp_path / "resumed")
    resumed, resumed_model, result = train_tiny(
        config, epochs=2, checkpoint_dir=tmp_path / "resumed", resume=True
    )
    assert result.resumed_from == {"epoch": 2, "batch": 0}
    names = [v.path for v in straight.variables]
    assert any("lambda" in n for n in names) and any("adam_m" in n for n in names)
    for a, b in zip(resumed.variables, straight.variables, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, err_msg=a.path)
    for a, b in zip(resumed_model.variables, model.variables, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7, err_msg=a.path)


@pytest.mark.parametrize(
    "options,key",
    [
        ({"weight_lr": 0.0}, "weighting.weight_lr"),
        ({"radius": -1.0}, "weighting.radius"),
    ],
)
def test_out_of_range_options_are_refused_with_the_key(options, key):
    with pytest.raises(ValueError, match=key):
        registry.build("weighting", {"name": "auto_lambda", **options})


def test_unknown_primary_tasks_are_refused_with_the_choices():
    weighting = registry.build("weighting", {"name": "auto_lambda", "primary_tasks": ["z"]})
    with pytest.raises(ValueError, match=r"weighting.primary_tasks .*\['z'\].*\['a', 'b'\]"):
        weighting.setup(["a", "b"])


def test_config_round_trips_and_the_config_file_gives_the_defaults():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from mtbench.cli import config_dir, prepare

    weighting = registry.build("weighting", {"name": "auto_lambda", "primary_tasks": ["a"]})
    config = weighting.get_config()
    assert type(weighting).from_config(config).get_config() == config
    prepare()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=cifar100_mtl", "weighting=auto_lambda"])
    expected = OmegaConf.to_container(
        OmegaConf.structured(registry.get("weighting", "auto_lambda").schema)
    )
    assert OmegaConf.to_container(cfg.weighting) == expected


def test_a_sampling_method_cannot_also_ask_for_meta_batches():
    class Both(AutoLambda):
        samples_per_step = 2

    with pytest.raises(ValueError, match="samples_per_step"):
        Trainer(
            TrainerConfig(progress=False), _model(TASKS), Both(), task_kinds(TASKS),
            precision="float32", seed=0,
        )  # fmt: skip


# ==================================================================================== mirrored
MIRRORED = """
    import json, sys
    import numpy as np
    from mtbench.distribute import make_strategy
    strategy = make_strategy(sys.argv[1], cpu_replicas=int(sys.argv[2]))
    import test_weighting_auto_lambda as t
    from mtbench import registry
    from mtbench.config import TrainerConfig
    from mtbench.tasks import task_kinds
    from mtbench.trainer import Trainer
    with strategy.scope():
        model = t._model(t.TASKS)
        weighting = registry.build("weighting", {"name": "auto_lambda", "weight_lr": 0.01})
    config = TrainerConfig(optimizer=t.Optimizer.sgd, learning_rate=0.1, batch_size=8, epochs=1,
                           progress=False, checkpoint_every=0)
    trainer = Trainer(config, model, weighting, task_kinds(t.TASKS), precision="float32",
                      seed=3, strategy=strategy)
    trainer.prepare(t._split(t.TASKS, 24, seed=1))
    trainer.run_steps(trainer.step_iterator(trainer.batches), 3)
    print(json.dumps({"lambda": weighting.lambd.numpy().tolist(),
                      "kernel": model.backbone.kernel.numpy().ravel().tolist(),
                      "replicas": strategy.num_replicas_in_sync}))
"""


def _in_subprocess(strategy: str, replicas: int) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO / "tests")}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MIRRORED), strategy, str(replicas)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_matches_one_device():
    one, two = _in_subprocess("none", 1), _in_subprocess("mirrored", 2)
    assert two["replicas"] == 2
    assert np.abs(np.array(one["lambda"]) - 0.1).min() > 1e-3  # the weights were learned
    # same batches and updates; only the order of floating-point sums differs
    np.testing.assert_allclose(two["lambda"], one["lambda"], rtol=1e-5)
    np.testing.assert_allclose(two["kernel"], one["kernel"], rtol=1e-4, atol=1e-6)
