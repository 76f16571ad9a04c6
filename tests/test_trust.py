"""Numbers that hold on a shared machine: load flags, the interleaved cost ratio, equal-budget
schedules, cache keys per hardware, precision warnings, and what a refused or resumed run leaves.

Each test here failed on the code before these fixes (issue 13's findings 1, 3, 4, 7, 8, 9)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import kinds, reference_model, run_mtbench
from hydra import compose, initialize_config_dir

from mtbench import hardware
from mtbench.baselines import BaselineCache
from mtbench.cli import config_dir, prepare
from mtbench.config import TrainerConfig
from mtbench.cost import cost_comparison, flag_load, interleaved_step_seconds, load_summary
from mtbench.data import Split
from mtbench.protocol import Benchmark
from mtbench.results import render_report
from mtbench.trainer import Budget, EpochRecord, FitResult, Trainer
from mtbench.weighting import EqualWeights

TINY = [
    "dataset.val_size=100",
    "dataset.train_limit=300",
    "trainer.epochs=1",
    "trainer.batch_size=50",
    "trainer.progress=false",
    "trainer.precision=float32",
]


def _cfg(npz_root: Path, *overrides: str):
    prepare()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(
            "config",
            overrides=["+experiment=cifar100_mtl", f"dataset.root={npz_root}", *TINY, *overrides],
        )


# ----------------------------------------------------------------------- 1: load and cost
def _busy_processes(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def test_machine_share_sees_a_competing_busy_process():
    def spin(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    busy = _busy_processes(hardware.usable_cores())
    try:
        time.sleep(0.2)
        before = hardware.sample_machine()
        spin(1.0)
        after = hardware.sample_machine()
    finally:
        for process in busy:
            process.kill()
    share = hardware.machine_share(before, after)
    if share["share"] is None:
        pytest.skip("this platform has no /proc/stat to measure other processes' CPU use")
    # one process per core competes with this one: others hold about half the machine or more
    assert share["others_utilisation"] > 0.3 and share["share"] < 0.7
    assert share["cpu_seconds"] <= share["wall_seconds"] * hardware.usable_cores() + 0.05


def test_a_starved_benchmark_is_flagged_in_results_and_report(npz_root, tmp_path):
    if hardware.sample_machine().busy is None:
        pytest.skip("this platform has no /proc/stat to measure other processes' CPU use")
    cfg = _cfg(npz_root)
    busy = _busy_processes(hardware.usable_cores())
    try:
        results = Benchmark(cfg, tmp_path).run()
    finally:
        for process in busy:
            process.kill()
    for run in results["runs"]:
        load = run["load"]
        assert load["share"] < 0.8 and load["flagged"], run["name"]
        assert any("other processes used" in reason for reason in load["reasons"])
        assert all(h["cpu_seconds"] is not None and h["share"] is not None for h in run["history"])
    report = (tmp_path / "report.md").read_text()
    assert "Busy machine" in report and "(busy)" in report
    cost = results["comparison"]["cost"]
    assert set(cost["step_seconds"]) == {"single:fine", "single:coarse", "joint"}
    assert cost["joint_over_singles"] == pytest.approx(
        cost["step_seconds"]["joint"]
        / (cost["step_seconds"]["single:fine"] + cost["step_seconds"]["single:coarse"])
    )
    assert "interleaved" in cost["method"] and "Load-robust cost" in report


def _run(name: str, share: float | None, reused: bool = False) -> dict:
    history = [{"seconds": 10.0, "cpu_seconds": 15.0, "share": share}]
    run = {"name": name, "load": load_summary(history)}
    return run | ({"reused_from": "/cache"} if reused else {})


def test_flags_follow_the_threshold_and_the_siblings():
    runs = [_run("single:a", 0.97), _run("single:b", 0.95), _run("joint", 0.6)]
    assert flag_load(runs) == ["joint"]
    assert "other processes used 40%" in runs[2]["load"]["reasons"][0]
    assert any("sibling" in reason for reason in runs[2]["load"]["reasons"])
    # above the threshold but far from its siblings: not comparable either
    runs = [_run("single:a", 1.0), _run("single:b", 1.0), _run("joint", 0.82)]
    assert flag_load(runs) == ["joint"]
    # a baseline reused from the cache was measured elsewhere: neither flagged nor compared
    runs = [_run("single:a", 0.5, reused=True), _run("single:b", 0.98), _run("joint", 0.97)]
    assert flag_load(runs) == [] and not runs[0]["load"]["flagged"]
    # not measurable: nothing is claimed
    runs = [_run("single:a", None), _run("joint", None)]
    assert flag_load(runs) == []


def test_interleaving_makes_the_cost_ratio_independent_of_load_that_comes_and_goes():
    """Each step costs a fixed amount of work; a burst of "load" slows whatever runs during it.
    Timed one after the other, the ratio is off; interleaved with medians, it holds."""
    clock = {"t": 0.0}
    work = {"single:a": 1.0, "single:b": 1.0, "joint": 1.5}

    def stepper(name):
        def run(count):
            slow = 3.0 if 20 <= clock["t"] < 40 else 1.0  # a competing job for a while
            clock["t"] += work[name] * count * slow

        return run

    from unittest import mock

    with mock.patch("mtbench.cost.time.perf_counter", lambda: clock["t"]):
        seconds = interleaved_step_seconds(
            {name: stepper(name) for name in work}, rounds=5, steps=2
        )
    record = cost_comparison(seconds, ["a", "b"], rounds=5, steps=2)
    assert record["joint_over_singles"] == pytest.approx(0.75)
    assert record["joint_over_single"] == {"a": pytest.approx(1.5), "b": pytest.approx(1.5)}


def test_an_epoch_compares_runs_that_train_on_different_numbers_of_examples():
    """With one label per example (cifar100_tasks), a single-task run trains on its task's share
    of the data: per step the joint run costs about one single run, per epoch about all of
    them together, and the epoch ratio says so where the step ratio cannot."""
    seconds = {"joint": 0.06, "single:a": 0.05, "single:b": 0.05, "single:c": 0.05}
    steps = {"joint": 300, "single:a": 100, "single:b": 100, "single:c": 100}
    record = cost_comparison(seconds, ["a", "b", "c"], rounds=5, steps=2, steps_per_epoch=steps)
    assert record["joint_over_singles"] == pytest.approx(0.4)
    assert record["joint_epoch_over_singles"] == pytest.approx(0.06 * 300 / (3 * 0.05 * 100))
    assert record["steps_per_epoch"] == steps
    assert "joint_epoch_over_singles" not in cost_comparison(seconds, ["a"], rounds=5, steps=2)


# ------------------------------------------------------------------ 3: equal-budget mode
def _split(arrays, part: str, n: int) -> Split:
    return Split(
        arrays[f"x_{part}"][:n],
        {"fine": arrays[f"y_{part}_fine"][:n], "coarse": arrays[f"y_{part}_coarse"][:n]},
    )


def test_the_schedule_follows_the_time_budget(synthetic_arrays):
    """With a time budget, a cosine schedule anneals by the end of the budget, not of
    ``epochs`` (before the fix it stayed near its peak)."""
    from mtbench.config import Schedule

    config = TrainerConfig(
        batch_size=32, epochs=1000, progress=False, schedule=Schedule.cosine, learning_rate=0.01
    )
    trainer = Trainer(
        config, reference_model(), EqualWeights(), kinds("fine", "coarse"), precision="float32",
        seed=0, budget=Budget(time_budget_s=3.0),
    )  # fmt: skip
    result = trainer.fit(
        _split(synthetic_arrays, "train", 320), _split(synthetic_arrays, "test", 64)
    )
    assert result.stopped_by == "time_budget"
    assert result.history[0].learning_rate > 0.002  # early on: near the peak
    assert result.history[-1].learning_rate < 0.1 * 0.01  # annealed when the budget ran out


def test_seconds_per_epoch_does_not_average_a_partial_epoch():
    def record(epoch: int, seconds: float, steps: int) -> EpochRecord:
        return EpochRecord(epoch, {}, {}, {}, seconds, steps, 0.0, 0.0)

    # two full epochs of 10 steps at 1 s/step, then 2 steps of a third before the budget ran out
    result = FitResult(history=[record(1, 10, 10), record(2, 10, 10), record(3, 2, 2)])
    result.steps_per_epoch = 10
    assert result.seconds_per_epoch == pytest.approx(10.0)
    assert sum(result.epoch_seconds) / 3 == pytest.approx(22 / 3)  # what was reported before


def test_budget_mode_is_reported_with_steps_per_run(npz_root, tmp_path):
    results = Benchmark(_cfg(npz_root, "benchmark.time_budget_s=1000"), tmp_path).run()
    budget = results["budget"]
    assert budget["time_budget_s"] == 1000 and budget["load_dependent"]
    assert budget["steps"] == {r["name"]: r["timing"]["steps"] for r in results["runs"]}
    assert all(steps == 6 for steps in budget["steps"].values())  # 300 images / 50, one epoch
    report = (tmp_path / "report.md").read_text()
    assert "Equal-budget mode" in report and "`joint` 6" in report


# -------------------------------------------------- 4: hardware and versions in the keys
def test_the_baseline_cache_key_holds_the_resolved_precision_device_and_numpy(tmp_path):
    def key(precision="float32", device="CPU A [avx2]", numpy="2.0", requested="auto"):
        results = {
            "config": {
                "dataset": {"name": "cifar100"},
                "backbone": {"name": "seed_cnn"},
                "head": {"name": "dense"},
                "weighting": {"name": "ew"},
                "trainer": {"precision": requested},
            },
            "environment": {"versions": {"numpy": numpy}},
            "resolved": {"precision": precision, "device_class": device},
            "location_keys": [],
        }
        return BaselineCache.for_config(str(tmp_path), results).folder.name

    assert key() == key()
    assert key("mixed_bfloat16") != key("float32")
    assert key(device="CPU A [avx2 avx512_bf16]") != key()
    assert key(numpy="2.1") != key()
    # what was requested does not matter, only what it resolved to
    assert key(requested="float32") == key(requested="auto")


# ---------------------------------------------------------------------- 7: precision
def test_emulated_precision_is_warned_about_and_recorded(npz_root, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(hardware, "cpu_supports_bfloat16", lambda: False)
    cfg = _cfg(npz_root, "trainer.precision=mixed_bfloat16", "benchmark.single_task=false")
    with caplog.at_level(logging.WARNING, logger="mtbench.protocol"):
        results = Benchmark(cfg, tmp_path).run()
    assert results["resolved"]["precision"] == "mixed_bfloat16"
    assert results["resolved"]["precision_native"] is False
    assert any("not computed natively" in r.getMessage() for r in caplog.records)
    assert "emulated on this hardware" in (tmp_path / "report.md").read_text()


def test_the_report_names_the_precision_auto_chose():
    results = {
        "status": "complete",
        "error": None,
        "config": {
            "dataset": {"name": "d"},
            "backbone": {"name": "b"},
            "head": {"name": "h"},
            "weighting": {"name": "w"},
            "seed": 0,
            "benchmark": {},
            "trainer": {
                "optimizer": "adam",
                "learning_rate": 0.001,
                "schedule": "constant",
                "batch_size": 8,
                "epochs": 1,
                "precision": "auto",
            },
        },  # fmt: skip
        "environment": {"python": "3", "platform": "p", "versions": {}, "git_commit": None},
        "resolved": {"precision": "float32", "precision_native": True, "device_class": "CPU"},
        "runs": [],
        "comparison": None,
    }
    report = render_report(results)
    assert "precision float32 (chosen by trainer.precision=auto)" in report
    # a benchmark with no finished run: no empty tables, no curves.png that does not exist
    assert "| task" not in report and "curves.png" not in report
    assert "No run has finished yet" in report


# -------------------------------------------------- 8 and 9: the command line's leftovers
def test_a_refused_config_is_one_line_and_leaves_no_run_directory(tmp_path):
    result = run_mtbench(
        ["+experiment=cifar100_mtl", "trainer.epochs=0", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "mtbench: trainer.epochs=0 is out of range: it must be >= 1" in result.stderr
    assert "Traceback" not in result.stderr and "I0000" not in result.stderr
    assert not (tmp_path / "run").exists()
    # with Hydra's default run directory, the day's folder does not stay behind empty either
    result = run_mtbench(["+experiment=cifar100_mtl", "trainer.epochs=0"], cwd=tmp_path)
    assert result.returncode == 2 and not list((tmp_path / "outputs").glob("*"))


def test_a_mistyped_key_lists_the_valid_keys(tmp_path):
    result = run_mtbench(["+experiment=cifar100_mtl", "trainer.epoch=3"], cwd=tmp_path)
    assert result.returncode == 1
    assert "'trainer.epoch' is not a key of 'trainer'" in result.stderr
    assert "epochs" in result.stderr.rsplit("its keys are:", 1)[1]
    result = run_mtbench(["+experiment=cifar100_mtl", "weighting.c=3"], cwd=tmp_path)
    assert "'weighting.c' is not a key of 'weighting'; its keys are: name" in result.stderr
    assert not list(tmp_path.glob("outputs/*/*"))  # composition failed: no run directory


@pytest.mark.slow  # whole benchmarks in subprocesses; opt in with -m slow
def test_resume_continues_in_the_resumed_directory_with_one_log(npz_root, tmp_path):
    args = ["+experiment=cifar100_mtl", f"dataset.root={npz_root}", *TINY]
    args += ["benchmark.single_task=false", "benchmark.cost_rounds=0"]
    first = run_mtbench([*args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    log_before = (tmp_path / "run" / "mtbench.log").read_text()
    again = run_mtbench([*args, f"resume={tmp_path / 'run'}"], cwd=tmp_path / "run")
    assert again.returncode == 0, again.stderr[-2000:]
    log_after = (tmp_path / "run" / "mtbench.log").read_text()
    assert log_after.startswith(log_before) and "already holds complete results" in log_after
    assert not (tmp_path / "run" / "outputs").exists()  # no new, otherwise empty run directory
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "complete"
