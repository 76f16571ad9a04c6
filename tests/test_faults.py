"""Faults: NaN/Inf losses and gradients, atomic outputs, and bad configuration caught early."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hydra import compose, initialize_config_dir

from mtbench import checkpoint, registry
from mtbench.cli import config_dir, prepare
from mtbench.data import DatasetError
from mtbench.io import atomic_write_json
from mtbench.protocol import Benchmark, BenchmarkFailed
from mtbench.weighting import GradientWeighting
from mtbench_plugins.heads.dense import DenseHeads

TINY = [
    "dataset.val_size=100",
    "trainer.batch_size=64",
    "trainer.progress=false",
    "trainer.deterministic=false",
]


class NanCoarseAtStep(DenseHeads):
    """Dense heads whose coarse logits become NaN on the 15th training step (epoch 2 of 11)."""

    def build(self, input_shape):
        super().build(input_shape)
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False, name="calls")

    def call(self, features, training=False):
        logits = super().call(features, training=training)
        if training:
            self.calls.assign_add(1.0)
            poison = tf.where(tf.equal(self.calls, 15.0), np.nan, 0.0)
            logits["coarse"] = logits["coarse"] + tf.cast(poison, logits["coarse"].dtype)
        return logits


class NanUpdate(GradientWeighting):
    """Finite losses, a NaN combined update: the method is to blame."""

    def aggregate(self, grads, losses):
        return tf.reduce_sum(grads, axis=0) * np.nan, tf.ones_like(losses)


def _cfg(root: Path, *overrides: str):
    prepare()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(
            "config",
            overrides=["+experiment=cifar100_mtl", f"dataset.root={root}", *TINY, *overrides],
        )


def test_nan_loss_fails_the_run_naming_task_step_and_epoch(npz_root, tmp_path):
    with registry.isolated():
        registry.register("head", "test_nan_coarse")(NanCoarseAtStep)
        cfg = _cfg(
            npz_root, "head=test_nan_coarse", "trainer.epochs=3", "benchmark.single_task=false"
        )
        with pytest.raises(
            BenchmarkFailed, match="task 'coarse' is not finite at step 4 of epoch 2"
        ):
            Benchmark(cfg, tmp_path).run()
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "failed" and results["comparison"] is None
    (joint,) = results["runs"]
    assert joint["status"] == "failed" and joint["test"] is None
    assert "trainer.skip_nonfinite_steps" in joint["error"]
    # the last good checkpoint (end of epoch 1) is kept and usable
    groups, progress = checkpoint.load(tmp_path / "checkpoints" / "joint" / "last.npz")
    assert progress["epoch"] == 2 and progress["batch"] == 0
    assert all(np.isfinite(a).all() for a in groups["model"])


def test_nonfinite_steps_can_be_skipped_and_are_counted(npz_root, tmp_path):
    with registry.isolated():
        registry.register("head", "test_nan_coarse")(NanCoarseAtStep)
        cfg = _cfg(
            npz_root, "head=test_nan_coarse", "trainer.epochs=2", "benchmark.single_task=false",
            "trainer.skip_nonfinite_steps=true",
        )  # fmt: skip
        results = Benchmark(cfg, tmp_path).run()
    (joint,) = results["runs"]
    assert joint["status"] == "complete" and joint["skipped_steps"] == 1
    assert [h["skipped_steps"] for h in joint["history"]] == [0, 1]
    assert np.isfinite(joint["history"][1]["train_loss"]["coarse"])


def test_a_nonfinite_update_from_the_method_is_blamed_on_it(npz_root, tmp_path):
    with registry.isolated():
        registry.register("weighting", "test_nan_update")(NanUpdate)
        cfg = _cfg(npz_root, "weighting=test_nan_update", "trainer.epochs=1")
        with pytest.raises(BenchmarkFailed, match="NanUpdate or the optimizer"):
            Benchmark(cfg, tmp_path).run()
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert [(r["name"], r["status"]) for r in runs] == [
        ("single:fine", "complete"), ("single:coarse", "complete"), ("joint", "failed"),
    ]  # fmt: skip


# ---------------------------------------------------------------------------------- atomicity
def _writer(path: str, version_size: int) -> None:
    i = 0
    while True:
        atomic_write_json(Path(path), {"version": i, "payload": [i] * version_size})
        i += 1


def test_results_are_never_observed_half_written_even_when_writers_are_killed(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"version": -1, "payload": []})
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_writer, args=(str(path), 20_000)) for _ in range(2)]
    for writer in writers:
        writer.start()
    deadline, reads = time.monotonic() + 3.0, 0
    try:
        while time.monotonic() < deadline:
            data = json.loads(path.read_text())  # a torn file would not parse
            assert data["payload"] == [data["version"]] * len(data["payload"])
            reads += 1
            if reads == 50:
                os.kill(writers[0].pid, signal.SIGKILL)  # killed mid-write, sooner or later
    finally:
        for writer in writers:
            writer.kill()
            writer.join()
    json.loads(path.read_text())
    assert reads > 50
    assert not [
        p
        for p in tmp_path.iterdir()
        if p.name != "results.json" and p.stat().st_size > 0 and p.suffix != ".tmp"
    ]


# ------------------------------------------------------------------------- bad configuration
@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        (["dataset.val_size=5000"], DatasetError, "dataset.val_size=5000 leaves no training data"),
        (["trainer.batch_size=4096"], ValueError, "trainer.batch_size=4096 is larger"),
        (["trainer.learning_rate=-1"], ValueError, "trainer.learning_rate=-1.0 is out of range"),
        (["trainer.label_smoothing=1.5"], ValueError, r"label_smoothing=1.5 .* in \[0, 1\)"),
        (["+benchmark.target.fnie=0.5"], ValueError, r"benchmark.target names tasks \['fnie'\]"),
        (["+benchmark.target.fine=2"], ValueError, r"benchmark.target.fine=2.0 .* in \(0, 1\]"),
        (["benchmark.time_budget_s=0"], ValueError, "time_budget_s=0.0 is out of range"),
        (["weighting=static", "+weighting.weights.fine=-1"], ValueError, "must be >= 0"),
        (["benchmark.tasks=[fine,edible]"], DatasetError, "not a non-empty subset"),
    ],
)
def test_bad_configuration_fails_before_training(npz_root, tmp_path, overrides, error, match):
    cfg = _cfg(npz_root, *overrides)
    with pytest.raises(error, match=match):
        Benchmark(cfg, tmp_path).run()
    assert not (tmp_path / "results.json").exists()  # refused before the benchmark started
    assert not (tmp_path / "checkpoints").exists()


def test_an_unwritable_run_directory_is_reported(npz_root, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="cannot write to the run directory .* hydra.run.dir"):
        Benchmark(_cfg(npz_root), blocker / "run").run()


def test_a_head_that_needs_a_hierarchy_fails_before_training_on_a_dataset_without_one(
    npz_root, tmp_path
):
    from dataclasses import dataclass

    from mtbench_plugins.datasets.cifar100 import Cifar100

    @dataclass
    class FlatConfig:
        root: str = str(npz_root)
        val_size: int = 100

    class Flat(Cifar100):
        def load(self):
            splits = super().load()
            splits.hierarchy = None
            return splits

    with registry.isolated():
        registry.register("dataset", "test_flat", config=FlatConfig)(
            lambda root, val_size: Flat(root=root, download=False, val_size=val_size)
        )
        cfg = _cfg(npz_root, "dataset=test_flat", "head=hierarchical")
        with pytest.raises(
            registry.PluginError,
            match="head 'hierarchical' and architecture 'hard_sharing' cannot be built for dataset "
            "'test_flat': "
            "head=hierarchical needs a dataset that declares",
        ):
            Benchmark(cfg, tmp_path).run()
    assert not (tmp_path / "results.json").exists()  # refused before the benchmark started
