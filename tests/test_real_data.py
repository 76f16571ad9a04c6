"""Real CIFAR-100 runs (opt in: ``pytest -m realdata``; skipped when the data is absent)."""

from __future__ import annotations

import pytest
from helpers import run_benchmark


def _run(real_root, tmp_path, *overrides: str) -> dict:
    return run_benchmark(real_root, tmp_path, *overrides, timeout=3600)


@pytest.mark.realdata
def test_reference_experiment_on_a_real_subset(real_root, tmp_path):
    results = _run(real_root, tmp_path, "trainer.epochs=2", "dataset.train_limit=20000")
    assert results["status"] == "complete"
    runs = {run["name"]: run for run in results["runs"]}
    assert set(runs) == {"single:fine", "single:coarse", "joint"}
    for name, task, chance in (("single:fine", "fine", 0.01), ("single:coarse", "coarse", 0.05)):
        assert runs[name]["test"][task]["accuracy"] > 3 * chance
        assert runs["joint"]["test"][task]["accuracy"] > 3 * chance
    assert results["comparison"]["delta_m_percent"] is not None
    assert runs["joint"]["timing"]["examples_per_second"] > 0


@pytest.mark.realdata
@pytest.mark.slow
def test_notebook_settings_reach_the_notebook_accuracy(real_root, tmp_path):
    """Adam, 10 epochs, batch 32, float32 on the full training set: about 28-32 % fine top-1."""
    results = _run(
        real_root, tmp_path,
        "trainer.epochs=10", "trainer.batch_size=32", "trainer.precision=float32",
        "benchmark.tasks=[fine]",
    )  # fmt: skip
    (run,) = results["runs"]
    assert 0.26 <= run["test"]["fine"]["accuracy"] <= 0.34
