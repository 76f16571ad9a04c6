"""What a dataset plugin hands to the core: tasks, splits and an optional label hierarchy.

A dataset plugin is a factory whose product has a ``load() -> DatasetSplits`` method. Images are
kept as uint8 arrays in height-width-channel layout; each task has one integer label per image.
The helpers :func:`stratified_split` and :func:`stratified_subset` are what the reference dataset
uses to hold out its validation split and to shrink the training set; other plugins may use them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


class DatasetError(Exception):
    """A dataset cannot be found, read or split. The message says what to do."""


@dataclass(frozen=True)
class TaskSpec:
    """One classification task.

    Args:
        name: The task's name (a key of every split's labels).
        num_classes: Number of classes; labels are ``0 .. num_classes-1``.
        class_names: Optional human-readable class names.
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...] = ()

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "num_classes": self.num_classes}

    @classmethod
    def coerce(cls, value: TaskSpec | Mapping[str, Any]) -> TaskSpec:
        """Accept a TaskSpec or its ``get_config()`` dict (as Keras deserialization passes it)."""
        if isinstance(value, TaskSpec):
            return value
        return cls(name=str(value["name"]), num_classes=int(value["num_classes"]))


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
    """Images and their labels for every task."""

    x: np.ndarray
    y: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        for task, labels in self.y.items():
            if len(labels) != len(self.x):
                raise DatasetError(
                    f"task '{task}' has {len(labels)} labels for {len(self.x)} images"
                )

    def __len__(self) -> int:
        return len(self.x)

    def take(self, indices: np.ndarray) -> Split:
        return Split(self.x[indices], {t: y[indices] for t, y in self.y.items()})


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
    stratify_by: str,
    val_size: int,
    train_limit: int | None,
    seed: int,
    hierarchy: TaskHierarchy | None = None,
) -> DatasetSplits:
    """Hold a stratified validation split out of ``train`` and optionally shrink what remains.

    Args:
        train: The official training set.
        test: The official test set (left untouched).
        stratify_by: The task whose classes keep their proportions in both splits.
        val_size: Examples held out for validation (taken before ``train_limit`` applies).
        train_limit: If set, train on a stratified subset of this many of the remaining examples.
        seed: Seeds both the held-out split and the subset.
    """
    if val_size < 1:
        raise DatasetError(
            f"dataset.val_size must be at least 1 (got {val_size}): the validation split selects "
            "the best epoch, so that the test split is never used for model selection."
        )
    if val_size >= len(train):
        raise DatasetError(
            f"dataset.val_size={val_size} leaves no training data: the training set has "
            f"{len(train)} images. Choose dataset.val_size below {len(train)}."
        )
    labels = train.y[stratify_by]
    val_idx, train_idx = stratified_split(labels, val_size, seed)
    if train_limit is not None:
        if not 0 < train_limit <= len(train_idx):
            raise DatasetError(
                f"dataset.train_limit={train_limit} is out of range: after holding out "
                f"{val_size} validation images, {len(train_idx)} remain. "
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
    )
