"""The ``cifar100_tasks`` dataset: CIFAR-100 as 20 five-way tasks, one per superclass.

Rosenbaum, Klinger and Riemer, "Routing Networks: Adaptive Selection of Non-Linear Functions for
Multi-Task Learning", ICLR 2018, and Liu, Johns and Davison, "Auto-Lambda: Disentangling Dynamic
Task Relationships", TMLR 2022, use this split of CIFAR-100 as a many-task benchmark: task ``t``
is superclass ``t`` (named by the dataset's coarse label name), its label is the index (0-4) of
the image's fine class among the five fine classes of that superclass, taken in the order of the
fine labels. Every image is labelled for exactly one task, its superclass's, and missing for the
other nineteen, so each task sees a twentieth of the data: about 6 labelled images in a batch
of 128 (a task is absent from a full batch about 0.14% of the time).
"""

from __future__ import annotations

import numpy as np

from mtbench.data import DatasetSplits, Split, holdout_splits
from mtbench.tasks import MISSING_CLASS, TaskSpec

from .cifar100 import Cifar100
from .cifar100_formats import FINE_TO_COARSE, NUM_COARSE
from .options import Cifar100TasksConfig

CLASSES_PER_TASK = 5


def fine_classes_of_superclass() -> np.ndarray:
    """``[20, 5]``: row ``t`` holds superclass ``t``'s fine classes in increasing order."""
    rows = [np.flatnonzero(FINE_TO_COARSE == t) for t in range(NUM_COARSE)]
    return np.stack(rows)


#: The label of each fine class within its superclass's task (0-4).
INDEX_IN_SUPERCLASS = np.argsort(np.argsort(FINE_TO_COARSE, kind="stable"), kind="stable") % 5


def task_labels(fine: np.ndarray) -> np.ndarray:
    """``[N, 20]``: each image's label for every task; ``-1`` where the task is not its
    superclass's."""
    fine = np.asarray(fine, np.int64)
    labels = np.full((len(fine), NUM_COARSE), MISSING_CLASS, np.int64)
    labels[np.arange(len(fine)), FINE_TO_COARSE[fine]] = INDEX_IN_SUPERCLASS[fine]
    return labels


class Cifar100Tasks(Cifar100):
    """CIFAR-100 as 20 five-way tasks (one per superclass), each image labelled for one task.

    Reads the same files as ``cifar100`` (same ``root``, download and formats) and takes the
    same options; the validation split and ``train_limit`` are stratified by fine class.

    Example:
        >>> splits = Cifar100Tasks(root="~/data/cifar100").load()
        >>> splits.tasks[0].name, splits.tasks[0].class_names
        ('aquatic_mammals', ('beaver', 'dolphin', 'otter', 'seal', 'whale'))
    """

    config_class = Cifar100TasksConfig

    def load(self) -> DatasetSplits:
        raw = self.read()
        raw.validate()
        self._warn_unofficial_sizes(raw)
        members = fine_classes_of_superclass()
        tasks = tuple(
            TaskSpec(
                str(raw.coarse_names[t]),
                CLASSES_PER_TASK,
                tuple(str(raw.fine_names[f]) for f in members[t]),
            )
            for t in range(NUM_COARSE)
        )
        names = [task.name for task in tasks]

        def split(x: np.ndarray, fine: np.ndarray) -> Split:
            labels = task_labels(fine)
            return Split(x, {name: labels[:, t] for t, name in enumerate(names)})

        return holdout_splits(
            split(raw.x_train, raw.y_train_fine),
            split(raw.x_test, raw.y_test_fine),
            tasks=tasks,
            stratify_by=raw.y_train_fine,
            val_size=self.val_size,
            train_limit=self.train_limit,
            seed=self.split_seed,
            inputs=self.inputs(),
            option_prefix="dataset.",
        )
