"""Whole benchmarks on synthetic datasets of every shape the task contract hosts.

Each dataset (tests/contract_datasets.py) runs the full protocol (every single-task run and the
joint run) with ``ew``, one loss-level method (``uw``) and two gradient-level methods (``pcgrad``,
``mgda``); single-task runs are trained once per dataset and reused through the baseline cache.
The tests read results.json, report.md and the sweep's leaderboard and check the metrics each
task declares, their directions and delta_m recomputed by hand from the runs' test numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from contract_datasets import SyntheticConfig, SyntheticDataset
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mtbench import records, registry
from mtbench.cli import config_dir
from mtbench.config import store_schema
from mtbench.data import DatasetError
from mtbench.protocol import Benchmark

METHODS = ("ew", "uw", "pcgrad", "mgda")
BACKBONES = {"regression": "mlp", "multilabel": "seed_cnn", "missing": "seed_cnn", "dense": "mlp"}
EXPECTED = {  # task -> (kind, primary metric, higher is better)
    "regression": {
        "energy": ("regression", "mae", False),
        "phase": ("classification", "accuracy", True),
    },
    "multilabel": {
        "attrs": ("multilabel", "mean_accuracy", True),
        "shape": ("classification", "accuracy", True),
    },
    "missing": {
        "kind": ("classification", "accuracy", True),
        "size": ("regression", "mae", False),
        "flags": ("multilabel", "mean_accuracy", True),
    },
    "dense": {
        "mask": ("segmentation", "mean_iou", True),
        "count": ("classification", "accuracy", True),
    },
}


@pytest.fixture(scope="module")
def contract_registry():
    """The synthetic dataset registered as a plugin, its options in Hydra's ConfigStore."""
    with registry.isolated():
        registry.register("dataset", "contract_synthetic", config=SyntheticConfig)(SyntheticDataset)
        registry.store_schemas(config_dir())
        store_schema()
        yield


def _compose(*overrides: str):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _benchmark(variant: str, method: str, out: Path, cache: Path) -> dict:
    cfg = _compose(
        "dataset=contract_synthetic",
        f"dataset.variant={variant}",
        f"backbone={BACKBONES[variant]}",
        f"weighting={method}",
        "trainer.epochs=2",
        "trainer.batch_size=32",
        "trainer.precision=float32",
        "trainer.progress=false",
        "trainer.checkpoint_every=0",
        "benchmark.cost_rounds=0",
        f"benchmark.baseline_cache={cache}",
    )
    return Benchmark(cfg, out).run()


@pytest.fixture(scope="module")
def sweeps(contract_registry, tmp_path_factory) -> dict[str, dict[str, Path]]:
    """Per variant and method, the run directory of a finished benchmark."""
    root = tmp_path_factory.mktemp("contract")
    folders: dict[str, dict[str, Path]] = {}
    for variant in EXPECTED:
        folders[variant] = {}
        for number, method in enumerate(METHODS):
            out = root / variant / str(number)
            _benchmark(variant, method, out, root / "cache")
            folders[variant][method] = out
    return folders


def _hand_delta_m(results: dict) -> float:
    """delta_m = 100/K sum_k s_k (M_joint,k - M_single,k) / |M_single,k| over primary metrics."""
    runs = {r["name"]: r for r in results["runs"]}
    terms = []
    for task, record in results["tasks"].items():
        metric = record["primary"]
        sign = 1.0 if record["metrics"][metric]["higher_is_better"] else -1.0
        single = runs[f"single:{task}"]["test"][task][metric]
        joint = runs["joint"]["test"][task][metric]
        terms.append(sign * (joint - single) / abs(single))
    return 100.0 * float(np.mean(terms))


@pytest.mark.parametrize("variant", list(EXPECTED))
def test_every_method_runs_and_reports_the_tasks_metrics(sweeps, variant):
    for method in METHODS:
        results = records.load(sweeps[variant][method] / "results.json")
        assert results["status"] == "complete", results["error"]
        assert results["schema"] == "mtbench.results/2"
        assert [r["name"] for r in results["runs"]] == [
            *(f"single:{t}" for t in EXPECTED[variant]),
            "joint",
        ]
        for task, (kind, primary, higher) in EXPECTED[variant].items():
            record = results["tasks"][task]
            assert (record["kind"], record["primary"]) == (kind, primary)
            assert record["metrics"][primary]["higher_is_better"] is higher
            for run in results["runs"]:
                if task in run["tasks"]:
                    reported = run["test"][task]
                    assert set(reported) == set(record["metrics"])
                    assert all(v is None or math.isfinite(v) for v in reported.values())
        comparison = results["comparison"]
        assert comparison["delta_m_percent"] == pytest.approx(_hand_delta_m(results), rel=1e-9)
        assert "(-1)^{l_k}" in comparison["formula"] or "lower" in comparison["formula"]


def test_regression_metrics_are_in_the_targets_unit_and_lower_is_better(sweeps):
    results = records.load(sweeps["regression"]["ew"] / "results.json")
    metrics = results["tasks"]["energy"]["metrics"]
    assert metrics["mae"]["unit"] == "mixed"  # eV and Debye
    assert metrics["mae/u0"]["unit"] == "eV" and metrics["mae/mu"]["unit"] == "Debye"
    assert not metrics["rmse"]["higher_is_better"]
    joint = {r["name"]: r for r in results["runs"]}["joint"]
    # reported in the target's own unit: the energy target has a spread of about 3.6 eV, so a
    # model that learned something has an MAE well below that and above 0
    assert 0 < joint["test"]["energy"]["mae/u0"] < 3.0
    report = (sweeps["regression"]["ew"] / "report.md").read_text()
    assert "lower" in report and "mae" in report


def test_missing_labels_are_counted_and_single_runs_train_on_their_labelled_examples(sweeps):
    results = records.load(sweeps["missing"]["pcgrad"] / "results.json")
    data = SyntheticDataset("missing").load()
    train_n = len(data.train)
    for task, expected_missing in (("kind", 0.4), ("size", 0.55), ("flags", 0.65)):
        labelled = results["tasks"][task]["labelled"]
        assert results["tasks"][task]["examples"]["train"] == train_n
        share = 1 - labelled["train"] / train_n
        assert abs(share - expected_missing) < 0.15  # 30-70 % missing, as drawn
        single = {r["name"]: r for r in results["runs"]}[f"single:{task}"]
        steps = single["timing"]["steps_per_epoch"]
        assert steps == math.ceil(labelled["train"] / 32)  # only its labelled examples
    joint = {r["name"]: r for r in results["runs"]}["joint"]
    assert joint["timing"]["steps_per_epoch"] == math.ceil(train_n / 32)
    assert all(math.isfinite(v) for v in joint["history"][-1]["train_loss"].values())
    report = (sweeps["missing"]["pcgrad"] / "report.md").read_text()
    assert f"of {train_n}" in report  # labelled counts per split


def test_dense_task_reports_mean_iou(sweeps):
    results = records.load(sweeps["dense"]["mgda"] / "results.json")
    joint = {r["name"]: r for r in results["runs"]}["joint"]
    assert 0 < joint["test"]["mask"]["mean_iou"] <= 1
    assert 0 < joint["test"]["mask"]["pixel_accuracy"] <= 1


def test_float_images_are_not_divided_again(sweeps):
    results = records.load(sweeps["multilabel"]["ew"] / "results.json")
    assert results["inputs"]["divisor"] is None
    single = {r["name"]: r for r in results["runs"]}["single:shape"]
    # the shape label is the brighter quadrant of [0, 1] images: learnt in two epochs, far above
    # chance (1/4); divided by 255 again, the images would be nearly constant and it would not
    assert single["test"]["shape"]["accuracy"] > 0.6


def test_the_leaderboard_shows_each_tasks_primary_metric(sweeps, tmp_path):
    from mtbench.leaderboard import write_leaderboard

    folders = [sweeps["regression"][m] for m in METHODS]
    write_leaderboard(folders, tmp_path)
    text = (tmp_path / "leaderboard.md").read_text()
    assert "energy" in text and "mae" in text
    assert "phase" in text and "accuracy" in text
    for method in METHODS:
        assert method in text


def test_one_task_benchmark_says_why_there_is_no_comparison(contract_registry, tmp_path):
    cfg = _compose(
        "dataset=contract_synthetic",
        "dataset.variant=regression",
        "backbone=mlp",
        "benchmark.tasks=[energy]",
        "trainer.epochs=1",
        "trainer.precision=float32",
        "trainer.progress=false",
        "benchmark.cost_rounds=0",
    )
    results = Benchmark(cfg, tmp_path / "one").run()
    assert results["comparison"] is None
    assert "one task" in results["notes"][0]
    assert "one task" in (tmp_path / "one" / "report.md").read_text()


def test_one_task_without_its_single_task_run_is_refused_before_training(
    contract_registry, tmp_path
):
    """One task has no joint model; with benchmark.single_task=false nothing would train, and the
    run used to end "complete" with no run at all."""
    from mtbench.config import ConfigError

    cfg = _compose(
        "dataset=contract_synthetic",
        "backbone=mlp",
        "benchmark.tasks=[energy]",
        "benchmark.single_task=false",
    )
    with pytest.raises(ConfigError, match=r"single_task=false with one task \(energy\) trains"):
        Benchmark(cfg, tmp_path / "refused").run()
    assert not (tmp_path / "refused" / "results.json").exists()


def test_a_gradient_method_for_one_task_is_refused_before_training(contract_registry, tmp_path):
    from mtbench.config import ConfigError

    cfg = _compose(
        "dataset=contract_synthetic",
        "backbone=mlp",
        "weighting=pcgrad",
        "benchmark.tasks=[energy]",
    )
    with pytest.raises(ConfigError, match="trains one"):
        Benchmark(cfg, tmp_path / "refused").run()
    assert not (tmp_path / "refused" / "results.json").exists()


def test_config_of_the_reference_dataset_still_composes():
    cfg = _compose("+experiment=cifar100_mtl_fast")
    assert OmegaConf.select(cfg, "dataset.augment.crop_padding") == 4


def test_uint8_images_without_a_declaration_are_refused(contract_registry, tmp_path, monkeypatch):
    """A dataset written for mtbench 0.1 (whose core divided uint8 pixels by 255) is refused
    before training with a message that says what to declare, and leaves no results behind."""
    original = SyntheticDataset.load

    def undeclared(self):
        data = original(self)
        data.inputs = None
        return data

    monkeypatch.setattr(SyntheticDataset, "load", undeclared)
    cfg = _compose("dataset=contract_synthetic", "dataset.variant=missing")
    with pytest.raises(DatasetError, match=r"ImageInputs\(divisor=255.0\)"):
        Benchmark(cfg, tmp_path / "old").run()
    assert not (tmp_path / "old" / "results.json").exists()
