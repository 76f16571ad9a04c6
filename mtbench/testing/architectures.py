"""Conformance tests for ``architecture`` plugins: :class:`ArchitectureSuite`.

::

    from mtbench.testing import ArchitectureSuite

    class TestMine(ArchitectureSuite):
        config = {"name": "mine", "num_experts": 2}
        invalid_options = [({"num_experts": 0}, r"num_experts=0")]

The suite builds the architecture as :func:`mtbench.model.build_model` does, from a backbone and
a head plugin (by default a tiny ``mlp`` backbone of two stages and the ``dense`` head, on
random feature vectors; set :attr:`~ArchitectureSuite.backbone`, :attr:`~ArchitectureSuite.inputs`
and :attr:`~ArchitectureSuite.preprocessing` to test it on other backbones, e.g. molecules), and
checks the contract of :class:`mtbench.model.MultiTaskNetwork`:

- outputs: a float32 tensor per task, shaped as the task's kind asks, for any batch size;
- declaration: ``shared_variables`` and ``task_variables`` hold every trainable variable once,
  the shared ones are exactly those that the outputs of several tasks reach (what gradient-level
  methods combine), each task variable is reached by one task only, and nothing is left that no
  task reaches (it would never be trained);
- ``shared_representation``: true only when :meth:`features` is the one tensor every task's head
  reads, which is what :func:`mtbench.architecture.check_weighting` relies on to accept methods
  that combine feature gradients (and refuse them otherwise);
- a model saved through Keras reloads with identical outputs, and a seed builds the same
  variables in the same order (what resuming from a checkpoint needs);
- mixed bfloat16: float32 variables and float32, finite outputs;
- a few training steps of the trainer, with ``ew`` and with a gradient-level method, give finite
  losses and move the weights;
- options the plugin refuses (:attr:`~ArchitectureSuite.invalid_options`, for a plugin that
  declares options) are refused before any data is read
  (:func:`mtbench.architecture.check_config`) and when the model is built.

Most tests build a model and run one ``check_*`` method on it; a plugin's own tests may run
several checks on one model they built (``suite.check_outputs(model)`` etc.). With the suite's
tiny defaults (two training steps on 16 examples) an architecture takes seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from mtbench.tasks import TaskSpec
from mtbench.testing import _layers
from mtbench.testing.arrays import ArraySpec, sample

__all__ = ["ArchitectureSuite"]


class ArchitectureSuite:
    """Builds, declares its variables, serialises and trains; subclass it with ``config``.

    Class attributes:
        config: ``{"name": <registered architecture>, **options}`` (small options keep it fast).
        backbone: The backbone plugin's config the architecture assembles.
        head: The head plugin's config.
        tasks: The tasks (default: two classification tasks and a regression).
        inputs: One example as the dataset gives it: an :class:`ArraySpec` or a dict of them.
        preprocessing: A factory of the dataset's preprocessing layer (called with no
            argument), or ``None`` (floating inputs are cast to the compute dtype).
        invalid_options: ``(options, message)`` pairs: each set of options, added to
            :attr:`config`, must be refused with a :class:`~mtbench.config.ConfigError` whose
            text matches the regular expression ``message``.
        gradient_method: The gradient-level weighting method the training test uses besides
            ``ew`` (one that combines gradients of the shared parameters, which every
            architecture must train).
        batch_size: Examples per test batch.
        seed: The seed models are built from, and of the random inputs.
    """

    config: ClassVar[Mapping[str, Any]] = {}
    backbone: ClassVar[Mapping[str, Any]] = {"name": "mlp", "hidden_units": [8, 8]}
    head: ClassVar[Mapping[str, Any]] = {"name": "dense"}
    tasks: ClassVar[Sequence[TaskSpec]] = (
        TaskSpec("label", 3),
        TaskSpec("other", 2),
        TaskSpec("target", kind="regression"),
    )
    inputs: ClassVar[ArraySpec | Mapping[str, ArraySpec]] = ArraySpec((6,), low=-1.0)
    preprocessing: ClassVar[Callable[[], Any] | None] = None
    invalid_options: ClassVar[Sequence[tuple[Mapping[str, Any], str]]] = ()
    gradient_method: ClassVar[Mapping[str, Any]] = {"name": "pcgrad", "seed": 0}
    batch_size: ClassVar[int] = 4
    seed: ClassVar[int] = 0

    # ------------------------------------------------------------------------------ helpers
    @property
    def name(self) -> str:
        if not self.config.get("name"):
            pytest.fail(
                f"{type(self).__name__}.config is not set: name the architecture, e.g. "
                'config = {"name": "mine"}'
            )
        return str(self.config["name"])

    def batch(self, size: int | None = None, salt: int = 0) -> Any:
        return sample(
            self.inputs, np.random.default_rng([self.seed, salt]), size or self.batch_size
        )

    def tensors(self, batch: Any) -> Any:
        import tensorflow as tf

        return tf.nest.map_structure(tf.constant, batch)

    def build(self, precision: str = "float32", seed: int | None = None, **options: Any) -> Any:
        """The architecture of :attr:`config` (plus ``options``), built by ``build_model``."""
        from mtbench.model import MultiTaskNetwork, build_model

        preprocessing = None if self.preprocessing is None else type(self).preprocessing()
        model = build_model(
            dict(self.backbone),
            dict(self.head),
            list(self.tasks),
            self.batch(1),
            architecture={**self.config, **options},
            precision=precision,
            seed=self.seed if seed is None else seed,
            preprocessing=preprocessing,
        )
        assert isinstance(model, MultiTaskNetwork), type(model)
        return model

    def labels(self, task: TaskSpec, rng: np.random.Generator, size: int) -> np.ndarray:
        """Random labels of ``task`` for ``size`` examples, as a dataset gives them."""
        shape = (size, *task.label_shape)
        if task.kind == "regression":
            return rng.normal(size=shape).astype(np.float32)
        if task.kind == "multilabel":
            return rng.integers(0, 2, shape)
        return rng.integers(0, task.num_classes, shape)

    def split(self, size: int, salt: int) -> Any:
        from mtbench.data import Split

        rng = np.random.default_rng([self.seed, salt, 1])
        return Split(
            self.batch(size, salt), {t.name: self.labels(t, rng, size) for t in self.tasks}
        )

    def reached(self, model: Any, inputs: Any) -> dict[int, set[str]]:
        """Which tasks' outputs reach each trainable variable (training mode; each task's
        outputs weighted by random numbers, so that no gradient cancels by chance)."""
        import tensorflow as tf

        variables = model.trainable_variables
        rng = np.random.default_rng(self.seed)
        with tf.GradientTape(persistent=True) as tape:
            outputs = model(inputs, training=True)
            sums = {
                t: tf.reduce_sum(tf.cast(o, tf.float32) * rng.normal(size=o.shape))
                for t, o in outputs.items()
            }
        reached: dict[int, set[str]] = {id(v): set() for v in variables}
        for task, total in sums.items():
            for v, g in zip(variables, tape.gradient(total, variables), strict=True):
                if g is not None:
                    reached[id(v)].add(task)
        del tape
        return reached

    # -------------------------------------------------------------------------------- tests
    def test_outputs_a_float32_tensor_per_task_shaped_by_its_kind(self) -> None:
        self.check_outputs(self.build())

    def check_outputs(self, model: Any) -> None:
        """A float32 tensor per task, shaped as its kind asks, for two batch sizes."""
        for size in (self.batch_size, self.batch_size + 1):  # no batch size is built in
            outputs = model(self.tensors(self.batch(size, salt=size)), training=False)
            assert isinstance(outputs, Mapping), f"the model returned a {type(outputs).__name__}"
            assert sorted(outputs) == sorted(t.name for t in self.tasks), (
                f"outputs for {sorted(outputs)}; the tasks are {[t.name for t in self.tasks]}"
            )
            for task in self.tasks:
                value = outputs[task.name]
                expected = (size, *task.output_shape)
                assert tuple(value.shape) == expected, (
                    f"task '{task.name}' ({task.kind}): outputs of shape {tuple(value.shape)}, "
                    f"its kind asks for {expected}"
                )
                assert value.dtype == "float32", (
                    f"task '{task.name}': outputs in {value.dtype.name}; predict_heads returns "
                    "float32 (MultiTaskNetwork.as_float32)"
                )
                assert np.isfinite(value.numpy()).all(), f"task '{task.name}': not finite"

    def test_shared_and_task_variables_hold_every_trainable_variable_once(self) -> None:
        self.check_declared_once(self.build())

    def check_declared_once(self, model: Any) -> None:
        """``shared_variables`` and ``task_variables`` hold every trainable variable once."""
        shared, owned = list(model.shared_variables), list(model.task_variables)
        trainable = {id(v): v.path for v in model.trainable_variables}
        declared = [id(v) for v in shared + owned]
        twice = sorted({trainable.get(i, "?") for i in declared if declared.count(i) > 1})
        assert not twice, f"declared more than once (shared and task, or twice): {twice}"
        missing = sorted(p for i, p in trainable.items() if i not in set(declared))
        assert not missing, (
            f"trainable variables neither shared nor task variables: {missing}. The trainer "
            "updates only the declared variables: declare them in shared_variables (reached by "
            "several tasks' losses) or task_variables"
        )
        stray = [v for v in shared + owned if id(v) not in trainable]
        assert not stray, (
            f"declared variables that are not trainable variables of the model: "
            f"{[getattr(v, 'path', v) for v in stray]}"
        )

    def test_shared_variables_are_exactly_those_several_tasks_reach(self) -> None:
        self.check_shared_are_reached_by_several_tasks(self.build())

    def check_shared_are_reached_by_several_tasks(self, model: Any) -> None:
        """Shared variables are those several tasks' outputs reach; task variables one task's."""
        reached = self.reached(model, self.tensors(self.batch(salt=1)))
        shared = {id(v) for v in model.shared_variables}
        for variable in model.trainable_variables:
            tasks = sorted(reached[id(variable)])
            assert tasks, (
                f"{variable.path}: no task's outputs reach it, so it is never trained (make it "
                "non-trainable, or use it)"
            )
            if id(variable) in shared:
                assert len(tasks) >= 2, (
                    f"{variable.path} is declared shared, but only task {tasks} reaches it: "
                    "declare it a task variable (gradient-level methods combine the gradients "
                    "of every task for the shared variables)"
                )
            else:
                assert len(tasks) == 1, (
                    f"{variable.path} is declared a task variable, but the outputs of tasks "
                    f"{tasks} reach it: declare it shared, so that gradient-level methods "
                    "combine its per-task gradients"
                )
        of_task = getattr(model, "variables_of_task", None)
        if callable(of_task):  # ComposedNetwork: each task's own variables
            for task in self.tasks:
                for variable in of_task(task.name):
                    assert reached[id(variable)] == {task.name}, (
                        f"{variable.path} is a variable of task '{task.name}', but tasks "
                        f"{sorted(reached[id(variable)])} reach it"
                    )

    def test_shared_representation_is_what_check_weighting_relies_on(self) -> None:
        self.check_shared_representation(self.build())

    def check_shared_representation(self, model: Any) -> None:
        """``shared_representation`` is true exactly when every head reads ``features()``, one
        tensor, and ``check_weighting`` accepts or refuses feature-level methods by it."""
        import tensorflow as tf

        from mtbench import registry
        from mtbench.architecture import ArchitectureError, check_weighting

        features_method = registry.build(
            "weighting", {"name": "graddrop", "gradient_of": "features"}
        )
        parameters_method = registry.build("weighting", dict(self.gradient_method))
        check_weighting(model, parameters_method, architecture=self.name, weighting_name="m")
        if not model.shared_representation:
            with pytest.raises(ArchitectureError, match="gradient_of='features'"):
                check_weighting(model, features_method, architecture=self.name, weighting_name="m")
            return
        check_weighting(model, features_method, architecture=self.name, weighting_name="m")
        inputs = self.tensors(self.batch(salt=2))
        with tf.GradientTape(persistent=True) as tape:
            features = model.features(inputs, training=False)
            assert isinstance(features, tf.Tensor), (
                f"shared_representation is True but features() returned a "
                f"{type(features).__name__}: it must be the one tensor every head reads (feature-"
                "level methods combine the per-task gradients of it)"
            )
            tape.watch(features)
            outputs = model.predict_heads(features, training=False)
            sums = {t: tf.reduce_sum(o) for t, o in outputs.items()}
        assert features.shape[0] == self.batch_size, f"features of shape {features.shape}"
        direct = model(inputs, training=False)
        for task, value in outputs.items():
            _layers.outputs_equal(value, direct[task], f"predict_heads(features) of '{task}'")
            assert tape.gradient(sums[task], features) is not None, (
                f"task '{task}''s outputs do not depend on features(): with "
                "shared_representation every head reads that one representation"
            )
        del tape

    def test_save_and_reload_through_keras_give_identical_outputs(self, tmp_path: Path) -> None:
        self.check_reloads(self.build(), tmp_path)

    def check_reloads(self, model: Any, folder: Path) -> None:
        """Saved to ``folder`` through Keras, the model reloads with identical outputs."""
        import keras

        inputs = self.tensors(self.batch(salt=3))
        before = model(inputs, training=False)
        model.save(folder / "model.keras")
        restored = keras.saving.load_model(folder / "model.keras")
        assert type(restored) is type(model), f"reloaded as {type(restored).__name__}"
        after = restored(inputs, training=False)
        for task in before:
            np.testing.assert_array_equal(
                after[task].numpy(), before[task].numpy(), err_msg=f"task '{task}' reloaded"
            )
        for what in ("shared_variables", "task_variables"):
            assert [v.shape for v in getattr(restored, what)] == [
                v.shape for v in getattr(model, what)
            ], f"{what} differ after reloading"

    def test_a_seed_builds_the_same_variables_in_the_same_order(self) -> None:
        """What resuming needs: checkpoints store the variables in order."""
        first, again = self.build(), self.build()
        assert [(v.name, tuple(v.shape)) for v in first.variables] == [
            (v.name, tuple(v.shape)) for v in again.variables
        ], "two builds of one config create other variables, or in another order"
        for a, b in zip(first.variables, again.variables, strict=True):
            np.testing.assert_array_equal(
                a.numpy(), b.numpy(), err_msg=f"{a.path}: another initial value for one seed"
            )
        index = {id(v): i for i, v in enumerate(first.variables)}
        index_again = {id(v): i for i, v in enumerate(again.variables)}
        for what in ("shared_variables", "task_variables"):
            assert [index[id(v)] for v in getattr(first, what)] == [
                index_again[id(v)] for v in getattr(again, what)
            ], f"{what} come in another order"

    def test_mixed_bfloat16(self) -> None:
        model = self.build("mixed_bfloat16")
        _layers.float_variables_are_float32(model)
        outputs = model(self.tensors(self.batch(salt=4)), training=False)
        for task in self.tasks:
            value = outputs[task.name]
            assert value.dtype == "float32", f"task '{task.name}': {value.dtype.name}"
            assert np.isfinite(value.numpy()).all(), f"task '{task.name}': not finite"

    @pytest.mark.parametrize("level", ["loss", "gradient"])
    def test_a_few_training_steps_give_finite_losses_and_move_the_weights(self, level: str) -> None:
        from mtbench import registry
        from mtbench.architecture import check_weighting
        from mtbench.config import Optimizer, TrainerConfig
        from mtbench.data import DatasetSplits, validate
        from mtbench.trainer import Trainer

        method = {"name": "ew"} if level == "loss" else dict(self.gradient_method)
        model = self.build()
        weighting = registry.build("weighting", method)
        check_weighting(model, weighting, architecture=self.name, weighting_name=method["name"])
        train, val = self.split(16 * weighting.samples_per_step, 5), self.split(8, 6)
        kinds = validate(DatasetSplits(train, val, val, tuple(self.tasks)), "suite data")
        config = TrainerConfig(
            optimizer=Optimizer.sgd,
            learning_rate=0.05,
            batch_size=8,
            epochs=1,
            progress=False,
            checkpoint_every=0,
        )
        trainer = Trainer(config, model, weighting, kinds, precision="float32", seed=self.seed)
        initial = [v.numpy().copy() for v in model.trainable_variables]
        result = trainer.fit(train, val)
        for record in result.history:
            assert all(np.isfinite(v) for v in record.train_loss.values()), record.train_loss
        assert all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)
        moved = {
            id(v)
            for a, v in zip(initial, model.trainable_variables, strict=True)
            if not np.array_equal(a, v.numpy())
        }
        assert moved, f"{method['name']}: no weight moved"
        shared = model.shared_variables
        assert not shared or any(id(v) in moved for v in shared), (
            f"{method['name']}: no shared variable moved (the trainer updates the declared "
            "shared variables with the method's combination of the tasks' gradients)"
        )

    def test_refuses_invalid_options(self) -> None:
        from mtbench.architecture import check_config
        from mtbench.config import ConfigError

        if not self.invalid_options:
            pytest.skip(f"{type(self).__name__}.invalid_options lists none")
        for options, message in self.invalid_options:
            config = {**self.config, **options}
            with pytest.raises(ConfigError, match=message):
                check_config(config)  # what the protocol does before reading any data
            with pytest.raises(ConfigError, match=message):
                self.build(**options)
