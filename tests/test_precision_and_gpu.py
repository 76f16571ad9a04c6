"""Precision selection, mixed float16 with loss scaling, and GPU-only checks.

The tests marked ``gpu`` need a GPU visible to TensorFlow and skip without one; the others run
everywhere (mixed float16 computes on a CPU too, slowly, which is enough to test loss scaling).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import run_benchmark

from mtbench import hardware


def _gpu_count() -> int:
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


needs_gpu = pytest.mark.skipif(_gpu_count() == 0, reason="no GPU visible to TensorFlow")


@pytest.mark.parametrize(
    ("gpus", "cpu_bf16", "expected"),
    [
        ([(8, 0)], False, "mixed_bfloat16"),
        ([(9, 0), (8, 6)], False, "mixed_bfloat16"),
        ([(8, 0), (7, 5)], True, "mixed_float16"),  # one older GPU: float16 with loss scaling
        ([None], True, "mixed_float16"),  # unknown capability counts as old
        ([], True, "mixed_bfloat16"),
        ([], False, "float32"),
    ],
)
def test_auto_precision_follows_the_hardware(monkeypatch, gpus, cpu_bf16, expected):
    monkeypatch.setattr(
        hardware, "gpus", lambda: [{"name": "gpu", "compute_capability": c} for c in gpus]
    )
    monkeypatch.setattr(hardware, "cpu_supports_bfloat16", lambda: cpu_bf16)
    assert hardware.resolve_precision("auto") == expected
    assert hardware.resolve_precision("float32") == "float32"


def test_an_unknown_precision_names_the_choices():
    with pytest.raises(ValueError, match="float64.*auto, float32, mixed_bfloat16, mixed_float16"):
        hardware.resolve_precision("float64")


def _benchmark(npz_root, tmp_path, *extra: str) -> dict:
    results = run_benchmark(
        npz_root, tmp_path, "dataset.val_size=100", "trainer.epochs=2", "trainer.batch_size=64",
        *extra,
    )  # fmt: skip
    assert results["status"] == "complete", results["error"]
    return results


@pytest.mark.parametrize("weighting", ["ew", "pcgrad"])
@pytest.mark.slow  # whole benchmarks in subprocesses; opt in with -m slow
def test_mixed_float16_trains_with_loss_scaling(npz_root, tmp_path, weighting):
    """Loss-level and gradient-level methods under float16 loss scaling: finite, falling losses
    and the precision recorded."""
    results = _benchmark(
        npz_root, tmp_path, "trainer.precision=mixed_float16", f"weighting={weighting}",
        "benchmark.single_task=false",
    )  # fmt: skip
    (joint,) = results["runs"]
    assert joint["precision"] == "mixed_float16"
    losses = [sum(epoch["train_loss"].values()) for epoch in joint["history"]]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert joint["history"][-1]["skipped_steps"] == 0


@pytest.mark.gpu
@needs_gpu
def test_on_a_gpu_auto_precision_trains_and_device_memory_is_reported(npz_root, tmp_path):
    results = _benchmark(npz_root, tmp_path, "weighting=pcgrad")
    for run in results["runs"]:
        assert run["precision"] in ("mixed_bfloat16", "mixed_float16")
        assert "GPU" in run["device"]
        assert run["peak_device_memory_mb"] and run["peak_device_memory_mb"] > 0
        assert all(np.isfinite(list(run["history"][-1]["train_loss"].values())))


@pytest.mark.gpu
@pytest.mark.skipif(_gpu_count() < 2, reason="needs at least two GPUs visible to TensorFlow")
def test_several_gpus_train_mirrored_by_default(npz_root, tmp_path):
    results = _benchmark(npz_root, tmp_path, "weighting=pcgrad", "benchmark.single_task=false")
    (joint,) = results["runs"]
    assert joint["distribution"] == {"strategy": "MirroredStrategy", "replicas": _gpu_count()}
