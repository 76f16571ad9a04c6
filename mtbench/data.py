"""What a dataset plugin hands to the core: tasks, splits, inputs and optional task relations.

A dataset plugin is a factory whose product has a ``load() -> DatasetSplits`` method. Each split
holds the inputs (one array, or a dict of arrays such as a padded molecule's atoms, coordinates
and mask; any dtype and shape per example) and one label array per task, shaped and typed as the
task's kind says (:mod:`mtbench.tasks`; missing labels: the kind's sentinel, or a mask in
``Split.labelled``). How inputs are preprocessed, augmented and averaged at evaluation is the
dataset's to declare (``DatasetSplits.inputs``, see :mod:`mtbench.inputs`); by default inputs
reach the backbone as they are, cast to the compute dtype. :func:`validate` checks all of this
before any run trains. The helpers :func:`stratified_split` and :func:`stratified_subset` are
what the reference dataset uses to hold out its validation split and to shrink the training set;
other plugins may use them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from mtbench.tasks import MISSING_CLASS, TaskError, TaskKind, TaskSpec, task_kind

__all__ = [
    "DatasetError", "DatasetSplits", "Split", "TaskHierarchy", "TaskSpec", "holdout_splits",
    "stratified_split", "stratified_subset", "validate",
]  # fmt: skip


class DatasetError(Exception):
    """A dataset cannot be found, read or split, or what it returns contradicts its tasks.
    The message says what to do."""


@dataclass(frozen=True)
class TaskHierarchy:
    """Every class of ``child`` belongs to exactly one class of ``parent``.

    Args:
        child: The finer task (e.g. ``fine``).
        parent: The coarser task (e.g. ``coarse``).
        parent_of: ``parent_of[c]`` is the parent class of child class ``c``.
    """

    child: str
    parent: str
    parent_of: np.ndarray = field(repr=False)


@dataclass
class Split:
    """Inputs and their labels for every task.

    Args:
        x: The inputs: one array ``[N, ...]`` or a dict of such arrays (all of length N).
        y: Per task, its labels ``[N, *label_shape]``.
        labelled: Optional per-task boolean masks ``[N]``: ``False`` marks a missing label (the
            same as the kind's sentinel in ``y``).
    """

    x: Any
    y: dict[str, np.ndarray]
    labelled: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        size = len(self)
        for task, labels in self.y.items():
            if len(labels) != size:
                raise DatasetError(f"task '{task}' has {len(labels)} labels for {size} examples")
        for task, mask in self.labelled.items():
            if len(mask) != size:
                raise DatasetError(f"the mask of task '{task}' has {len(mask)} entries for {size}")

    def __len__(self) -> int:
        if isinstance(self.x, Mapping):
            lengths = {len(v) for v in self.x.values()}
            if len(lengths) != 1:
                raise DatasetError(
                    f"the input arrays {sorted(self.x)} differ in length: {sorted(lengths)}"
                )
            return lengths.pop()
        return len(self.x)

    def take(self, indices: np.ndarray) -> Split:
        x = (
            {k: v[indices] for k, v in self.x.items()}
            if isinstance(self.x, Mapping)
            else self.x[indices]
        )
        return Split(
            x,
            {t: y[indices] for t, y in self.y.items()},
            {t: m[indices] for t, m in self.labelled.items()},
        )


@dataclass
class DatasetSplits:
    """The three splits of a dataset and the tasks defined on it.

    ``val`` is for model selection (best epoch, hyper-parameters); ``test`` only for final numbers.
    """

    train: Split
    val: Split
    test: Split
    tasks: tuple[TaskSpec, ...]
    hierarchy: TaskHierarchy | None = None
    inputs: Any = None  #: a :class:`mtbench.inputs.Inputs` (None: used as they are)

    def task(self, name: str) -> TaskSpec:
        for task in self.tasks:
            if task.name == name:
                return task
        raise DatasetError(
            f"the dataset has no task '{name}'; its tasks are {[t.name for t in self.tasks]}"
        )


class Dataset(Protocol):
    """What a ``dataset`` plugin's factory returns."""

    def load(self) -> DatasetSplits: ...


def _allocate(counts: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Split ``size`` over classes in proportion to ``counts`` (largest remainder).

    Classes whose remainders tie (all of them, when the classes are balanced and ``size`` is not
    a multiple of their number) get the extra examples in an order drawn from ``rng``, not by
    class index, so a subset smaller than the number of classes samples classes from the whole
    range. ``rng`` is used only when there are extra examples to hand out.
    """
    exact = counts * (size / counts.sum())
    quota = np.floor(exact).astype(np.int64)
    remainder = size - int(quota.sum())
    if remainder:
        order = np.lexsort((rng.permutation(len(counts)), -(exact - quota)))
        quota[order[:remainder]] += 1
    return np.minimum(quota, counts)


def stratified_split(labels: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``size`` indices with the class proportions of ``labels``.

    Each class gets its share rounded down, and the examples left over go to the classes with the
    largest remainders, ties broken at random (seeded by ``seed``): class counts differ from the
    exact proportions by less than one. Returns ``(picked, rest)``, both sorted. The same labels,
    size and seed give the same split.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if not 0 <= size <= n:
        raise DatasetError(f"cannot pick {size} of {n} examples")
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    # a generator of its own, so that the examples drawn within each class stay those of a split
    # without ties to break
    quota = _allocate(counts, size, np.random.default_rng([seed, 1]))
    rng = np.random.default_rng(seed)
    picked = []
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        picked.append(rng.permutation(members)[: quota[c]])
    chosen = np.sort(np.concatenate(picked)) if picked else np.empty(0, np.int64)
    mask = np.zeros(n, bool)
    mask[chosen] = True
    return chosen, np.flatnonzero(~mask)


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a stratified subset of ``size`` examples."""
    return stratified_split(labels, size, seed)[0]


def holdout_splits(
    train: Split,
    test: Split,
    *,
    tasks: Sequence[TaskSpec],
    stratify_by: str | np.ndarray,
    val_size: int,
    train_limit: int | None,
    seed: int,
    hierarchy: TaskHierarchy | None = None,
    inputs: Any = None,
    option_prefix: str = "",
) -> DatasetSplits:
    """Hold a stratified validation split out of ``train`` and optionally shrink what remains.

    Args:
        train: The official training set.
        test: The official test set (left untouched).
        stratify_by: The task whose classes keep their proportions in both splits, or one class
            per training example (``[N]`` integers) when no single task labels every example
            (e.g. CIFAR-100's fine class for the 20 five-way tasks of ``cifar100_tasks``).
        val_size: Examples held out for validation (taken before ``train_limit`` applies).
        train_limit: If set, train on a stratified subset of this many of the remaining examples.
        seed: Seeds both the held-out split and the subset.
        hierarchy, inputs: Passed on to :class:`DatasetSplits`.
        option_prefix: How the caller's options are named in messages (e.g. ``"dataset."``
            makes them say ``dataset.val_size``).
    """
    val_key, limit_key = f"{option_prefix}val_size", f"{option_prefix}train_limit"
    if val_size < 1:
        raise DatasetError(
            f"{val_key} must be at least 1 (got {val_size}): the validation split selects "
            "the best epoch, so that the test split is never used for model selection."
        )
    if val_size >= len(train):
        raise DatasetError(
            f"{val_key}={val_size} leaves no training data: the training set has "
            f"{len(train)} examples. Choose {val_key} below {len(train)}."
        )
    labels = train.y[stratify_by] if isinstance(stratify_by, str) else np.asarray(stratify_by)
    if len(labels) != len(train):
        raise DatasetError(
            f"stratify_by holds {len(labels)} labels for {len(train)} training examples: the "
            "dataset plugin must pass one class per training example (or a task name)"
        )
    val_idx, train_idx = stratified_split(labels, val_size, seed)
    if train_limit is not None:
        if not 0 < train_limit <= len(train_idx):
            raise DatasetError(
                f"{limit_key}={train_limit} is out of range: after holding out "
                f"{val_size} validation examples, {len(train_idx)} remain. "
                f"Choose 1..{len(train_idx)} or null for all."
            )
        keep = stratified_subset(labels[train_idx], train_limit, seed + 1)
        train_idx = train_idx[keep]
    return DatasetSplits(
        train=train.take(train_idx),
        val=train.take(val_idx),
        test=test,
        tasks=tuple(tasks),
        hierarchy=hierarchy,
        inputs=inputs,
    )


def validate(
    data: DatasetSplits, dataset: str, defaults: Mapping[str, Any] | None = None
) -> dict[str, TaskKind]:
    """Check what a dataset returned against its tasks; return each task's kind, fitted on the
    training split. Masks in ``Split.labelled`` are folded into the labels as the kind's sentinel.

    Refused (a :class:`DatasetError` naming the dataset, the task and what is expected): an
    unknown task kind or option, labels whose shape or dtype contradicts the kind, a real target
    with infinite values, a task without a labelled example in the training or validation split,
    duplicate task names, inputs whose shape differs between splits.

    Args:
        data: What the dataset's ``load()`` returned.
        dataset: The dataset's name, for messages.
        defaults: Kind options the trainer supplies (see :func:`mtbench.tasks.task_kind`).
    """
    if not isinstance(data, DatasetSplits):
        raise DatasetError(
            f"dataset '{dataset}': load() returned a {type(data).__name__}, not a "
            "mtbench.data.DatasetSplits"
        )
    names = [t.name for t in data.tasks]
    if not names or len(set(names)) != len(names):
        raise DatasetError(f"dataset '{dataset}' declares the tasks {names}: need unique names")
    splits = {"train": data.train, "val": data.val, "test": data.test}
    _check_inputs(splits, dataset)
    kinds: dict[str, TaskKind] = {}
    for spec in data.tasks:
        try:
            kind = task_kind(spec, defaults)
            for split_name, split in splits.items():
                if spec.name not in split.y:
                    raise TaskError(f"the {split_name} split has no labels for it")
                labels = np.asarray(split.y[spec.name])
                kind.check_labels(labels, split_name)
                if spec.name in split.labelled:
                    split.y[spec.name] = labels = mark_missing(
                        kind, labels, np.asarray(split.labelled[spec.name], bool)
                    )
                if split_name != "test" and not kind.labelled(labels).any():
                    raise TaskError(
                        f"no example of the {split_name} split is labelled for it (the "
                        f"{split_name} split is needed to train and to select the best epoch)"
                    )
            kind.fit(data.train.y[spec.name][kind.labelled(data.train.y[spec.name])])
        except TaskError as exc:
            raise DatasetError(f"dataset '{dataset}', task '{spec.name}': {exc}") from None
        kinds[spec.name] = kind
    return kinds


def mark_missing(kind: TaskKind, labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``labels`` with the kind's missing sentinel (NaN or -1) where ``mask`` is False."""
    if mask.shape != (len(labels),):
        raise TaskError(f"its mask has shape {mask.shape}; it needs one entry per example")
    absent = ~kind.labelled(labels)
    if (absent & mask).any():
        raise TaskError(
            f"{int((absent & mask).sum())} examples the mask marks as labelled hold the missing "
            "sentinel (NaN or -1) instead of a label; mark them False in the mask, or give "
            "their labels"
        )
    missing = ~mask.reshape(len(mask), *([1] * (labels.ndim - 1)))
    if kind.label_dtype == "float":
        return np.where(missing, np.nan, labels.astype(np.float64))
    return np.where(missing, MISSING_CLASS, labels)


def _check_inputs(splits: Mapping[str, Split], dataset: str) -> None:
    def layout(split: Split) -> Any:
        if isinstance(split.x, Mapping):
            return {
                k: (np.asarray(v).shape[1:], np.asarray(v).dtype.name) for k, v in split.x.items()
            }
        return (np.asarray(split.x).shape[1:], np.asarray(split.x).dtype.name)

    layouts = {name: layout(split) for name, split in splits.items()}
    if len({repr(v) for v in layouts.values()}) != 1:
        raise DatasetError(
            f"dataset '{dataset}': the splits' inputs differ in shape or dtype per example: "
            f"{layouts}"
        )
    for name, split in splits.items():
        if len(split) == 0 and name != "test":
            raise DatasetError(f"dataset '{dataset}': the {name} split is empty")
