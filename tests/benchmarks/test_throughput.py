"""Throughput benchmarks: the training step of every backbone, the input pipeline, evaluation.

Images per second are stored in each benchmark's ``extra_info``; the input pipeline's benchmark
also stores its ratio to the ``seed_cnn`` training step measured in the same session (above 1
means the pipeline is not the bottleneck).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import mtbench
from mtbench import registry
from mtbench.config import TrainerConfig
from mtbench.data import Split, TaskSpec
from mtbench.model import MultiTaskModel
from mtbench.pipeline import Augmentation, EpochBatches
from mtbench.protocol import dtype_policy
from mtbench.trainer import Trainer
from mtbench.weighting import EqualWeights

BATCH = 128
STEPS = 4
PRECISION = "mixed_bfloat16"
TASKS = [TaskSpec("fine", 100), TaskSpec("coarse", 20)]
MEASURED: dict[str, float] = {}


def _split(count: int) -> Split:
    rng = np.random.default_rng(0)
    return Split(
        rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8),
        {"fine": rng.integers(0, 100, count), "coarse": rng.integers(0, 20, count)},
    )


def _trainer(backbone: str) -> tuple[Trainer, EpochBatches]:
    with dtype_policy(PRECISION):
        model = MultiTaskModel(
            registry.build("backbone", {"name": backbone}),
            registry.build("head", {"name": "dense"}, tasks=TASKS, hierarchy=None),
        )
        model(tf.zeros([1, 32, 32, 3], tf.uint8))
    config = TrainerConfig(batch_size=BATCH, epochs=1, progress=False, checkpoint_every=0)
    trainer = Trainer(
        config, model, EqualWeights(), ["fine", "coarse"], precision=PRECISION, seed=0
    )
    data = _split(BATCH * STEPS)
    batches = EpochBatches(data, ("fine", "coarse"), BATCH, seed=0)
    trainer._build(batches.steps_per_epoch, data)
    trainer._trace(batches)
    return trainer, batches


class _Clock:
    train_seconds = 0.0


@pytest.mark.parametrize("backbone", mtbench.list_plugins("backbone"))
def test_training_step(benchmark, backbone):
    trainer, batches = _trainer(backbone)
    epochs = iter(range(1, 1_000_000))

    def epoch() -> None:
        trainer._reset_epoch()
        trainer._train_epoch(batches, next(epochs), 0, _Clock())

    benchmark.pedantic(epoch, rounds=3, warmup_rounds=1)
    rate = BATCH * STEPS / benchmark.stats.stats.median
    MEASURED[backbone] = rate
    benchmark.extra_info.update(images_per_second=rate, batch_size=BATCH, precision=PRECISION)


def test_input_pipeline(benchmark):
    data = _split(10_000)
    augmentation = Augmentation(crop_padding=4, horizontal_flip=True, cutout=8)
    batches = EpochBatches(data, ("fine", "coarse"), 256, seed=0, augmentation=augmentation)
    epochs = iter(range(1, 1_000_000))

    def epoch() -> None:
        for _ in batches.dataset(next(epochs)):
            pass

    benchmark.pedantic(epoch, rounds=3, warmup_rounds=1)
    rate = len(data) / benchmark.stats.stats.median
    benchmark.extra_info.update(images_per_second=rate, augmentation="crop 4, flip, cutout 8")
    if "seed_cnn" in MEASURED:
        benchmark.extra_info["ratio_to_seed_cnn_training_step"] = rate / MEASURED["seed_cnn"]


def test_evaluation(benchmark):
    trainer, _ = _trainer("seed_cnn")
    data = _split(5_000)
    benchmark.pedantic(lambda: trainer.predict(data), rounds=3, warmup_rounds=1)
    benchmark.extra_info["images_per_second"] = len(data) / benchmark.stats.stats.median
