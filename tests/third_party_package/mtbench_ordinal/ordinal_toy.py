"""The ``ordinal_toy`` dataset: seeded feature vectors with an ordinal and a real target."""

from __future__ import annotations

import numpy as np
from mtbench.data import DatasetSplits, Split
from mtbench.tasks import MISSING_CLASS, TaskSpec

#: Features per example.
FEATURES = 12
#: Grades: ordered classes of the ``grade`` task.
GRADES = ("E", "D", "C", "B", "A")
#: Quantiles of a standard normal variable at 20, 40, 60 and 80 %: the grade boundaries on the
#: standardised latent value, so that the five grades are about equally frequent.
CUTS = np.array([-0.8416, -0.2533, 0.2533, 0.8416])


class OrdinalToy:
    """Feature vectors ``x`` of shape ``[N, 12]`` (float32, standard normal) with two tasks:

    - ``grade`` (kind ``ordinal``, 5 classes ``E < D < C < B < A``): a noisy linear function of
      ``x`` cut at its quintiles;
    - ``score`` (kind ``regression``, in points): another noisy linear function of ``x``,
      around 50 points.

    A fraction ``missing`` of each task's labels is missing (``-1`` for a grade, NaN for a score),
    drawn independently per task. Train, validation and test examples are drawn apart from one
    generator seeded by ``seed``: the same options give the same data.

    Args:
        train_size, val_size, test_size: Examples per split (each at least 1).
        missing: Fraction of missing labels per task, in ``[0, 1)``.
        noise: Standard deviation of the noise on the latent values (>= 0).
        seed: Seeds everything drawn.

    Example:
        >>> data = OrdinalToy(train_size=32, val_size=8, test_size=8).load()
        >>> data.train.x.shape, [t.name for t in data.tasks]
        ((32, 12), ['grade', 'score'])
    """

    def __init__(
        self,
        train_size: int = 256,
        val_size: int = 64,
        test_size: int = 64,
        missing: float = 0.2,
        noise: float = 0.3,
        seed: int = 0,
    ) -> None:
        sizes = {"train_size": train_size, "val_size": val_size, "test_size": test_size}
        for key, value in sizes.items():
            if value < 1:
                raise ValueError(f"dataset.{key}={value} is out of range: it must be >= 1")
        if not 0.0 <= missing < 1.0:
            raise ValueError(
                f"dataset.missing={missing} is out of range: it is the fraction of missing "
                "labels, in [0, 1)"
            )
        if noise < 0:
            raise ValueError(f"dataset.noise={noise} is out of range: it must be >= 0")
        self.train_size, self.val_size, self.test_size = train_size, val_size, test_size
        self.missing, self.noise, self.seed = float(missing), float(noise), int(seed)

    @property
    def tasks(self) -> tuple[TaskSpec, ...]:
        return (
            TaskSpec("grade", len(GRADES), class_names=GRADES, kind="ordinal"),
            TaskSpec("score", kind="regression", options={"units": ["points"]}),
        )

    def load(self) -> DatasetSplits:
        rng = np.random.default_rng(self.seed)
        size = self.train_size + self.val_size + self.test_size
        x = rng.normal(size=(size, FEATURES)).astype(np.float32)
        grade_direction, score_direction = rng.normal(size=(2, FEATURES))
        latent = x @ (grade_direction / np.linalg.norm(grade_direction))
        latent = (latent + self.noise * rng.normal(size=size)) / np.hypot(1.0, self.noise)
        grade = np.searchsorted(CUTS, latent).astype(np.int64)
        score = 50.0 + 5.0 * (x @ score_direction) / np.sqrt(FEATURES)
        score += 5.0 * self.noise * rng.normal(size=size)
        grade[rng.random(size) < self.missing] = MISSING_CLASS
        score[rng.random(size) < self.missing] = np.nan
        bounds = [0, self.train_size, self.train_size + self.val_size, size]

        def split(index: int) -> Split:
            part = slice(bounds[index], bounds[index + 1])
            return Split(x[part], {"grade": grade[part], "score": score[part]})

        return DatasetSplits(train=split(0), val=split(1), test=split(2), tasks=self.tasks)
