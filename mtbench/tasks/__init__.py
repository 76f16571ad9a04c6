"""The task contract: what a label is, how a head's output is scored, and which way is better.

A dataset declares its tasks as :class:`TaskSpec` records; each names a **task kind**, a plugin of
kind ``task`` that defines, for that task:

- what a label is (its shape per example and dtype) and what marks it **missing**;
- the shape of the output a head must produce per example (:attr:`TaskKind.output_shape`);
- the **loss per example** (so that masks and weights work), computed in the training step;
- the **metrics** it reports, each a :class:`Metric` with a name, a unit and whether higher is
  better, and its **primary** metric, used for model selection and delta_m unless configured
  otherwise.

Built-in kinds: ``classification`` (single label), ``multilabel`` (independent binary labels),
``regression`` (real targets, standardised for training) and ``segmentation`` (a class per
element of an array label, e.g. per pixel: the contract's labels may be arrays). A third-party
package registers a kind exactly like any other plugin::

    @register("task", "ordinal", config=OrdinalOptions)
    class Ordinal(TaskKind): ...

and a dataset uses it with ``TaskSpec("grade", kind="ordinal", num_classes=5)``.

**Missing labels.** Every kind has a documented sentinel (``-1`` for integer labels, NaN for real
targets) and may be given a boolean mask instead (``Split.labelled``). The training loss of a task
averages over the labelled examples of the batch only; a batch without a labelled example for a
task contributes exactly zero loss and zero gradient for it. Metrics use labelled examples only.

A kind instance is bound to one task (``kind.spec``) and, after :meth:`TaskKind.fit`, to the
training split's statistics (e.g. regression targets' mean and deviation). Its methods on NumPy
arrays (``check_labels``, ``labelled``, ``encode``, ``evaluate``, ``predictions``) run outside the
training step; :meth:`TaskKind.loss` runs inside it on TensorFlow tensors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

#: The label that marks an integer label as missing.
MISSING_CLASS = -1


class TaskError(ValueError):
    """A task declaration or a task's labels contradict its kind (raised before training)."""


@dataclass(frozen=True)
class Metric:
    """One number a task reports.

    Args:
        name: The key in results (``accuracy``, ``mae``).
        unit: What the number is in: ``fraction`` (0..1, shown as %), or a physical unit.
        higher_is_better: The metric's direction.
        description: One line for reports.
    """

    name: str
    unit: str
    higher_is_better: bool
    description: str = ""

    @property
    def direction(self) -> str:
        return "higher" if self.higher_is_better else "lower"

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better else a < b

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TaskSpec:
    """One task of a dataset.

    Args:
        name: The task's name: a key of every split's labels. Letters, digits, ``_``, ``-``, ``.``.
        num_classes: Classes (``classification``, ``segmentation``) or binary labels
            (``multilabel``); regression takes the number of targets from ``label_shape``.
        class_names: Optional names of the classes (or labels, or targets).
        kind: The task kind: a registered ``task`` plugin.
        label_shape: Shape of one example's label: ``()`` for one class index or one target,
            ``(K,)`` for K binary labels or K targets, ``(H, W)`` for a class per pixel.
        options: The kind's options (see each kind's config), e.g. ``{"loss": "huber"}``.
        primary: The metric used for model selection and delta_m (default: the kind's).

    Example:
        >>> TaskSpec("fine", 100)                                   # classification
        >>> TaskSpec("age", kind="regression", options={"units": ["years"]})
    """

    name: str
    num_classes: int | None = None
    class_names: tuple[str, ...] = ()
    kind: str = "classification"
    label_shape: tuple[int, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    primary: str | None = None

    def get_config(self) -> dict[str, Any]:
        """A JSON-able form (Keras serialises heads with it; :meth:`coerce` reads it back)."""
        config: dict[str, Any] = {"name": self.name, "num_classes": self.num_classes}
        if self.kind != "classification":
            config["kind"] = self.kind
        if self.class_names:
            config["class_names"] = list(self.class_names)
        if self.label_shape:
            config["label_shape"] = list(self.label_shape)
        if self.options:
            config["options"] = _jsonable(dict(self.options))
        if self.primary:
            config["primary"] = self.primary
        return config

    @classmethod
    def coerce(cls, value: TaskSpec | Mapping[str, Any]) -> TaskSpec:
        """Accept a TaskSpec or its ``get_config()`` dict (as Keras deserialization passes it)."""
        if isinstance(value, TaskSpec):
            return value
        num_classes = value.get("num_classes")
        return cls(
            name=str(value["name"]),
            num_classes=None if num_classes is None else int(num_classes),
            class_names=tuple(str(n) for n in value.get("class_names", ())),
            kind=str(value.get("kind", "classification")),
            label_shape=tuple(int(d) for d in value.get("label_shape", ())),
            options=dict(value.get("options", {})),
            primary=value.get("primary"),
        )

    @property
    def output_shape(self) -> tuple[int, ...]:
        """What a head must produce per example for this task (asks the task's kind)."""
        return task_kind(self).output_shape

    @property
    def units(self) -> int:
        """The number of output values per example: the product of :attr:`output_shape`."""
        return int(np.prod(self.output_shape))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def task_kind(spec: TaskSpec, defaults: Mapping[str, Any] | None = None) -> TaskKind:
    """The kind of ``spec``, bound to it (built through the registry, options checked).

    Args:
        spec: The task.
        defaults: Values for kind options that ``spec.options`` leaves unset, where the kind has
            such an option (the trainer's ``label_smoothing`` reaches classification this way).
    """
    from mtbench import registry

    try:
        plugin = registry.get("task", spec.kind)
    except registry.UnknownPluginError as exc:
        raise TaskError(f"task '{spec.name}' declares kind '{spec.kind}': {exc}") from None
    allowed = {f.name for f in dataclasses.fields(plugin.config)}
    options = dict(spec.options)
    for key, value in (defaults or {}).items():
        if key in allowed and options.get(key) is None:
            options[key] = value
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TaskError(
            f"task '{spec.name}' (kind '{spec.kind}') has unknown options {unknown}; the options "
            f"of '{spec.kind}' are {sorted(allowed) or 'none'}"
        )
    kind = plugin.factory(spec=spec, **options)
    if not isinstance(kind, TaskKind):
        raise TaskError(f"task kind '{spec.kind}' built a {type(kind).__name__}, not a TaskKind")
    kind.check_declaration()
    return kind


def check_class_range(task: str, labels: np.ndarray, num_classes: int, split: str) -> None:
    """Refuse integer labels outside ``0 .. num_classes - 1`` (the missing sentinel aside)."""
    present = labels[labels != MISSING_CLASS]
    if present.size and (present.min() < 0 or present.max() >= num_classes):
        raise TaskError(
            f"task '{task}': {split} labels range over [{present.min()}, {present.max()}], the "
            f"task has {num_classes} classes (0..{num_classes - 1}; {MISSING_CLASS} marks a "
            "missing label)"
        )


def task_kinds(
    specs: Sequence[TaskSpec], defaults: Mapping[str, Any] | None = None
) -> list[TaskKind]:
    """:func:`task_kind` of each spec, in order (not fitted: for a regression task call
    ``fit`` with training labels, or use :func:`mtbench.data.validate` on a whole dataset)."""
    return [task_kind(spec, defaults) for spec in specs]


class TaskKind:
    """Base class of task kinds. Subclasses set the class attributes and implement the methods
    marked abstract; :meth:`check_declaration` validates what they declare.

    Attributes:
        label_dtype: ``"int"`` (integer labels, sentinel :data:`MISSING_CLASS`) or ``"float"``
            (real values, sentinel NaN).
        metrics: The metrics this task reports (per instance: they may depend on the spec).
        default_primary: The primary metric's name unless the spec chooses another.
    """

    label_dtype: ClassVar[Literal["int", "float"]] = "int"
    default_primary: ClassVar[str] = ""

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec

    # ------------------------------------------------------------------------ what it declares
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def output_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def metrics(self) -> tuple[Metric, ...]:
        raise NotImplementedError

    @property
    def primary(self) -> Metric:
        wanted = self.spec.primary or self.default_primary
        for metric in self.metrics:
            if metric.name == wanted:
                return metric
        raise TaskError(
            f"task '{self.name}': primary metric '{wanted}' is not one of its metrics "
            f"{[m.name for m in self.metrics]}"
        )

    def metric(self, name: str) -> Metric:
        for metric in self.metrics:
            if metric.name == name:
                return metric
        raise KeyError(name)

    def check_declaration(self) -> None:
        """Refuse a spec or a kind implementation that cannot work (called when bound)."""
        spec = self.spec
        if not spec.name or not all(c.isalnum() or c in "_-." for c in spec.name):
            raise TaskError(
                f"task name {spec.name!r} is not allowed: use letters, digits, '_', '-' and '.' "
                "(it names layers and result keys)"
            )
        if not self.metrics:
            raise TaskError(f"task kind '{spec.kind}' declares no metrics")
        for metric in self.metrics:
            if not isinstance(metric, Metric) or not isinstance(metric.higher_is_better, bool):
                raise TaskError(
                    f"task kind '{spec.kind}': metric {metric!r} must be a mtbench.tasks.Metric "
                    "with higher_is_better True or False (its direction)"
                )
        self.primary  # noqa: B018 - raises if the primary metric is unknown
        if not all(isinstance(d, int) and d > 0 for d in self.output_shape):
            raise TaskError(
                f"task '{spec.name}': output shape {self.output_shape} must be positive integers"
            )

    # ------------------------------------------------------------------------------ NumPy side
    def check_labels(self, labels: np.ndarray, split: str) -> None:
        """Refuse labels whose shape or values contradict the kind; ``split`` is for messages."""
        labels = np.asarray(labels)
        expected = tuple(self.spec.label_shape)
        if labels.shape[1:] != expected:
            raise TaskError(
                f"task '{self.name}' ({self.spec.kind}): the {split} labels have shape "
                f"{labels.shape[1:]} per example, the task declares label_shape={expected}"
            )
        if self.label_dtype == "int" and not np.issubdtype(labels.dtype, np.integer):
            raise TaskError(
                f"task '{self.name}' ({self.spec.kind}): the {split} labels are "
                f"{labels.dtype}, the kind expects integers (missing: {MISSING_CLASS}). A real "
                "valued target is a 'regression' task."
            )
        if self.label_dtype == "float" and not (
            np.issubdtype(labels.dtype, np.floating) or np.issubdtype(labels.dtype, np.integer)
        ):
            raise TaskError(
                f"task '{self.name}' ({self.spec.kind}): the {split} labels are {labels.dtype}, "
                "the kind expects real numbers (missing: NaN)"
            )

    def element_labelled(self, labels: np.ndarray) -> np.ndarray:
        """Which label elements are present (same shape as ``labels``)."""
        labels = np.asarray(labels)
        if self.label_dtype == "float":
            return ~np.isnan(labels.astype(np.float64))
        return labels != MISSING_CLASS

    def labelled(self, labels: np.ndarray) -> np.ndarray:
        """``[N]`` bool: which examples have a label (any element present)."""
        present = self.element_labelled(labels)
        return present.reshape(len(present), -1).any(axis=1) if present.ndim > 1 else present

    def fit(self, labels: np.ndarray) -> None:  # noqa: B027 - optional hook
        """Learn training statistics from the training split's labels (labelled ones only)."""

    def encode(self, labels: np.ndarray) -> np.ndarray:
        """Labels as the training step gets them; missing elements get a harmless filler."""
        labels = np.asarray(labels)
        if self.label_dtype == "float":
            return np.nan_to_num(labels.astype(np.float32), nan=0.0)
        return np.where(labels == MISSING_CLASS, 0, labels).astype(np.int64)

    def evaluate(self, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Every metric on the labelled examples of ``labels`` (raw, as the dataset gave them);
        ``outputs`` are the head's float32 outputs. A split without labels gives NaN."""
        raise NotImplementedError

    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        """The prediction in label space (class index, 0/1 labels, target in its unit)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------ TensorFlow side
    def loss(self, labels: Any, outputs: Any, present: Any) -> Any:
        """Per-example loss ``[B]`` (float32) of encoded ``labels`` against ``outputs``;
        ``present`` marks present label elements (shape of ``labels``). Must be finite for the
        fillers of missing labels (the trainer masks examples without any label)."""
        raise NotImplementedError


# The built-in kinds, declared in mtbench's entry points like any package's ("task.<name>"),
# are importable from here too.
from mtbench.tasks.classification import (  # noqa: E402
    Classification,
    ClassificationOptions,
    macro_f1,
)
from mtbench.tasks.multilabel import (  # noqa: E402
    Multilabel,
    MultilabelOptions,
    average_precision,
)
from mtbench.tasks.regression import Regression, RegressionOptions  # noqa: E402
from mtbench.tasks.segmentation import Segmentation, SegmentationOptions  # noqa: E402

__all__ = [
    "MISSING_CLASS", "Classification", "ClassificationOptions", "Metric", "Multilabel",
    "MultilabelOptions", "Regression", "RegressionOptions", "Segmentation", "SegmentationOptions",
    "TaskError", "TaskKind", "TaskSpec", "average_precision", "macro_f1", "task_kind",
    "task_kinds",
]  # fmt: skip
