"""Conformance tests for ``head`` plugins: :class:`HeadSuite`.

::

    from mtbench.testing import ArraySpec, HeadSuite

    class TestMine(HeadSuite):
        config = {"name": "mine", "hidden_units": [8]}

A head maps the backbone's features to a dict of outputs, one per task, shaped
``(batch, *task.output_shape)`` as each task's kind asks (``TaskSpec.output_shape``). It is
built as :func:`mtbench.model.build_model` builds it: with ``tasks``, and with ``seed`` and
``hierarchy`` where its factory declares them.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pytest

from mtbench.data import TaskHierarchy
from mtbench.tasks import TaskSpec
from mtbench.testing import _layers
from mtbench.testing.arrays import ArraySpec

__all__ = ["HeadSuite"]


class HeadSuite:
    """Outputs per task, trains, serialises, seeds each task's part alike in single-task and
    joint models; subclass it with ``config``.

    Class attributes:
        config: ``{"name": <registered head>, **options}``.
        tasks: The tasks the head predicts (default: a classification and a regression task).
        features: One example of the backbone's features.
        hierarchy: Passed to a head that declares ``hierarchy`` (``None``: none).
        coupled_tasks: Tasks whose output depends on other tasks by design (a hierarchy's
            parent predicted through its child): left out of the single-versus-joint check.
        batch_size: Examples per test batch.
        seed: The run seed the head gets, and Keras's global seed before building.
    """

    config: ClassVar[Mapping[str, Any]] = {}
    tasks: ClassVar[Sequence[TaskSpec]] = (
        TaskSpec("label", 5),
        TaskSpec("target", kind="regression", label_shape=(2,)),
    )
    features: ClassVar[ArraySpec] = ArraySpec((16,), low=-1.0)
    hierarchy: ClassVar[TaskHierarchy | None] = None
    coupled_tasks: ClassVar[tuple[str, ...]] = ()
    batch_size: ClassVar[int] = 3
    seed: ClassVar[int] = 0

    # ------------------------------------------------------------------------------ helpers
    @property
    def factory(self) -> Any:
        from mtbench import registry

        return registry.get("head", str(self.config["name"])).factory

    def accepts(self, argument: str) -> bool:
        try:
            return argument in inspect.signature(self.factory).parameters
        except (TypeError, ValueError):
            return False

    def build(self, tasks: Sequence[TaskSpec] | None = None, precision: str = "float32") -> Any:
        """The head for ``tasks`` (default :attr:`tasks`), built as ``build_model`` builds it,
        under ``precision``, on a test batch."""
        import keras

        from mtbench import registry
        from mtbench.model import dtype_policy

        extra: dict[str, Any] = {"tasks": list(self.tasks if tasks is None else tasks)}
        if self.accepts("seed"):
            extra["seed"] = self.seed
        if self.accepts("hierarchy"):
            extra["hierarchy"] = self.hierarchy
        keras.utils.set_random_seed(self.seed)
        with dtype_policy(precision):
            layer = registry.build("head", dict(self.config), **extra)
            assert isinstance(layer, keras.layers.Layer), (
                f"head '{self.config.get('name')}' built a {type(layer).__name__}, not a "
                "keras.layers.Layer"
            )
            layer(self.inputs(layer))
        return layer

    def batch(self, salt: int = 0) -> np.ndarray:
        return self.features.sample(np.random.default_rng([self.seed, salt]), self.batch_size)

    def inputs(self, layer: Any, salt: int = 0) -> Any:
        return _layers.as_inputs(self.batch(salt), layer.compute_dtype)

    # -------------------------------------------------------------------------------- tests
    def test_outputs_one_entry_per_task_shaped_by_its_kind(self) -> None:
        layer = self.build()
        outputs = layer(self.inputs(layer, salt=1))
        assert isinstance(outputs, Mapping), f"the head returned a {type(outputs).__name__}"
        assert sorted(outputs) == sorted(t.name for t in self.tasks)
        for task in self.tasks:
            expected = (self.batch_size, *task.output_shape)
            assert tuple(outputs[task.name].shape) == expected, (
                f"task '{task.name}' ({task.kind}): outputs of shape "
                f"{tuple(outputs[task.name].shape)}, its kind asks for {expected} (size the "
                "output from task.output_shape)"
            )
            assert outputs[task.name].dtype.is_floating
            assert np.isfinite(_layers.numpy(outputs[task.name])).all()

    def test_a_gradient_reaches_every_trainable_variable(self) -> None:
        layer = self.build()
        _layers.trainable_gradients(layer, self.inputs(layer, 2), np.random.default_rng(self.seed))

    def test_serialization_round_trip_gives_identical_outputs(self) -> None:
        layer = self.build()
        inputs = self.inputs(layer, salt=3)
        clone = _layers.reloaded(layer)
        clone(inputs)
        clone.set_weights(layer.get_weights())
        assert clone.get_config() == layer.get_config()
        _layers.outputs_equal(clone(inputs), layer(inputs), "reloaded")

    def test_a_seeded_task_starts_alike_alone_and_joint(self) -> None:
        """With ``seed``, each task's part of the head starts from the same weights in its
        single-task model and in the joint one (listed last there), so single-task baselines
        and joint runs start alike (see :func:`mtbench.model.task_seed`)."""
        if not self.accepts("seed"):
            pytest.skip("the head declares no `seed` argument")
        joint = {}
        for task in self.tasks:
            if task.name in self.coupled_tasks:
                continue
            alone = self.build([task])
            together = self.build([t for t in self.tasks if t.name != task.name] + [task])
            inputs = self.inputs(alone, salt=4)
            joint[task.name] = together(inputs)[task.name]
            _layers.outputs_equal(
                alone(inputs)[task.name], joint[task.name], f"task '{task.name}' alone and joint"
            )
        assert joint, "every task is coupled: nothing to compare"

    def test_mixed_bfloat16(self) -> None:
        layer = self.build(precision="mixed_bfloat16")
        _layers.float_variables_are_float32(layer)
        outputs = layer(self.inputs(layer, salt=5))
        for task in self.tasks:
            assert tuple(outputs[task.name].shape) == (self.batch_size, *task.output_shape)
            assert np.isfinite(_layers.numpy(outputs[task.name])).all()
        _layers.trainable_gradients(layer, self.inputs(layer, 6), np.random.default_rng(self.seed))
