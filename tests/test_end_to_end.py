"""``python -m mtbench +experiment=cifar100_mtl`` end to end on tiny synthetic data."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from helpers import run_mtbench
from hydra import compose, initialize_config_dir

from mtbench import records, registry
from mtbench.baselines import source_fingerprint
from mtbench.cli import config_dir, prepare
from mtbench.protocol import Benchmark
from mtbench.weighting import LossWeighting

TINY = ["dataset.val_size=100", "trainer.epochs=2", "trainer.batch_size=64"]


@pytest.fixture(scope="module")
def e2e_run(archive_root, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("e2e")
    root = shutil.copytree(archive_root, work / "data")
    md5 = hashlib.md5((root / "cifar-100-python.tar.gz").read_bytes()).hexdigest()
    result = run_mtbench(
        [
            "+experiment=cifar100_mtl",
            f"dataset.root={root}",
            f"dataset.md5={md5}",
            "dataset.download=false",
            *TINY,
            "hydra.run.dir=run",
        ],
        cwd=work,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (work / "stdout.txt").write_text(result.stdout)
    return work


def test_results_json_has_every_run_and_a_consistent_comparison(e2e_run):
    results = json.loads((e2e_run / "run" / "results.json").read_text())
    assert results["schema"] == records.SCHEMA and results["status"] == "complete"
    assert results["config"]["trainer"]["epochs"] == 2 and results["config"]["seed"] == 0
    assert results["environment"]["versions"]["tensorflow"]
    runs = {run["name"]: run for run in results["runs"]}
    assert list(runs) == ["single:fine", "single:coarse", "joint"]
    assert runs["joint"]["tasks"] == ["fine", "coarse"] and runs["joint"]["weighting"] == "ew"
    for run in runs.values():
        for task in run["tasks"]:
            test = run["test"][task]
            assert 0 <= test["accuracy"] <= test["top5_accuracy"] <= 1
            assert 0 <= test["macro_f1"] <= 1
            assert 0 <= run["val"][task]["accuracy"] <= 1
        assert run["best_epoch"] in (1, 2) and len(run["history"]) == 2
        timing = run["timing"]
        assert len(timing["epoch_seconds"]) == 2
        assert timing["train_seconds"] == pytest.approx(sum(timing["epoch_seconds"]))
        assert timing["examples_per_second"] == pytest.approx(2 * 700 / timing["train_seconds"])
        assert run["peak_memory_mb"] > 0 and run["device"] and run["precision"]
        assert run["parameters"] > 940_128
    comparison = results["comparison"]
    single = {t: runs[f"single:{t}"]["test"][t]["accuracy"] for t in ("fine", "coarse")}
    joint = {t: runs["joint"]["test"][t]["accuracy"] for t in ("fine", "coarse")}
    # delta_m: the mean over tasks of each primary metric's (accuracy's) relative change
    changes = [records.delta_percent(single[t], joint[t]) for t in ("fine", "coarse")]
    assert comparison["delta_m_percent"] == pytest.approx(sum(changes) / 2)
    assert comparison["tasks"]["fine"]["single"] == single["fine"]
    assert 0 <= comparison["hierarchy_consistency"] <= 1
    assert comparison["hierarchy"] == {"child": "fine", "parent": "coarse"}
    assert "delta_m" in comparison["formula"]
    # the synthetic classes are learnable: the coarse task is well above chance (1/20)
    assert joint["coarse"] > 0.1 and single["coarse"] > 0.1


def test_report_table_and_tensorboard_are_written(e2e_run):
    report = (e2e_run / "run" / "report.md").read_text()
    assert "| fine" in report and "| coarse" in report and "delta_m" in report
    assert records.DELTA_M_FORMULA in report
    assert "delta_m =" in (e2e_run / "stdout.txt").read_text()  # the summary is printed
    assert (e2e_run / "run" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    for run in ("single_fine", "single_coarse", "joint"):
        events = list((e2e_run / "run" / "tensorboard" / run).glob("events.out.tfevents.*"))
        assert events, run


class _FailsWhenTraced(LossWeighting):
    def loss_weights(self, losses):
        raise RuntimeError("weighting exploded")


def test_a_failing_joint_run_keeps_the_finished_runs(npz_root, tmp_path):
    with registry.isolated():
        registry.register("weighting", "test_exploding")(_FailsWhenTraced)
        prepare()  # after registering: stores the schemas of the plugins registered so far
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(
                "config",
                overrides=[
                    "+experiment=cifar100_mtl",
                    "weighting=test_exploding",
                    f"dataset.root={npz_root}",
                    "trainer.progress=false",
                    "trainer.epochs=1",
                    *TINY[:1],
                    "trainer.batch_size=128",
                ],
            )
        with pytest.raises(RuntimeError, match="weighting exploded"):
            Benchmark(cfg, tmp_path).run()
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "failed" and "weighting exploded" in results["error"]
    assert [run["name"] for run in results["runs"]] == ["single:fine", "single:coarse"]
    assert "failed" in (tmp_path / "report.md").read_text()


def test_the_same_config_and_seed_give_the_same_numbers(npz_root, tmp_path):
    prepare()
    overrides = [
        "+experiment=cifar100_mtl",
        f"dataset.root={npz_root}",
        "trainer.progress=false",
        "trainer.epochs=2",
        "dataset.augment.crop_padding=2",
        "dataset.augment.horizontal_flip=true",
        "benchmark.single_task=false",
        *TINY[:1],
        "trainer.batch_size=128",
    ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    first = Benchmark(cfg, tmp_path / "a").run()
    second = Benchmark(cfg, tmp_path / "b").run()
    for a, b in zip(first["runs"], second["runs"], strict=True):
        assert a["test"] == b["test"] and a["val"] == b["val"]
        assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert first["inputs"]["augmentation"] == {
        "crop_padding": 2, "horizontal_flip": True, "cutout": 0,
    }  # fmt: skip
    env = first["environment"]
    assert env["versions"]["tensorflow"] and env["versions"]["keras"] and "git_commit" in env
    assert first["config"]["seed"] == 0 and first["config"]["dataset"]["split_seed"] == 0


def test_source_fingerprint_follows_the_code_not_the_docs(tmp_path, monkeypatch):
    package = tmp_path / "fingerprinted_pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "layers.py").write_text("class Layer:\n    scale = 1\n")
    (package / "README.md").write_text("docs")
    monkeypatch.syspath_prepend(str(tmp_path))
    from fingerprinted_pkg.sub.layers import Layer

    first = source_fingerprint([Layer])
    (package / "README.md").write_text("other docs")
    assert source_fingerprint([Layer]) == first
    (package / "__init__.py").write_text("# a comment is a change of source\n")
    changed = source_fingerprint([Layer])
    assert changed != first
    assert source_fingerprint([Layer, Benchmark]) not in (first, changed)  # mtbench counts too


@pytest.mark.slow  # whole benchmarks in subprocesses; opt in with -m slow
def test_baseline_cache_trains_each_single_task_run_once(npz_root, tmp_path):
    prepare()
    base = [
        "+experiment=cifar100_mtl",
        f"dataset.root={npz_root}",
        "trainer.progress=false",
        "trainer.epochs=1",
        *TINY[:1],
        "trainer.batch_size=128",
        f"benchmark.baseline_cache={tmp_path / 'cache'}",
    ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        ew = compose("config", overrides=base)
        static = compose(
            "config", overrides=[*base, "weighting=static", "+weighting.weights.coarse=2"]
        )
        other_seed = compose("config", overrides=[*base, "seed=1"])
    first = Benchmark(ew, tmp_path / "ew").run()
    second = Benchmark(static, tmp_path / "static").run()
    singles = [r for r in second["runs"] if r["name"].startswith("single:")]
    assert [r.get("reused_from") for r in singles] == [
        str(next((tmp_path / "cache").iterdir()))
    ] * 2
    assert [r["test"] for r in singles] == [r["test"] for r in first["runs"][:2]]
    assert "reused_from" not in second["runs"][2]  # the joint run is trained
    assert (
        second["comparison"]["hierarchy_consistency_single"]
        == (first["comparison"]["hierarchy_consistency_single"])
    )
    third = Benchmark(other_seed, tmp_path / "seed1").run()  # another seed: its own baselines
    assert not any("reused_from" in r for r in third["runs"])
    assert len(list((tmp_path / "cache").iterdir())) == 2
