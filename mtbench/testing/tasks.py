"""Conformance tests for ``task`` plugins (task kinds): :class:`TaskKindSuite`.

::

    from mtbench.tasks import TaskSpec
    from mtbench.testing import TaskKindSuite

    class TestOrdinal(TaskKindSuite):
        spec = TaskSpec("grade", 5, kind="ordinal")

        def make_labels(self, rng, n):
            return rng.integers(0, 5, n)

        def perfect_outputs(self, kind, labels):  # optional: outputs that predict `labels`
            # K - 1 cumulative logits, P(y > k)
            return 10.0 * np.where(labels[:, None] > np.arange(4), 1.0, -1.0)

Labels come from :meth:`TaskKindSuite.make_labels`; the suite marks some missing itself, with the
kind's documented sentinel (``-1`` for integer labels, NaN for real ones): whole examples, and
single elements of array labels. The loss is checked as the trainer uses it
(:func:`mtbench.training.losses.masked_task_losses`): per example, masked so that an example none
of whose label elements is present counts for nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import pytest

from mtbench.tasks import MISSING_CLASS, Metric, TaskError, TaskKind, TaskSpec, task_kind

__all__ = ["TaskKindSuite"]


class TaskKindSuite:
    """A task kind bound to a spec: its declaration, labels, loss, metrics and predictions.

    Class attributes:
        spec: A task of the kind under test.
        num_examples: Examples per test batch.
        missing_examples: Fraction of examples whose labels are all missing.
        missing_elements: Fraction of the label elements missing in the other examples (array
            labels only; each keeps at least one present element).
        best_values: The best value of metrics whose best is not the default (1 for a
            higher-is-better ``fraction``, 0 for a lower-is-better metric).
        tolerance: Relative tolerance of comparisons.
        seed: Seeds the labels and outputs.
    """

    spec: ClassVar[TaskSpec]
    num_examples: ClassVar[int] = 48
    missing_examples: ClassVar[float] = 0.25
    missing_elements: ClassVar[float] = 0.2
    best_values: ClassVar[Mapping[str, float]] = {}
    tolerance: ClassVar[float] = 1e-5
    seed: ClassVar[int] = 0

    # ----------------------------------------------------------------------------- the hooks
    def make_labels(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` valid labels ``[n, *spec.label_shape]``, none missing (override)."""
        pytest.fail(
            f"{type(self).__name__} must implement make_labels(self, rng, n): n valid labels of "
            f"task '{getattr(self, 'spec', None)}', shaped [n, *label_shape], none missing"
        )

    def perfect_outputs(self, kind: TaskKind, labels: np.ndarray) -> np.ndarray | None:
        """Head outputs ``[n, *kind.output_shape]`` that predict ``labels`` exactly (``kind`` is
        fitted on them), or ``None`` where no output is perfect for this kind."""
        return None

    # ------------------------------------------------------------------------------ helpers
    def rng(self, salt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, salt])

    def clean_labels(self, salt: int = 0) -> np.ndarray:
        labels = np.asarray(self.make_labels(self.rng(salt), self.num_examples))
        expected = (self.num_examples, *self.spec.label_shape)
        assert labels.shape == expected, f"make_labels gave shape {labels.shape}, not {expected}"
        return labels

    def kind(self, labels: np.ndarray | None = None) -> TaskKind:
        """The kind bound to :attr:`spec`, fitted on ``labels`` (default: clean labels) as
        :func:`mtbench.data.validate` fits it on the training split."""
        kind = task_kind(self.spec)
        labels = self.clean_labels() if labels is None else labels
        kind.fit(labels[kind.labelled(labels)])
        return kind

    def with_missing(self, kind: TaskKind, labels: np.ndarray, salt: int = 1) -> tuple:
        """``labels`` with missing examples and elements marked by the kind's sentinel; returns
        ``(labels, example_labelled [N])``."""
        rng = self.rng(salt)
        n = len(labels)
        labelled = np.ones(n, bool)
        labelled[rng.permutation(n)[: max(1, int(self.missing_examples * n))]] = False
        elements = np.broadcast_to(labelled.reshape(n, *[1] * (labels.ndim - 1)), labels.shape)
        elements = elements.copy()
        if labels.ndim > 1 and self.missing_elements > 0:
            drop = rng.random(labels.shape) < self.missing_elements
            flat = drop.reshape(n, -1)
            flat[np.arange(n), rng.integers(0, flat.shape[1], n)] = False  # one stays present
            elements &= ~drop
        if kind.label_dtype == "float":
            marked = np.where(elements, labels.astype(np.float64), np.nan)
        else:
            marked = np.where(elements, labels, MISSING_CLASS)
        return marked, labelled

    def outputs(self, kind: TaskKind, n: int, salt: int = 2, scale: float = 1.0) -> np.ndarray:
        return (scale * self.rng(salt).normal(size=(n, *kind.output_shape))).astype(np.float32)

    def best_value(self, metric: Metric) -> float | None:
        if metric.name in self.best_values:
            return float(self.best_values[metric.name])
        if metric.unit == "fraction":
            return 1.0 if metric.higher_is_better else 0.0
        return None if metric.higher_is_better else 0.0

    def assert_metrics_equal(self, actual: dict, expected: dict, what: str) -> None:
        assert sorted(actual) == sorted(expected), f"{what}: {sorted(actual)} != {sorted(expected)}"
        for name, value in expected.items():
            got = actual[name]
            if np.isnan(value):
                assert np.isnan(got), f"{what}: {name} = {got}, expected NaN"
            else:
                assert abs(got - value) <= self.tolerance * max(1.0, abs(value)), (
                    f"{what}: {name} = {got}, expected {value}"
                )

    # -------------------------------------------------------------------------------- tests
    def test_spec_binds_to_its_kind(self) -> None:
        from mtbench import registry

        plugin = registry.get("task", self.spec.kind)
        kind = task_kind(self.spec)
        assert isinstance(kind, TaskKind) and isinstance(kind, plugin.factory)
        assert kind.spec == self.spec
        shape = kind.output_shape
        assert isinstance(shape, tuple) and all(isinstance(d, int) and d > 0 for d in shape)
        assert self.spec.output_shape == shape and self.spec.units == int(np.prod(shape))
        assert kind.label_dtype in ("int", "float")
        restored = TaskSpec.coerce(self.spec.get_config())  # as a serialised head reads it
        assert (restored.kind, restored.output_shape) == (self.spec.kind, shape)

    def test_metrics_declare_name_direction_and_unit(self) -> None:
        kind = task_kind(self.spec)
        names = [m.name for m in kind.metrics]
        assert names and len(set(names)) == len(names), f"metric names {names}"
        for metric in kind.metrics:
            assert isinstance(metric, Metric)
            assert isinstance(metric.higher_is_better, bool), metric
            assert isinstance(metric.unit, str) and metric.unit, f"{metric.name} has no unit"
            assert kind.metric(metric.name) == metric
        assert kind.primary in kind.metrics

    def test_labels_pass_check_labels_and_wrong_shapes_are_refused(self) -> None:
        labels = self.clean_labels()
        kind = self.kind(labels)
        kind.check_labels(labels, "train")
        marked, labelled = self.with_missing(kind, labels)
        kind.check_labels(marked, "train")
        np.testing.assert_array_equal(kind.labelled(marked), labelled)
        assert kind.labelled(labels).all()
        with pytest.raises(TaskError):
            kind.check_labels(labels[..., None], "train")

    def test_encode_gives_what_the_training_step_gets(self) -> None:
        labels = self.clean_labels()
        kind = self.kind(labels)
        marked, labelled = self.with_missing(kind, labels)
        encoded, present = kind.encode(marked), kind.element_labelled(marked)
        assert len(encoded) == len(labels) and encoded.shape == present.shape
        assert present.dtype == np.bool_
        assert encoded.dtype == np.float32 or np.issubdtype(encoded.dtype, np.integer)
        assert np.isfinite(encoded.astype(np.float64)).all(), "missing labels need a finite filler"
        np.testing.assert_array_equal(present.reshape(len(present), -1).any(axis=1), labelled)

    def test_loss_is_per_example_finite_float32(self) -> None:
        import tensorflow as tf

        labels = self.clean_labels()
        kind = self.kind(labels)
        marked, _ = self.with_missing(kind, labels)
        loss = kind.loss(
            tf.constant(kind.encode(marked)),
            tf.constant(self.outputs(kind, len(labels))),
            tf.constant(kind.element_labelled(marked)),
        )
        assert tuple(loss.shape) == (len(labels),), f"loss of shape {loss.shape}: one per example"
        assert loss.dtype == tf.float32
        assert np.isfinite(loss.numpy()).all(), "the loss must be finite on missing-label fillers"

    def test_examples_without_labels_get_zero_gradient(self) -> None:
        import tensorflow as tf

        from mtbench.training.losses import masked_task_losses

        labels = self.clean_labels()
        kind = self.kind(labels)
        marked, labelled = self.with_missing(kind, labels)
        encoded = tf.constant(kind.encode(marked))
        present = tf.constant(kind.element_labelled(marked))
        outputs = self.outputs(kind, len(labels))
        garbage = outputs.copy()
        garbage[~labelled] = self.outputs(kind, int((~labelled).sum()), salt=3, scale=100.0)
        values = []
        for out in (outputs, garbage):
            variable = tf.Variable(out)
            with tf.GradientTape() as tape:
                (loss,) = masked_task_losses(
                    {kind.name: kind}, {kind.name: (encoded, present)}, {kind.name: variable}
                )
            grad = tape.gradient(loss, variable).numpy()
            assert np.isfinite(loss.numpy()) and np.isfinite(grad).all()
            assert (grad[~labelled] == 0).all(), "an example without labels got a gradient"
            assert np.any(grad[labelled] != 0)
            values.append(float(loss))
        assert abs(values[1] - values[0]) <= self.tolerance * max(1.0, abs(values[0])), (
            f"the outputs of unlabelled examples changed the loss: {values}"
        )

    def test_loss_ignores_the_filler_of_missing_elements(self) -> None:
        """Whatever the encoded label holds where ``present`` is False, a labelled example's
        loss is the same (examples without any label are the trainer's to mask)."""
        import tensorflow as tf

        labels = self.clean_labels()
        kind = self.kind(labels)
        marked, labelled = self.with_missing(kind, labels)
        present = kind.element_labelled(marked)
        encoded = kind.encode(marked)
        other = kind.encode(self.clean_labels(salt=5))
        outputs = tf.constant(self.outputs(kind, len(labels)))
        a = kind.loss(tf.constant(encoded), outputs, tf.constant(present)).numpy()
        b = kind.loss(tf.constant(np.where(present, encoded, other)), outputs, tf.constant(present))
        np.testing.assert_allclose(
            b.numpy()[labelled], a[labelled], rtol=self.tolerance, atol=self.tolerance
        )

    def test_evaluate_reports_exactly_the_declared_metrics(self) -> None:
        labels = self.clean_labels()
        kind = self.kind(labels)
        marked, _ = self.with_missing(kind, labels)
        metrics = kind.evaluate(self.outputs(kind, len(labels)), marked)
        assert sorted(metrics) == sorted(m.name for m in kind.metrics)
        for name, value in metrics.items():
            assert isinstance(value, float) and np.isfinite(value), f"{name} = {value!r}"
        nothing = self.with_missing(kind, labels)[0]
        nothing[...] = np.nan if kind.label_dtype == "float" else MISSING_CLASS
        empty = kind.evaluate(self.outputs(kind, len(labels)), nothing)
        assert sorted(empty) == sorted(metrics)
        assert all(np.isnan(v) for v in empty.values()), f"without labels: {empty} (NaN each)"

    def test_evaluate_ignores_unlabelled_examples(self) -> None:
        labels = self.clean_labels()
        kind = self.kind(labels)
        marked, labelled = self.with_missing(kind, labels)
        outputs = self.outputs(kind, len(labels))
        garbage = outputs.copy()
        garbage[~labelled] = self.outputs(kind, int((~labelled).sum()), salt=3, scale=100.0)
        expected = kind.evaluate(outputs[labelled], marked[labelled])
        self.assert_metrics_equal(kind.evaluate(garbage, marked), expected, "with unlabelled")

    def test_perfect_outputs_reach_each_metrics_best(self) -> None:
        labels = self.clean_labels()
        kind = self.kind(labels)
        perfect = self.perfect_outputs(kind, labels)
        if perfect is None:
            pytest.skip("no perfect_outputs for this kind")
        perfect = np.asarray(perfect, np.float32)
        assert perfect.shape == (len(labels), *kind.output_shape)
        marked, _ = self.with_missing(kind, labels)
        best = kind.evaluate(perfect, marked)
        chance = kind.evaluate(self.outputs(kind, len(labels)), marked)
        scale = max(1.0, float(np.nanmax(np.abs(labels.astype(np.float64)))))
        for metric in kind.metrics:
            value, target = best[metric.name], self.best_value(metric)
            if target is not None:
                assert abs(value - target) <= self.tolerance * scale, (
                    f"{metric.name} = {value} for perfect outputs; its best is {target}"
                )
            assert not metric.better(chance[metric.name], value), (
                f"{metric.name}: random outputs score {chance[metric.name]}, perfect ones "
                f"{value}; is higher_is_better={metric.higher_is_better} right?"
            )
        predicted = np.asarray(kind.predictions(perfect))
        assert predicted.shape == labels.shape, f"predictions of shape {predicted.shape}"
        if kind.label_dtype == "int":
            present = marked != MISSING_CLASS
        else:
            present = ~np.isnan(marked.astype(np.float64))
        np.testing.assert_allclose(
            predicted[present].astype(np.float64),
            labels[present].astype(np.float64),
            rtol=self.tolerance,
            atol=self.tolerance * scale,
        )

    def test_predictions_are_in_label_space(self) -> None:
        labels = self.clean_labels()
        kind = self.kind(labels)
        predicted = np.asarray(kind.predictions(self.outputs(kind, len(labels))))
        assert predicted.shape == labels.shape, (
            f"predictions of shape {predicted.shape}; labels are {labels.shape}"
        )
        if kind.label_dtype == "int":
            assert np.issubdtype(predicted.dtype, np.integer), predicted.dtype
            kind.check_labels(predicted.astype(np.int64), "predictions")
