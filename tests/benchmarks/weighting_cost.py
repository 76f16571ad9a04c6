"""The cost of each weighting method: one training step of the joint model, measured against ``ew``.

The model is the reference one (``seed_cnn`` backbone, ``dense`` heads for CIFAR-100's fine (100)
and coarse (20) tasks; or, with ``tasks=20``, the twenty five-way heads of ``cifar100_tasks``, each
example labelled for its superclass's task only, as that dataset gives its batches) under mixed
bfloat16, trained by the mtbench trainer (Adam, its defaults) on a fixed batch of 128 uint8
32x32x3 images held in memory, so that only the step itself is timed: the forward and backward
passes, the method and the update. No XLA. The images are random (the cost does not depend on
pixel values) and the fine classes drawn uniformly.

Every method's step is compiled (and run a few times) first; then each round runs ``per_round``
steps of every method in turn, in an order rotated from round to round, and records seconds per
step (wall clock, after reading a result back so no queued work is left uncounted). A method's
ratio is the median over rounds of its time divided by ``ew``'s time in the same round, so load
from other processes that changes between rounds cancels out.

Used by ``test_weighting_cost.py`` (pytest-benchmark) and ``weighting_ratios.py`` (a table).
"""

from __future__ import annotations

import importlib
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import mtbench  # noqa: E402
from mtbench import registry  # noqa: E402
from mtbench.config import TrainerConfig  # noqa: E402
from mtbench.data import Split  # noqa: E402
from mtbench.inputs import ImagePreprocessing  # noqa: E402
from mtbench.model import MultiTaskModel, build_model  # noqa: E402
from mtbench.tasks import TaskSpec, task_kinds  # noqa: E402
from mtbench.trainer import Trainer  # noqa: E402
from mtbench_plugins.datasets.cifar100_tasks import task_labels  # noqa: E402

# Until pyproject.toml declares them as entry points, importing a module registers its plugins.
for _module in (
    "aligned_mtl", "cagrad", "dwa", "famo", "gls", "graddrop", "gradnorm", "gradvac", "imtl",
    "mgda", "nashmtl", "pcgrad", "rlw", "upgrad", "uw",
):  # fmt: skip
    importlib.import_module(f"mtbench_plugins.weighting.{_module}")

TASKS = (TaskSpec("fine", 100), TaskSpec("coarse", 20))


def task_specs(count: int = 2) -> tuple[TaskSpec, ...]:
    """The reference fine/coarse pair, or the twenty five-way tasks of ``cifar100_tasks``."""
    if count == 2:
        return TASKS
    if count != 20:
        raise SystemExit(f"tasks: 2 (fine, coarse) or 20 (cifar100_tasks), not {count}")
    return tuple(TaskSpec(f"superclass_{t:02d}", 5) for t in range(count))


BATCH_SIZE = 128
PRECISION = "mixed_bfloat16"
BASELINE = "ew"
# Targets on two tasks (issue 3), as the largest allowed ratio to ew per step.
TARGETS = {"loss": 1.05, "gradient": 2.0, "skipping": 1.15, "meta": 5.0}
# Options worth timing besides each method's defaults (label, config).
VARIANTS = (
    ("famo:update=next_batch", {"name": "famo", "update": "next_batch"}),
    ("mgda:upper_bound=true", {"name": "mgda", "upper_bound": True}),
    ("nashmtl:update_weights_every=25", {"name": "nashmtl", "update_weights_every": 25}),
)


@dataclass
class Method:
    label: str
    config: dict[str, Any]
    level: str = ""
    target: float = 0.0


@dataclass
class Timings:
    """Seconds per step of each method, one value per round."""

    seconds: dict[str, list[float]] = field(default_factory=dict)

    def ratios(self, label: str, baseline: str = BASELINE) -> list[float]:
        return [m / b for m, b in zip(self.seconds[label], self.seconds[baseline], strict=True)]


def methods(selected: Sequence[str] | None = None) -> list[Method]:
    """Every registered weighting with its defaults, then the variants (``ew`` first)."""
    names = [BASELINE] + [n for n in mtbench.list_plugins("weighting") if n != BASELINE]
    found = [Method(n, {"name": n}) for n in names] + [Method(label, c) for label, c in VARIANTS]
    if selected:
        unknown = set(selected) - {m.label for m in found}
        if unknown:
            raise SystemExit(
                f"unknown methods {sorted(unknown)}; known: {[m.label for m in found]}"
            )
        found = [m for m in found if m.label == BASELINE or m.label in selected]
    for method in found:
        weighting = registry.build("weighting", method.config)
        method.level = weighting.level
        if getattr(weighting, "skips_gradients", False):
            method.level, method.target = "gradient, skipping", TARGETS["skipping"]
        elif getattr(weighting, "needs_meta_batch", False):  # Auto-Lambda: a look-ahead step
            method.level, method.target = f"{weighting.level}, meta batch", TARGETS["meta"]
        else:
            method.target = TARGETS[weighting.level]
    return found


def _model(tasks: Sequence[TaskSpec], architecture: dict[str, Any] | None = None) -> MultiTaskModel:
    return build_model(
        {"name": "seed_cnn"}, {"name": "dense"}, tasks, np.zeros([1, 32, 32, 3], np.uint8),
        architecture=architecture, precision=PRECISION, preprocessing=ImagePreprocessing(255.0),
    )  # fmt: skip


def _batch(tasks: Sequence[TaskSpec]) -> Split:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(BATCH_SIZE, 32, 32, 3), dtype=np.uint8)
    if len(tasks) == 20:  # cifar100_tasks: one task labelled per image, -1 for the others
        labels = task_labels(rng.integers(0, 100, BATCH_SIZE))
        return Split(images, {t.name: labels[:, i] for i, t in enumerate(tasks)})
    return Split(images, {t.name: rng.integers(0, t.num_classes, BATCH_SIZE) for t in tasks})


def build_step(
    config: dict[str, Any],
    warmup: int = 3,
    tasks: int = 2,
    architecture: dict[str, Any] | None = None,
) -> Callable[[], None]:
    """One compiled training step of the joint model with this weighting (and ``architecture``,
    default hard sharing), ready to time."""
    specs = task_specs(tasks)
    batch = _batch(specs)
    trainer = Trainer(
        TrainerConfig(batch_size=BATCH_SIZE, epochs=1, progress=False, checkpoint_every=0),
        _model(specs, architecture),
        registry.build("weighting", config),
        task_kinds(specs),
        precision=PRECISION,
        seed=0,
    )
    # methods that draw several batches per update need that many in an epoch
    samples = trainer.weighting.samples_per_step
    trainer.prepare(
        Split(
            np.concatenate([batch.x] * samples),
            {t: np.concatenate([y] * samples) for t, y in batch.y.items()},
        )
    )
    # (labels, present) as the pipeline gives them
    labels = {
        t: (tf.constant(np.maximum(y, 0), tf.int64), tf.constant(y >= 0))
        for t, y in batch.y.items()
    }
    element = (tf.constant(batch.x), labels)
    if trainer.weighting.needs_meta_batch:  # (batch, meta batch) pairs, as the pipeline gives
        element = (element, element)
    dataset = tf.data.Dataset.from_tensors(element).repeat()
    iterator = iter(dataset)

    def step() -> None:
        trainer.run_steps(iterator, 1)

    for _ in range(warmup):  # the first calls trace and optimise the graph
        step()
    return step


def alternate(
    steps: dict[str, Callable[[], None]], rounds: int, per_round: int, report: bool = False
) -> Timings:
    """Time every step side by side: ``rounds`` rounds of ``per_round`` steps of each method."""
    labels = list(steps)
    timings = Timings({label: [] for label in labels})
    for r in range(rounds):
        order = labels[r % len(labels) :] + labels[: r % len(labels)]
        for label in order:
            start = time.perf_counter()
            for _ in range(per_round):
                steps[label]()
            timings.seconds[label].append((time.perf_counter() - start) / per_round)
        if report:
            print(f"round {r + 1}/{rounds} done", flush=True)
    return timings


def ratio_table(
    found: Sequence[Method], timings: Timings, rounds: int, per_round: int, tasks: int = 2
) -> str:
    """A Markdown table of the median step time and the median per-round ratio to ``ew``."""
    lines = [
        "| method | level | ms per step (median) | ratio to ew (median) | ratio range | target |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for method in found:
        ratios = timings.ratios(method.label)
        seconds = timings.seconds[method.label]
        ratio = statistics.median(ratios)
        verdict = "" if method.label == BASELINE else (" ok" if ratio <= method.target else " OVER")
        lines.append(
            f"| {method.label} | {method.level} | {1000 * statistics.median(seconds):.1f} "
            f"| {ratio:.2f} | {min(ratios):.2f}-{max(ratios):.2f} "
            f"| <= {method.target:.2f}{verdict} |"
        )
    lines.append("")
    lines.append(machine_note(rounds, per_round, tasks))
    return "\n".join(lines)


def machine_note(rounds: int, per_round: int, tasks: int = 2, ratio_of: str = "method / ew") -> str:
    from mtbench.hardware import cpu_name

    devices = ", ".join(d.device_type for d in tf.config.list_physical_devices())
    return (
        f"One training step of seed_cnn + dense heads "
        f"({'fine, coarse' if tasks == 2 else 'cifar100_tasks: 20 five-way tasks'}), "
        f"batch {BATCH_SIZE}, "
        f"{PRECISION}, Adam, no XLA; TensorFlow {tf.__version__}, devices {devices}, CPU "
        f"{cpu_name()} ({os.cpu_count()} cores visible). {rounds} rounds x {per_round} steps "
        f"per method, interleaved; ratio = median over rounds of ({ratio_of} in the same round)."
    )
