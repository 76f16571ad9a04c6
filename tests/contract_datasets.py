"""Small synthetic datasets of every shape the task contract must host, made in the test suite.

Each variant is learnable (labels are functions of the inputs plus noise) and tiny, so that a
whole benchmark (single-task runs and the joint run) trains in seconds:

- ``regression``: float feature vectors ``[N, 16]`` (no image); a 2-target regression task in eV
  and Debye and a 3-class classification task.
- ``multilabel``: float images ``[N, 10, 10, 1]`` already in [0, 1]; a 5-label multilabel task
  and a 4-class classification task.
- ``missing``: uint8 images ``[N, 12, 12, 3]``; three tasks (classification, regression,
  multilabel) with 40 %, 55 % and 65 % of the labels missing (sentinels for two, a mask for
  one), never all three missing for one example.
- ``dense``: float images ``[N, 8, 8, 1]``; a per-pixel 2-class segmentation task and a
  classification task.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from mtbench.data import DatasetSplits, Split
from mtbench.inputs import ImageInputs
from mtbench.tasks import MISSING_CLASS, TaskSpec


class Variant(Enum):
    regression = "regression"
    multilabel = "multilabel"
    missing = "missing"
    dense = "dense"


@dataclass
class SyntheticConfig:
    """Options of the test dataset ``contract_synthetic``.

    Attributes:
        variant: Which dataset (see the module docstring).
        size: Examples in all (split 60/20/20 into train/validation/test).
        seed: Seeds the data.
    """

    variant: Variant = Variant.regression
    size: int = 240
    seed: int = 0


class SyntheticDataset:
    """The dataset plugin (registered by the tests as ``contract_synthetic``)."""

    def __init__(self, variant: str = "regression", size: int = 240, seed: int = 0) -> None:
        self.variant, self.size, self.seed = str(getattr(variant, "value", variant)), size, seed

    def load(self) -> DatasetSplits:
        rng = np.random.default_rng(self.seed)
        make = {
            "regression": _regression,
            "multilabel": _multilabel,
            "missing": _missing,
            "dense": _dense,
        }[self.variant]
        x, labels, masks, tasks, inputs = make(rng, self.size)
        n = self.size
        cuts = [slice(0, int(0.6 * n)), slice(int(0.6 * n), int(0.8 * n)), slice(int(0.8 * n), n)]
        splits = [
            Split(
                x[c],
                {t: y[c] for t, y in labels.items()},
                {t: m[c] for t, m in masks.items()},
            )
            for c in cuts
        ]
        return DatasetSplits(*splits, tasks=tasks, inputs=inputs)


def _regression(rng: np.random.Generator, n: int):
    x = rng.normal(size=(n, 16)).astype(np.float32)
    energy = 3.0 * x[:, 0] - 2.0 * x[:, 1] + 10.0 + 0.1 * rng.normal(size=n)
    dipole = x[:, 2] * x[:, 3] + 0.5 * x[:, 4] + 0.05 * rng.normal(size=n)
    phase = np.digitize(x[:, 5] + 0.5 * x[:, 6], [-0.5, 0.5]).astype(np.int64)
    tasks = (
        TaskSpec(
            "energy",
            kind="regression",
            label_shape=(2,),
            class_names=("u0", "mu"),
            options={"units": ["eV", "Debye"]},
        ),
        TaskSpec("phase", 3),
    )
    labels = {"energy": np.stack([energy, dipole], 1).astype(np.float32), "phase": phase}
    return x, labels, {}, tasks, None


def _multilabel(rng: np.random.Generator, n: int):
    x = rng.random((n, 10, 10, 1)).astype(np.float32) * 0.7
    bright = rng.integers(0, 4, size=n)  # one quadrant of each image is brighter
    for q, (rows, cols) in enumerate(((0, 0), (0, 5), (5, 0), (5, 5))):
        x[bright == q, rows : rows + 5, cols : cols + 5] += 0.3
    quadrants = np.stack(
        [x[:, :5, :5, 0].mean((1, 2)), x[:, :5, 5:, 0].mean((1, 2)), x[:, 5:, :5, 0].mean((1, 2)),
         x[:, 5:, 5:, 0].mean((1, 2)), x[:, 3:7, 3:7, 0].mean((1, 2))], 1,
    )  # fmt: skip
    attrs = (quadrants > 0.45).astype(np.int64)
    shape = np.argmax(quadrants[:, :4], axis=1).astype(np.int64)
    tasks = (TaskSpec("attrs", kind="multilabel", label_shape=(5,)), TaskSpec("shape", 4))
    return x, {"attrs": attrs, "shape": shape}, {}, tasks, ImageInputs(divisor=None)


def _missing(rng: np.random.Generator, n: int):
    x = rng.integers(0, 256, size=(n, 12, 12, 3), dtype=np.uint8)
    means = x.reshape(n, -1, 3).mean(1) / 255.0
    kind = np.argmax(means, axis=1).astype(np.int64)
    size = (means.sum(1) * 4.0).astype(np.float32)
    flags = (means > 0.5).astype(np.int64)
    # which labels are missing: never all three for one example
    missing = rng.random((n, 3)) < np.array([0.4, 0.55, 0.65])
    missing[missing.all(axis=1), 0] = False
    kind[missing[:, 0]] = MISSING_CLASS
    size[missing[:, 1]] = np.nan
    tasks = (
        TaskSpec("kind", 3),
        TaskSpec("size", kind="regression", options={"units": ["cm"]}),
        TaskSpec("flags", kind="multilabel", label_shape=(3,)),
    )
    labels = {"kind": kind, "size": size, "flags": flags}
    masks = {"flags": ~missing[:, 2]}  # this task's missing labels come as a mask
    return x, labels, masks, tasks, ImageInputs(divisor=255.0)


def _dense(rng: np.random.Generator, n: int):
    x = rng.random((n, 8, 8, 1)).astype(np.float32)
    smooth = (x + np.roll(x, 1, axis=1) + np.roll(x, 1, axis=2)) / 3
    mask = (smooth[..., 0] > 0.5).astype(np.int64)
    count = np.digitize(mask.mean((1, 2)), [0.4, 0.6]).astype(np.int64)
    tasks = (
        TaskSpec("mask", 2, kind="segmentation", label_shape=(8, 8)),
        TaskSpec("count", 3),
    )
    return x, {"mask": mask, "count": count}, {}, tasks, ImageInputs(divisor=None)
