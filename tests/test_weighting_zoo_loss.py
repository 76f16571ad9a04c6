"""Loss-level weightings of the zoo: ``stch``, ``scaleinvls`` and ``imtl_l``.

Reference values come from numpy float64 implementations written below after the reference code,
line by line:

- ``stch``: LibMTL ``LibMTL/weighting/STCH.py`` at commit
  4336804847eaa5e0b924b743d76beec7ac3fdc97 (identical to the authors' ``STCH_MTL/LibMTL/
  weighting/STCH.py`` in Xi-L/STCH at a510c1e635a8db2697e2cc3671ec40fbe383d28e), with the epoch
  index its ``trainer.py`` sets (0-based, at the start of each epoch);
- ``scaleinvls``: ``ScaleInvariantLinearScalarization`` in ``methods/weight_methods.py`` of
  AvivNavon/nash-mtl at cce18403ef5557a6b30f4ba43b896117107d6902 (the same class in
  Cranial-XIX/FAMO at 0a6ad06dbdd55fce73ec01e3a175c2498cd1e5e9);
- ``imtl_l``: the loss part of LibMTL's ``LibMTL/weighting/IMTL.py`` at the commit above
  (``loss_scale.exp() * losses - loss_scale``, ``loss_scale`` initialised to 0 and trained by the
  model's optimizer).

The reference returns the objective it back-propagates; what the model feels is its slope in
each task loss, ``d objective / d L_t``, computed from the float64 reference by complex-step
differentiation (exact to float64 round-off, also for slopes far below the objective's size),
holding constant what the reference detaches. mtbench runs in float32; each tolerance is stated
where it is used, in units of float32's machine epsilon ``EPS`` times the magnitudes compared.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import tiny_tasks, train_tiny

from mtbench import registry

NAMES = ("stch", "scaleinvls", "imtl_l")

EPS = float(np.finfo(np.float32).eps)


def _method(name: str, num_tasks: int, **options):
    weighting = registry.build("weighting", {"name": name, **options})
    weighting.setup([f"task{t}" for t in range(num_tasks)])
    return weighting


def _slopes(weighting, losses) -> tuple[float, np.ndarray, np.ndarray]:
    """The objective, the weights it reports and d objective / d losses (what the model feels)."""
    losses = tf.constant(np.asarray(losses, np.float32))
    with tf.GradientTape() as tape:
        tape.watch(losses)
        objective, weights = weighting.combine(losses)
    return float(objective), weights.numpy(), tape.gradient(objective, losses).numpy()


def _complex_step(f, x: np.ndarray, h: float = 1e-30) -> np.ndarray:
    """The gradient of ``f`` at ``x`` by complex steps, ``Im f(x + i h e_t) / h``: no
    subtraction, so exact to float64 round-off even for slopes many orders below ``f``."""
    x = np.asarray(x, np.float64)
    slopes = np.empty_like(x)
    for t in range(len(x)):
        step = x.astype(np.complex128)
        step[t] += 1j * h
        slopes[t] = np.imag(f(step)) / h
    return slopes


def _loss_cases() -> list[np.ndarray]:
    """Task losses: T = 2, 3, 5; spread; one 1000x larger; one tiny; all equal."""
    rng = np.random.default_rng(0)
    cases = [rng.uniform(0.1, 5.0, size=t) for t in (2, 3, 5)]
    cases.append(np.array([2.3, 2300.0, 0.7]))
    cases.append(np.array([1e-4, 0.5, 3.0]))
    cases.append(np.array([1.5, 1.5, 1.5, 1.5]))
    return [c.astype(np.float32).astype(np.float64) for c in cases]


CASES = _loss_cases()
CASE_IDS = ["T2", "T3", "T5", "1000x", "tiny", "equal"]


# ======================================================================================= STCH
class ReferenceSTCH:
    """LibMTL's ``STCH.backward`` in float64; ``epoch`` is set from outside, as its trainer does.

    ``backward`` returns the objective the reference differentiates and its slopes in the losses
    (``max_term`` is detached there, so it is held constant in the complex steps).
    """

    def __init__(self, mu: float, warmup_epoch: int) -> None:
        self.mu, self.warmup_epoch = mu, warmup_epoch
        self.epoch = 0
        self.nadir_vector: np.ndarray | None = None
        self.average_loss = 0.0
        self.average_loss_count = 0

    def backward(self, losses: np.ndarray) -> tuple[float, np.ndarray]:
        task_num = len(losses)
        if self.epoch < self.warmup_epoch:
            objective = lambda x: np.sum(np.log(x + 1e-20) * np.ones_like(x))  # noqa: E731
        elif self.epoch == self.warmup_epoch:
            objective = lambda x: np.sum(np.log(x + 1e-20) * np.ones_like(x))  # noqa: E731
            self.average_loss += losses
            self.average_loss_count += 1
        else:
            if self.nadir_vector is None:
                self.nadir_vector = self.average_loss / self.average_loss_count
            max_term = np.max(np.log(losses / self.nadir_vector + 1e-20))

            def objective(x: np.ndarray) -> float:
                logs = np.log(x / self.nadir_vector + 1e-20)
                reg_losses = logs - max_term
                return self.mu * np.log(np.sum(np.exp(reg_losses / self.mu))) * task_num

        return float(objective(losses)), _complex_step(objective, losses)


def _epoch_losses(num_tasks: int, epochs: int, batches: int, seed: int) -> np.ndarray:
    """Falling batch losses ``[epochs, batches, T]`` on different scales per task."""
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-1, 2, size=num_tasks)
    rate = rng.uniform(0.5, 0.95, size=num_tasks)
    steps = np.arange(epochs * batches).reshape(epochs, batches, 1)
    noise = rng.uniform(0.8, 1.25, size=(epochs, batches, num_tasks))
    return (scale * rate**steps * noise).astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("mu", [0.1, 1.0, 10.0])
@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_stch_matches_the_reference_through_warm_up_nadir_epoch_and_stch(num_tasks, mu):
    warmup, epochs, batches = 1, 5, 3
    losses = _epoch_losses(num_tasks, epochs, batches, seed=num_tasks)
    reference = ReferenceSTCH(mu, warmup)
    stch = _method("stch", num_tasks, mu=mu, warmup_epochs=warmup)
    for epoch in range(epochs):
        reference.epoch = epoch
        for batch in losses[epoch]:
            expected_objective, expected_slopes = reference.backward(batch)
            objective, weights, slopes = _slopes(stch, batch)
            logs = np.log(batch / (reference.nadir_vector if epoch > warmup else 1.0))
            # float32 logs carry ~EPS (1 + |l|) each; the sum or the log-sum-exp of T of them
            scale = num_tasks * (1.0 + np.abs(logs).max())
            assert objective == pytest.approx(expected_objective, abs=16 * EPS * scale)
            # softmax(l / mu) in float32: relative error ~EPS |l - max l| / mu per weight
            rtol = 16 * EPS * (1.0 + np.ptp(logs) / mu)
            np.testing.assert_allclose(slopes, expected_slopes, rtol=rtol, atol=0)
            np.testing.assert_allclose(weights, expected_slopes, rtol=rtol, atol=0)
        # the trainer passes each epoch's mean training loss (float32)
        stch.on_epoch_end(epoch + 1, losses[epoch].mean(0).astype(np.float32))
    np.testing.assert_allclose(stch.nadir.numpy(), reference.nadir_vector, rtol=2 * EPS)


@pytest.mark.parametrize("losses", CASES, ids=CASE_IDS)
def test_stch_matches_the_reference_on_fixed_losses_after_the_nadir(losses):
    """One nadir from a first epoch (``warmup_epochs=0``), then the cases; mu = 1."""
    nadir = np.linspace(0.5, 2.0, len(losses)) * np.median(losses)
    reference = ReferenceSTCH(1.0, 0)
    reference.backward(nadir)  # epoch 0 is the nadir epoch: one batch
    reference.epoch = 1
    expected_objective, expected_slopes = reference.backward(losses)
    stch = _method("stch", len(losses), warmup_epochs=0)
    stch.on_epoch_end(1, nadir.astype(np.float32))
    objective, weights, slopes = _slopes(stch, losses)
    logs = np.log(losses / reference.nadir_vector)
    scale = len(losses) * (1.0 + np.abs(logs).max())
    assert objective == pytest.approx(expected_objective, abs=16 * EPS * scale)
    rtol = 16 * EPS * (1.0 + np.ptp(logs))
    np.testing.assert_allclose(slopes, expected_slopes, rtol=rtol, atol=0)
    np.testing.assert_allclose(weights, slopes, rtol=4 * EPS)


def _stch_started(losses_at_nadir: np.ndarray, **options):
    stch = _method("stch", len(losses_at_nadir), warmup_epochs=0, **options)
    stch.on_epoch_end(1, np.asarray(losses_at_nadir, np.float32))
    return stch


def test_stch_warms_up_on_the_log_losses_and_takes_the_nadir_from_epoch_warmup_plus_one():
    stch = _method("stch", 3, warmup_epochs=2)
    losses = np.array([0.5, 2.0, 40.0], np.float32)
    epoch_means = [np.array([3.0, 4.0, 5.0]), np.array([2.0, 3.0, 4.0]), np.array([1, 2, 3.0])]
    for epoch, means in enumerate(epoch_means, start=1):
        # epochs 1..3 (two warm-up epochs and the nadir epoch): sum_t log L_t, weights 1 / L_t
        objective, weights, slopes = _slopes(stch, losses)
        assert objective == pytest.approx(float(np.log(losses).sum()), rel=4 * EPS)
        np.testing.assert_allclose(weights, 1.0 / losses, rtol=EPS)
        np.testing.assert_allclose(slopes, 1.0 / losses, rtol=EPS)
        np.testing.assert_array_equal(stch.nadir.numpy(), np.ones(3))
        stch.on_epoch_end(epoch, means.astype(np.float32))
    np.testing.assert_array_equal(stch.nadir.numpy(), epoch_means[2].astype(np.float32))
    _, weights, _ = _slopes(stch, losses)
    assert not np.allclose(weights, 1.0 / losses, rtol=1e-3)  # STCH proper from epoch 4
    stch.on_epoch_end(4, np.array([9.0, 9.0, 9.0], np.float32))
    np.testing.assert_array_equal(stch.nadir.numpy(), epoch_means[2].astype(np.float32))


@pytest.mark.parametrize("mu", [0.01, 0.3, 1.0, 5.0])
@pytest.mark.parametrize("losses", CASES, ids=CASE_IDS)
def test_stch_lies_within_the_papers_bounds_of_the_tchebycheff_value(losses, mu):
    """max_t l_t <= mu log sum_t exp(l_t / mu) <= max_t l_t + mu log T (the paper's bound); the
    objective is T times the middle term less T max_t l_t."""
    stch = _stch_started(np.median(losses) * np.ones_like(losses), mu=mu)
    objective, _, _ = _slopes(stch, losses)
    count = len(losses)
    slack = 16 * EPS * count * (1.0 + np.abs(np.log(losses / np.median(losses))).max())
    assert -slack <= objective <= count * mu * np.log(count) + slack


@pytest.mark.parametrize("losses", CASES[:5], ids=CASE_IDS[:5])
def test_stch_tends_to_tchebycheff_for_small_mu_and_to_log_losses_for_large_mu(losses):
    nadir = np.linspace(2.0, 0.5, len(losses)) * np.median(losses)
    worst = np.argmax(np.log(losses / nadir))
    # mu -> 0: only the worst normalised task is trained, with T / L_t (the gradient of T l_t)
    _, weights, _ = _slopes(_stch_started(nadir, mu=1e-4), losses)
    expected = np.zeros_like(losses)
    expected[worst] = len(losses)
    np.testing.assert_allclose(weights * losses, expected, atol=1e-5 * len(losses))
    # mu -> inf: softmax(l / mu) -> 1 / T, weights -> 1 / L_t (scaleinvls, the warm-up weights)
    mu = 1e5
    _, weights, slopes = _slopes(_stch_started(nadir, mu=mu), losses)
    spread = np.ptp(np.log(losses / nadir)) / mu  # |T softmax - 1| <= e^spread - 1
    np.testing.assert_allclose(weights * losses, 1.0, rtol=2 * spread + 16 * EPS)
    np.testing.assert_allclose(slopes, weights, rtol=16 * EPS)


@pytest.mark.parametrize("losses", CASES, ids=CASE_IDS)
def test_stch_at_the_nadir_weights_every_task_by_its_inverse_loss(losses):
    objective, weights, _ = _slopes(_stch_started(losses), losses)
    np.testing.assert_allclose(weights, 1.0 / losses, rtol=8 * EPS)
    count = len(losses)
    assert objective == pytest.approx(count * np.log(count), rel=16 * EPS)


def test_stch_is_invariant_to_a_tasks_loss_scale_through_the_nadir():
    losses = np.array([0.3, 2.0, 7.0])
    nadir = np.array([1.0, 1.5, 6.0])
    scale = np.array([1.0, 1000.0, 1e-3])
    plain = _slopes(_stch_started(nadir, mu=0.5), losses)
    scaled = _slopes(_stch_started(nadir * scale, mu=0.5), losses * scale)
    assert scaled[0] == pytest.approx(plain[0], abs=16 * EPS * 3 * 3)
    # the model's gradient sum_t w_t grad L_t is unchanged: w_t L_t agree
    np.testing.assert_allclose(scaled[1] * losses * scale, plain[1] * losses, rtol=16 * EPS)


# ================================================================================ SCALEINVLS
def _reference_scaleinvls(losses: np.ndarray, task_weights: np.ndarray | None = None):
    """``get_weighted_loss``: ``sum(log(losses) * task_weights)``, task weights 1."""
    task_weights = np.ones(len(losses)) if task_weights is None else task_weights
    objective = lambda x: np.sum(np.log(x) * task_weights)  # noqa: E731
    return float(objective(losses)), _complex_step(objective, losses)


@pytest.mark.parametrize("losses", CASES, ids=CASE_IDS)
def test_scaleinvls_matches_the_reference(losses):
    expected_objective, expected_slopes = _reference_scaleinvls(losses)
    objective, weights, slopes = _slopes(_method("scaleinvls", len(losses)), losses)
    # each float32 log carries ~EPS (1 + |log L|)
    assert objective == pytest.approx(
        expected_objective, abs=4 * EPS * np.sum(1.0 + np.abs(np.log(losses)))
    )
    np.testing.assert_allclose(slopes, expected_slopes, rtol=4 * EPS)
    np.testing.assert_allclose(weights, expected_slopes, rtol=4 * EPS)


@pytest.mark.parametrize("losses", CASES, ids=CASE_IDS)
def test_scaleinvls_weights_are_exactly_the_inverse_losses(losses):
    losses32 = losses.astype(np.float32)
    _, weights, slopes = _slopes(_method("scaleinvls", len(losses)), losses32)
    np.testing.assert_array_equal(weights, np.float32(1.0) / losses32)
    np.testing.assert_allclose(slopes, weights, rtol=2 * EPS)  # TF's log gradient: 1 ulp


def test_scaleinvls_is_invariant_to_each_tasks_loss_scale():
    losses = np.array([0.3, 2.0, 7.0])
    scale = np.array([1.0, 1000.0, 1e-3])
    method = _method("scaleinvls", 3)
    objective, weights, _ = _slopes(method, losses)
    scaled_objective, scaled_weights, _ = _slopes(method, losses * scale)
    assert scaled_objective - objective == pytest.approx(np.log(scale).sum(), abs=64 * EPS)
    np.testing.assert_allclose(scaled_weights * losses * scale, weights * losses, rtol=4 * EPS)


def test_scaleinvls_epsilon_shifts_every_loss():
    losses = np.array([0.0, 1.0, 3.0], np.float32)
    objective, weights, _ = _slopes(_method("scaleinvls", 3, epsilon=1e-8), losses)
    np.testing.assert_allclose(weights, 1.0 / (losses + np.float32(1e-8)), rtol=EPS)
    assert np.isfinite(objective)
    # epsilon 0 (the reference's): the reference takes log(0) = -inf for a zero loss; mtbench
    # leaves a task whose loss is exactly 0 (no labelled example in the batch) out, weight 0
    objective, weights, _ = _slopes(_method("scaleinvls", 3), losses)
    assert objective == pytest.approx(np.log(3.0), rel=EPS) and weights[0] == 0.0
    np.testing.assert_allclose(weights[1:], 1.0 / losses[1:], rtol=EPS)


# ==================================================================================== IMTL-L
def _reference_imtl_l(losses: np.ndarray, loss_scale: np.ndarray):
    """LibMTL IMTL's loss part: ``losses = loss_scale.exp() * losses - loss_scale``, each
    back-propagated (into the model and into ``loss_scale``), summed with IMTL-G's weights; the
    loss part alone gives them weight 1."""
    objective = lambda x, s: np.sum(np.exp(s) * x - s)  # noqa: E731
    slopes = _complex_step(lambda x: objective(x, loss_scale), losses)
    scale_grads = _complex_step(lambda s: objective(losses, s), loss_scale)
    return float(objective(losses, loss_scale)), slopes, scale_grads


@pytest.mark.parametrize("losses", CASES, ids=CASE_IDS)
def test_imtl_l_matches_the_reference(losses):
    rng = np.random.default_rng(len(losses))
    imtl = _method("imtl_l", len(losses))
    assert len(imtl.trainable_variables) == 1
    for loss_scale in (np.zeros(len(losses)), rng.uniform(-3.0, 3.0, size=len(losses))):
        loss_scale = loss_scale.astype(np.float32).astype(np.float64)
        imtl.loss_scale.assign(loss_scale.astype(np.float32))
        expected_objective, expected_slopes, expected_scale_grads = _reference_imtl_l(
            losses, loss_scale
        )
        x = tf.constant(losses.astype(np.float32))
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            objective, weights = imtl.combine(x)
        slopes = tape.gradient(objective, x).numpy()
        scale_grads = tape.gradient(objective, imtl.loss_scale).numpy()
        # terms exp(s) L and s of float32 size, each with ~EPS relative error
        magnitude = np.sum(np.exp(loss_scale) * losses + np.abs(loss_scale))
        assert float(objective) == pytest.approx(expected_objective, abs=8 * EPS * magnitude)
        np.testing.assert_allclose(slopes, expected_slopes, rtol=4 * EPS)
        np.testing.assert_allclose(weights.numpy(), expected_slopes, rtol=4 * EPS)
        # d/ds_t = exp(s_t) L_t - 1: a difference, so an absolute tolerance of its terms' size
        tolerance = 8 * EPS * (np.exp(loss_scale) * losses + 1.0)
        assert np.all(np.abs(scale_grads - expected_scale_grads) <= tolerance)


def test_imtl_l_scales_settle_where_every_scaled_loss_is_one():
    """Stationary point: exp(s_t) L_t = 1, where the weights are scaleinvls's 1 / L_t."""
    losses = np.array([0.05, 1.0, 30.0], np.float32)
    imtl = _method("imtl_l", 3)
    optimizer = keras.optimizers.Adam(0.05)
    optimizer.build(imtl.trainable_variables)

    @tf.function
    def step() -> None:
        with tf.GradientTape() as tape:
            objective, _ = imtl.combine(tf.constant(losses))
        optimizer.apply(tape.gradient(objective, imtl.trainable_variables))

    for _ in range(800):
        step()
    scaled = np.exp(imtl.loss_scale.numpy()) * losses
    np.testing.assert_allclose(scaled, 1.0, atol=0.02)
    _, weights, slopes = _slopes(imtl, losses)
    _, inverse, _ = _slopes(_method("scaleinvls", 3), losses)
    np.testing.assert_allclose(weights, inverse, rtol=0.02)
    np.testing.assert_allclose(slopes, weights, rtol=2 * EPS)


def test_imtl_l_init_scale_sets_the_first_weights():
    _, weights, _ = _slopes(_method("imtl_l", 2, init_scale=-1.0), [1.0, 2.0])
    np.testing.assert_allclose(weights, np.exp(-1.0), rtol=2 * EPS)


# ================================================================================ options
@pytest.mark.parametrize(
    "name,options,key",
    [
        ("stch", {"mu": 0.0}, "weighting.mu"),
        ("stch", {"mu": -1.0}, "weighting.mu"),
        ("stch", {"warmup_epochs": -1}, "weighting.warmup_epochs"),
        ("stch", {"warmup_epochs": 1.5}, "weighting.warmup_epochs"),
        ("scaleinvls", {"epsilon": -1e-8}, "weighting.epsilon"),
    ],
)
def test_out_of_range_options_are_refused_with_the_key(name, options, key):
    with pytest.raises(ValueError, match=key):
        registry.build("weighting", {"name": name, **options})


@pytest.mark.parametrize("name", NAMES)
def test_config_file_composes_to_the_plugin_defaults(name):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from mtbench.cli import config_dir, prepare

    prepare()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=cifar100_mtl", f"weighting={name}"])
    plugin = registry.get("weighting", name)
    expected = OmegaConf.to_container(OmegaConf.structured(plugin.schema))
    assert OmegaConf.to_container(cfg.weighting) == expected
    clone = type(registry.build("weighting", {"name": name})).from_config(
        registry.build("weighting", {"name": name}).get_config()
    )
    assert all(hasattr(clone, f) for f in plugin.config.__dataclass_fields__)


# ============================================================================ training run
def _train(config: dict, epochs: int = 3):
    weighting, _, result = train_tiny(config, epochs=epochs)
    return weighting, result


@pytest.mark.parametrize(
    "config",
    [
        {"name": "stch", "warmup_epochs": 0},  # epoch 1 gives the nadir, STCH in epochs 2 and 3
        {"name": "scaleinvls"},
        {"name": "imtl_l"},
    ],
    ids=["stch", "scaleinvls", "imtl_l"],
)
def test_trains_the_joint_model_in_float32(config):
    weighting, result = _train(config)
    if config["name"] == "stch":
        first = result.history[0].train_loss
        np.testing.assert_allclose(
            weighting.nadir.numpy(), [first[t.name] for t in tiny_tasks()], rtol=1e-5
        )
        assert float(weighting.epochs_seen.numpy()) == 3.0
    if config["name"] == "imtl_l":  # the scales are trained with the model by its optimizer
        assert not np.allclose(weighting.loss_scale.numpy(), 0.0)
