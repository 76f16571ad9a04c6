"""Conformance tests for ``weighting`` plugins: :class:`WeightingSuite` and property mixins.

A plugin's tests subclass the suite, name the method's config and list the properties the method
claims::

    from mtbench.testing import (
        Deterministic, MeanWhenAgreeing, NonConflicting, PermutationInvariant, Serialises,
        WeightingSuite,
    )

    class TestMine(WeightingSuite, NonConflicting, PermutationInvariant, MeanWhenAgreeing,
                   Serialises, Deterministic):
        config = {"name": "mine", "alpha": 0.5}
        agreeing_scale = 1.0  # identical gradients g give the update 1.0 * g

Every test feeds the method what the trainer feeds it: float32 per-task gradients ``[T, P]`` and
losses ``[T]`` (``aggregate``, or ``aggregate_samples`` with ``S`` copies of the batch for a
method that draws ``S`` batches per update), or the losses alone (``combine``), followed by
``after_update`` where the method asks for it and ``on_epoch_end`` (each step is treated as an
epoch of one batch, so epoch-level state such as DWA's or STCH's moves too). Properties are
checked on ``steps`` consecutive updates of one instance, so state carried between steps is part
of what is tested; the tests that only inspect a trajectory share one per test class and task
count (:meth:`WeightingSuite.reference`).

For a loss-level method the update is what the model feels: ``sum_t w_t g_t`` with
``w = d objective / d losses`` (the *effective* weights, from a gradient tape), computed from the
same random task gradients; the weights a method logs are checked separately.

Tolerances are relative to the largest magnitude compared (:attr:`WeightingSuite.tolerance`):
float32 inputs and outputs leave errors near 1e-6 of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest

__all__ = [
    "Batch",
    "Deterministic",
    "FiniteOnMissingTask",
    "FiniteOnZeroGradient",
    "LinearUnderScaling",
    "MeanWhenAgreeing",
    "NonConflicting",
    "NonNegativeWeights",
    "PermutationInvariant",
    "ScaleInvariant",
    "Serialises",
    "Step",
    "WeightingSuite",
]


@dataclass(frozen=True)
class Step:
    """One update of a weighting method, as float64 NumPy arrays.

    Attributes:
        update: ``[P]``: the combined gradient (a loss-level method: ``effective @ grads``).
        weights: ``[T]``: the weights the method returns (and the trainer logs).
        objective: The combined loss (loss-level methods; ``None`` for gradient methods).
        effective: ``[T]``: ``d objective / d losses`` (loss-level methods; ``None`` otherwise).
    """

    update: np.ndarray
    weights: np.ndarray
    objective: float | None = None
    effective: np.ndarray | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"update": self.update, "weights": self.weights}
        if self.objective is not None:
            out["objective"] = np.asarray(self.objective)
        if self.effective is not None:
            out["effective"] = self.effective
        return out


@dataclass
class Batch:
    """What the trainer hands a method for one update.

    Attributes:
        grads: ``[T, P]``: each task's gradient.
        losses: ``[T]``: each task's loss.
        after: ``[T]``: the losses after the update (for a method that asks for them).
    """

    grads: np.ndarray
    losses: np.ndarray
    after: np.ndarray

    def take(self, order: Sequence[int]) -> Batch:
        return Batch(self.grads[order], self.losses[order], self.after[order])

    def scaled(self, task: int, k: float) -> Batch:
        """Task ``task``'s loss multiplied by ``k``: its loss, gradient and later loss too."""
        factor = np.ones(len(self.losses))
        factor[task] = k
        return Batch(self.grads * factor[:, None], self.losses * factor, self.after * factor)


def assert_close(actual: Any, expected: Any, rtol: float, what: str) -> None:
    """``actual`` equals ``expected`` up to ``rtol`` times the largest magnitude in ``expected``
    (a value that is zero in exact arithmetic is compared as round-off of that magnitude)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-30)
    error = float(np.abs(actual - expected).max(initial=0.0))
    assert error <= rtol * scale, (
        f"{what}: differs by {error:.3g}, more than {rtol:g} x {scale:.3g} (the largest "
        f"magnitude expected)\nactual:   {actual}\nexpected: {expected}"
    )


#: (test class, number of tasks) -> (batches, steps): see :meth:`WeightingSuite.reference`
_REFERENCE_RUNS: dict[tuple[type, int], tuple[list[Batch], list[Step]]] = {}


class WeightingSuite:
    """The tests every weighting method passes; subclass it with the method's ``config``.

    Class attributes (override in the subclass):
        config: The method's config: ``{"name": <registered name>, **options}``.
        num_tasks: The task counts the method is built, set up and run for.
        size: ``P``, the length of each task gradient (above the task counts for which a
            property needs linearly independent gradients).
        steps: Consecutive updates each property is checked on.
        tolerance: Relative tolerance of comparisons (see :func:`assert_close`).
        seed: Seeds the random gradients and losses, and Keras's global seed before a method is
            built (a method whose ``seed`` option is ``null`` derives its stream from it).
        compiled: Run every update inside a ``tf.function``, as the trainer does (one trace per
            instance: faster for a method whose solver loops many times eagerly).
    """

    config: ClassVar[Mapping[str, Any]] = {}
    num_tasks: ClassVar[tuple[int, ...]] = (2, 3, 20)
    size: ClassVar[int] = 24
    steps: ClassVar[int] = 2
    tolerance: ClassVar[float] = 1e-4
    seed: ClassVar[int] = 0
    compiled: ClassVar[bool] = False

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Run every test that takes ``num_tasks`` once per entry of :attr:`num_tasks`."""
        if "num_tasks" in metafunc.fixturenames:
            metafunc.parametrize("num_tasks", self.num_tasks, ids=[f"T{t}" for t in self.num_tasks])

    # ------------------------------------------------------------------------------ helpers
    @property
    def name(self) -> str:
        if "name" not in self.config:
            pytest.fail(
                f"{type(self).__name__}.config has no 'name': set config = "
                "{'name': <the registered weighting>, **options}"
            )
        return str(self.config["name"])

    @staticmethod
    def task_names(num_tasks: int) -> list[str]:
        return [f"task{t}" for t in range(num_tasks)]

    def build(self, num_tasks: int, names: Sequence[str] | None = None, **options: Any) -> Any:
        """The method of :attr:`config` (updated with ``options``), set up for ``num_tasks``
        tasks named ``names`` as the trainer sets it up, after seeding Keras with :attr:`seed`."""
        import keras

        from mtbench import registry
        from mtbench.weighting import GradientWeighting, LossWeighting

        keras.utils.set_random_seed(self.seed)
        weighting = registry.build("weighting", {**self.config, **options})
        assert isinstance(weighting, LossWeighting | GradientWeighting), (
            f"weighting '{self.name}' built a {type(weighting).__name__}; a weighting plugin "
            "must subclass mtbench.weighting.LossWeighting or GradientWeighting"
        )
        weighting.setup(list(names) if names is not None else self.task_names(num_tasks))
        if weighting.level == "gradient" and weighting.gradient_of == "shared_parameters":
            weighting.build_gradient_state(self.size)  # as the trainer does
        return weighting

    @staticmethod
    def raw_step(weighting: Any) -> Callable[..., tuple[Any, ...]]:
        """The method's entry points on float32 tensors ``(grads, losses, losses_after)``, called
        as the trainer calls them in its training step. Returns ``(update, weights)``, or for a
        loss-level method ``(objective, weights, d objective / d losses)``."""
        import tensorflow as tf

        def loss_level(grads: tf.Tensor, losses: tf.Tensor, after: tf.Tensor) -> tuple:
            with tf.GradientTape() as tape:
                tape.watch(losses)
                objective, weights = weighting.combine(losses)
            effective = tape.gradient(objective, losses)
            if effective is None:
                effective = tf.zeros_like(losses)
            if weighting.needs_losses_after_update:
                weighting.after_update(losses, after)
            return objective, weights, effective

        def gradient_level(grads: tf.Tensor, losses: tf.Tensor, after: tf.Tensor) -> tuple:
            if weighting.skips_gradients:
                weighting.gradients_needed()  # advances its step counter, as in the trainer
            if weighting.samples_per_step > 1:
                return weighting.aggregate_samples(grads, losses)
            return weighting.aggregate(grads, losses)

        return loss_level if weighting.level == "loss" else gradient_level

    def compiled_step(self, weighting: Any) -> Callable[..., tuple[Any, ...]]:
        """A ``tf.function`` of :meth:`raw_step`, one per instance."""
        import tensorflow as tf

        functions = self.__dict__.setdefault("_compiled_steps", {})
        if id(weighting) not in functions:
            functions[id(weighting)] = (weighting, tf.function(self.raw_step(weighting)))
        return functions[id(weighting)][1]

    def step(
        self,
        weighting: Any,
        batch: Batch,
        *,
        call: Callable[..., Any] | None = None,
        samples: Sequence[Batch] = (),
    ) -> Step:
        """One update of ``weighting`` from ``batch``.

        Args:
            call: Replaces :meth:`raw_step` (e.g. by a ``tf.function`` of it).
            samples: For a method drawing ``S`` batches per update, the other ``S - 1`` (by
                default copies of ``batch``, so that properties of one batch carry over).
        """
        import tensorflow as tf

        batches = [batch]
        if weighting.samples_per_step > 1:
            batches += list(samples) or [batch] * (weighting.samples_per_step - 1)
            assert len(batches) == weighting.samples_per_step

        def tensor(values: list[np.ndarray]) -> tf.Tensor:
            stacked = np.stack(values) if weighting.samples_per_step > 1 else values[0]
            return tf.constant(np.asarray(stacked, np.float32))

        if call is None:
            call = self.compiled_step(weighting) if self.compiled else self.raw_step(weighting)
        outputs = call(
            tensor([b.grads for b in batches]),
            tensor([b.losses for b in batches]),
            tensor([b.after for b in batches]),
        )
        for value in outputs:
            assert value.dtype == tf.float32, (
                f"weighting '{self.name}' returned a {value.dtype.name} tensor; every tensor a "
                "weighting returns is float32"
            )
        if weighting.level == "loss":
            objective, weights, effective = (np.asarray(v, np.float64) for v in outputs)
            assert objective.shape == (), f"combine() gave an objective of shape {objective.shape}"
            grads = np.asarray(batch.grads, np.float32).astype(np.float64)
            with np.errstate(invalid="ignore", over="ignore"):  # non-finite: check_finite says
                update = effective @ grads
            return Step(update, weights, float(objective), effective)
        update, weights = (np.asarray(v, np.float64) for v in outputs)
        return Step(update, weights)

    def run(
        self,
        weighting: Any,
        batches: Sequence[Batch],
        *,
        call: Callable[..., Any] | None = None,
        epoch_losses: Sequence[np.ndarray] | None = None,
        first_epoch: int = 1,
    ) -> list[Step]:
        """Consecutive updates, each followed by ``on_epoch_end`` (an epoch of one batch, with
        that batch's losses as the epoch's mean unless ``epoch_losses`` gives them); checks
        that every output is finite and shaped as the interface says."""
        steps = []
        for index, batch in enumerate(batches):
            result = self.step(weighting, batch, call=call)
            self.check_finite(result, len(batch.losses), f"step {index + 1}")
            steps.append(result)
            means = batch.losses if epoch_losses is None else epoch_losses[index]
            weighting.on_epoch_end(first_epoch + index, np.asarray(means, np.float32))
        return steps

    def check_finite(self, result: Step, num_tasks: int, where: str) -> None:
        assert result.update.shape == (self.size,), (
            f"{where}: the update has shape {result.update.shape}, expected ({self.size},)"
        )
        assert result.weights.shape == (num_tasks,), (
            f"{where}: the weights have shape {result.weights.shape}, expected ({num_tasks},)"
        )
        for key, value in result.arrays().items():
            assert np.isfinite(value).all(), f"{where}: non-finite {key}: {value}"

    def rng(self, salt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, salt])

    def batches(
        self, num_tasks: int, salt: int, conflicting: bool = False, count: int | None = None
    ) -> list[Batch]:
        """``count`` (default :attr:`steps`) random batches: gradients whose norms differ up to
        15 times (with ``conflicting``, task 1's points against task 0's), losses in [0.5, 2]
        that each update lowers by 1 to 30 percent."""
        rng = self.rng(salt)
        batches = []
        for _ in range(self.steps if count is None else count):
            grads = rng.normal(size=(num_tasks, self.size))
            grads *= rng.uniform(0.2, 3.0, size=(num_tasks, 1))
            if conflicting and num_tasks > 1:
                grads[1] = -0.8 * grads[0] + 0.3 * grads[1]
            losses = rng.uniform(0.5, 2.0, size=num_tasks)
            batches.append(Batch(grads, losses, losses * rng.uniform(0.7, 0.99, size=num_tasks)))
        return batches

    def reference(self, num_tasks: int) -> tuple[list[Batch], list[Step]]:
        """The reference trajectory for ``num_tasks``: :attr:`steps` updates of a fresh
        instance on conflicting random batches. Computed once per test class and task count and
        shared by the tests that only inspect it or compare against it."""
        key = (type(self), num_tasks)
        if key not in _REFERENCE_RUNS:
            batches = self.batches(num_tasks, salt=0, conflicting=True)
            _REFERENCE_RUNS[key] = (batches, self.run(self.build(num_tasks), batches))
        return _REFERENCE_RUNS[key]

    def require_gradient_level(self, weighting: Any, mixin: str, why: str) -> None:
        if weighting.level != "gradient":
            pytest.fail(f"{mixin} applies to gradient-level methods only ({why}): remove it")

    def check_variables_finite(self, weighting: Any) -> None:
        for variable in weighting.variables:
            value = np.asarray(variable.numpy())
            if np.issubdtype(value.dtype, np.floating):
                assert np.isfinite(value).all(), f"the state variable {variable.path}: {value}"

    # -------------------------------------------------------------------------------- tests
    def test_builds_and_sets_up(self, num_tasks: int) -> None:
        from mtbench import registry

        assert registry.get("weighting", self.name).kind == "weighting"
        weighting = self.build(num_tasks)
        assert weighting.tasks == tuple(self.task_names(num_tasks))
        assert weighting.num_tasks == num_tasks
        assert weighting.level in ("loss", "gradient")
        assert weighting.samples_per_step >= 1
        if weighting.samples_per_step > 1:
            assert weighting.level == "gradient", "samples_per_step > 1 needs a gradient method"
        self.check_variables_finite(weighting)

    def test_outputs_are_finite_and_shaped(self, num_tasks: int) -> None:
        """Every output finite and shaped as the interface says (checked by :meth:`run`), on
        the reference trajectory; a method drawing several batches also on independent ones."""
        self.reference(num_tasks)
        weighting = self.build(num_tasks)
        if weighting.samples_per_step > 1:
            batches = self.batches(num_tasks, salt=1)
            others = self.batches(num_tasks, salt=2)
            for index, batch in enumerate(batches):
                count = weighting.samples_per_step - 1
                samples = [others[(index + i) % len(others)] for i in range(count)]
                result = self.step(weighting, batch, samples=samples)
                self.check_finite(result, num_tasks, f"step {index + 1}, independent batches")
                weighting.on_epoch_end(index + 1, np.asarray(batch.losses, np.float32))
            self.check_variables_finite(weighting)

    def test_runs_in_a_compiled_step(self) -> None:
        """The trainer calls the method inside a ``tf.function``: it must trace (no Python
        branching on tensor values) and give what it gives eagerly."""
        num_tasks = 3
        batches, reference = self.reference(num_tasks)  # compiled if self.compiled, else eager
        method = self.build(num_tasks)
        call = self.raw_step(method) if self.compiled else self.compiled_step(method)
        other = self.run(method, batches, call=call)
        for index, (a, b) in enumerate(zip(other, reference, strict=True)):
            for key, value in a.arrays().items():
                assert_close(value, b.arrays()[key], self.tolerance, f"step {index + 1}: {key}")


# --------------------------------------------------------------------------------- properties
class FiniteOnZeroGradient:
    """A task gradient of exactly zero (with a positive loss), or all of them (a stationary
    point), gives a finite update and finite weights and leaves the state finite."""

    def test_finite_when_gradients_are_zero(self: Any, num_tasks: int) -> None:
        weighting = self.build(num_tasks)
        self.require_gradient_level(weighting, "FiniteOnZeroGradient", "it sees no gradient")
        batches = self.batches(num_tasks, salt=10, count=3)
        batches[0].grads[0] = 0.0
        batches[1].grads[:] = 0.0
        batches[-1].grads[-1] = 0.0
        self.run(weighting, batches)
        self.check_variables_finite(weighting)


class FiniteOnMissingTask:
    """A task without a labelled example in the batch has exactly zero loss and gradient (see
    :mod:`mtbench.tasks`); the method still gives a finite update and weights (and objective,
    and gradient of it) and its state stays finite. Epoch means stay positive, as the task is
    labelled elsewhere in the epoch."""

    def test_finite_when_a_task_has_no_labels_in_the_batch(self: Any, num_tasks: int) -> None:
        weighting = self.build(num_tasks)
        batches = self.batches(num_tasks, salt=12, count=3)  # missing, all labelled, missing
        epoch_means = [b.losses.copy() for b in batches]
        for index, task in ((0, 0), (len(batches) - 1, num_tasks - 1)):
            batches[index].grads[task] = 0.0
            batches[index].losses[task] = 0.0
            batches[index].after[task] = 0.0
        self.run(weighting, batches, epoch_losses=epoch_means)
        self.check_variables_finite(weighting)


class NonNegativeWeights:
    """The weights the method returns are never negative (at loss level, the effective weights
    ``d objective / d losses`` too)."""

    def test_weights_are_non_negative(self: Any, num_tasks: int) -> None:
        for index, result in enumerate(self.reference(num_tasks)[1]):
            for key in ("weights", "effective"):
                value = result.arrays().get(key)
                if value is not None:
                    floor = -self.tolerance * max(np.abs(value).max(), 1e-30)
                    assert (value >= floor).all(), f"step {index + 1}: negative {key} {value}"


class PermutationInvariant:
    """Permuting the tasks (their order and names) permutes the weights and leaves the update
    (and a loss-level objective) unchanged, at every step."""

    def test_permuting_tasks_permutes_weights_and_keeps_the_update(self: Any) -> None:
        num_tasks = 3
        order = [2, 0, 1]
        names = self.task_names(num_tasks)
        batches, original = self.reference(num_tasks)
        permuted = self.run(
            self.build(num_tasks, names=[names[i] for i in order]), [b.take(order) for b in batches]
        )
        for index, (a, b) in enumerate(zip(permuted, original, strict=True)):
            where = f"step {index + 1}, tasks in the order {order}"
            assert_close(a.update, b.update, self.tolerance, f"{where}: update")
            assert_close(a.weights, b.weights[order], self.tolerance, f"{where}: weights")
            if b.objective is not None:
                assert_close(a.objective, b.objective, self.tolerance, f"{where}: objective")


class MeanWhenAgreeing:
    """Identical task gradients ``g`` with equal losses of 1 give the update
    ``agreeing_scale * g`` on the first update after set-up (times the number of tasks when
    ``agreeing_per_task``, for methods that sum, like ``ew``).

    Attributes:
        agreeing_scale: The scale the method documents (1: the mean gradient).
        agreeing_per_task: Whether the scale is multiplied by the number of tasks.
    """

    agreeing_scale: ClassVar[float] = 1.0
    agreeing_per_task: ClassVar[bool] = False

    def test_identical_gradients_give_their_scaled_mean(self: Any, num_tasks: int) -> None:
        g = np.asarray(self.rng(40).normal(size=self.size), np.float32).astype(np.float64)
        ones = np.ones(num_tasks)
        result = self.step(
            self.build(num_tasks), Batch(np.tile(g, (num_tasks, 1)), ones, 0.9 * ones)
        )
        self.check_finite(result, num_tasks, "the first step")
        scale = self.agreeing_scale * (num_tasks if self.agreeing_per_task else 1)
        assert_close(result.update, scale * g, self.tolerance, f"the update against {scale:g} g")


class NonConflicting:
    """The update conflicts with no task, ``<update, g_t> >= 0`` for every task (up to
    round-off, ``tolerance * |update| |g_t|``), on gradients with a conflict, at every step.

    Attributes:
        nonconflicting_options: Options under which the property holds exactly, merged into
            the config for this test only (e.g. ``{"reg_eps": 1e-9}`` for a method whose
            regularisation allows conflicts of its own size).
    """

    nonconflicting_options: ClassVar[Mapping[str, Any]] = {}

    def test_update_conflicts_with_no_task(self: Any, num_tasks: int) -> None:
        weighting = self.build(num_tasks, **self.nonconflicting_options)
        self.require_gradient_level(
            weighting, "NonConflicting", "a loss-level update is whatever the losses' weights make"
        )
        if num_tasks > self.size:
            pytest.skip(f"{num_tasks} gradients of size {self.size} are linearly dependent")
        batches, steps = self.reference(num_tasks)
        if self.nonconflicting_options:
            steps = self.run(weighting, batches)
        for index, (batch, result) in enumerate(zip(batches, steps, strict=True)):
            grads = np.asarray(batch.grads, np.float32).astype(np.float64)
            products = grads @ result.update
            floor = -self.tolerance * np.linalg.norm(result.update) * np.linalg.norm(grads, axis=1)
            assert (products >= floor).all(), (
                f"step {index + 1}: <update, g_t> = {products} (a negative one conflicts)"
            )


class LinearUnderScaling:
    """Multiplying every task gradient by ``k > 0`` (losses unchanged) multiplies the update by
    ``k``, at every step."""

    def test_scaling_the_gradients_scales_the_update(self: Any) -> None:
        num_tasks = 3
        self.require_gradient_level(
            self.build(num_tasks),
            "LinearUnderScaling",
            "a loss-level update is linear in the gradients",
        )
        batches, reference = self.reference(num_tasks)
        for k in (0.25, 8.0):
            scaled = self.run(
                self.build(num_tasks), [Batch(k * b.grads, b.losses, b.after) for b in batches]
            )
            for index, (a, b) in enumerate(zip(scaled, reference, strict=True)):
                assert_close(a.update, k * b.update, self.tolerance, f"step {index + 1}, x{k}")


class ScaleInvariant:
    """Multiplying one task's loss by ``k > 0`` (its loss, gradient and later loss) leaves the
    direction of the update unchanged, and its length too unless ``scale_invariant_length`` is
    ``False``, at every step.

    Attributes:
        scale_invariant_length: Whether the update's length is invariant too.
    """

    scale_invariant_length: ClassVar[bool] = True

    def test_scaling_a_task_loss_keeps_the_update(self: Any) -> None:
        num_tasks = 3
        batches, reference = self.reference(num_tasks)
        for k in (0.1, 30.0):
            scaled = self.run(self.build(num_tasks), [b.scaled(0, k) for b in batches])
            for index, (a, b) in enumerate(zip(scaled, reference, strict=True)):
                got, want = a.update, b.update
                if not self.scale_invariant_length:
                    norm = np.linalg.norm(got)
                    assert norm > 0 and got @ want > 0, f"step {index + 1}: the update reversed"
                    got = got * (np.linalg.norm(want) / norm)
                assert_close(got, want, self.tolerance, f"step {index + 1}, task 0's loss x{k}")


class Serialises:
    """``get_config`` holds every option of the plugin's config and ``from_config`` rebuilds an
    equal method; all state lives in the layer's variables, so a copy given the original's
    variables (a checkpoint) continues exactly like it."""

    def test_config_round_trips(self: Any) -> None:
        from mtbench import registry

        plugin = registry.get("weighting", self.name)
        weighting = self.build(3)
        config = weighting.get_config()
        missing = sorted(f for f in plugin.config.__dataclass_fields__ if f not in config)
        assert not missing, f"get_config() lacks the options {missing}"
        assert type(weighting).from_config(config).get_config() == config

    def test_state_lives_in_the_variables(self: Any) -> None:
        num_tasks = 3
        batches = self.reference(num_tasks)[0]
        original = self.build(num_tasks)
        self.run(original, batches[:-1])
        copy = self.build(num_tasks)
        assert len(copy.variables) == len(original.variables)
        for target, source in zip(copy.variables, original.variables, strict=True):
            target.assign(source)
        last = len(batches)
        a = self.run(copy, batches[-1:], first_epoch=last)
        b = self.run(original, batches[-1:], first_epoch=last)
        for key, value in a[0].arrays().items():
            np.testing.assert_array_equal(value, b[0].arrays()[key], err_msg=key)


class Deterministic:
    """Two instances built from the same config under the same seed give identical outputs."""

    def test_same_seed_same_outputs(self: Any) -> None:
        num_tasks = 3
        batches, first = self.reference(num_tasks)
        second = self.run(self.build(num_tasks), batches)
        for index, (a, b) in enumerate(zip(first, second, strict=True)):
            for key, value in a.arrays().items():
                np.testing.assert_array_equal(value, b.arrays()[key], err_msg=f"step {index + 1}")
