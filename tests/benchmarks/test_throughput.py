"""Throughput benchmarks: the training step of every backbone, the input pipeline, evaluation.

Images per second are stored in each benchmark's ``extra_info``; the input pipeline's benchmark
also stores its ratio to the ``seed_cnn`` training step measured in the same session (above 1
means the pipeline is not the bottleneck).
"""

from __future__ import annotations

import numpy as np
import pytest

import mtbench
from mtbench.config import TrainerConfig
from mtbench.data import Split
from mtbench.inputs import Augmentation, ImageInputs, ImagePreprocessing
from mtbench.model import build_model
from mtbench.pipeline import EpochBatches
from mtbench.tasks import TaskSpec, task_kinds
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
    model = build_model(
        {"name": backbone}, {"name": "dense"}, TASKS, np.zeros([1, 32, 32, 3], np.uint8),
        precision=PRECISION, preprocessing=ImagePreprocessing(255.0),
    )  # fmt: skip
    config = TrainerConfig(batch_size=BATCH, epochs=1, progress=False, checkpoint_every=0)
    trainer = Trainer(config, model, EqualWeights(), task_kinds(TASKS), precision=PRECISION, seed=0)
    return trainer, trainer.prepare(_split(BATCH * STEPS))


# image backbones (schnet and descriptor_mlp read padded molecules)
IMAGE_BACKBONES = [
    b for b in mtbench.list_plugins("backbone") if b not in {"schnet", "descriptor_mlp"}
]


@pytest.mark.parametrize("backbone", IMAGE_BACKBONES)
def test_training_step(benchmark, backbone):
    trainer, batches = _trainer(backbone)
    epochs = iter(range(1, 1_000_000))

    def epoch() -> None:
        trainer.train_epoch(batches, next(epochs))

    benchmark.pedantic(epoch, rounds=3, warmup_rounds=1)
    rate = BATCH * STEPS / benchmark.stats.stats.median
    MEASURED[backbone] = rate
    benchmark.extra_info.update(images_per_second=rate, batch_size=BATCH, precision=PRECISION)


def test_input_pipeline(benchmark):
    data = _split(10_000)
    inputs = ImageInputs(augmentation=Augmentation(crop_padding=4, horizontal_flip=True, cutout=8))
    kinds = {k.name: k for k in task_kinds(TASKS)}
    batches = EpochBatches(data, kinds, 256, seed=0, inputs=inputs)
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
