"""Runs survive being killed: SIGKILL and resume, Ctrl-C, and re-launched sweeps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import run_mtbench

#: slow: these run whole benchmarks in subprocesses; `python -m pytest -m slow`
pytestmark = pytest.mark.slow

TINY = [
    "+experiment=cifar100_mtl",
    "dataset.val_size=100",
    "trainer.batch_size=32",
    "trainer.epochs=4",
    "trainer.progress=false",
]


def _default_sigint() -> None:
    """In the child: Ctrl-C raises KeyboardInterrupt, also when the tests themselves run as a
    background job of a non-interactive shell (which starts its jobs with SIGINT ignored, and a
    Python started with SIGINT ignored keeps ignoring it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(
        [sys.executable, "-m", "mtbench", *args], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint,
    )  # fmt: skip


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _test_numbers(run_dir: Path) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "complete", results.get("error")
    return {
        run["name"]: (run["test"], run["best_epoch"], [h["train_loss"] for h in run["history"]])
        for run in results["runs"]
    }


@pytest.fixture(scope="module")
def reference(npz_root, tmp_path_factory) -> dict:
    """The uninterrupted run that killed and resumed runs must reproduce."""
    work = tmp_path_factory.mktemp("reference")
    result = run_mtbench(
        [*TINY, f"dataset.root={npz_root}", "benchmark.single_task=false", "hydra.run.dir=run"],
        cwd=work,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return _test_numbers(work / "run")


def test_sigkill_mid_epoch_then_rerun_gives_the_same_numbers(reference, npz_root, tmp_path):
    args = [*TINY, f"dataset.root={npz_root}", "benchmark.single_task=false", "hydra.run.dir=run"]
    process = _start(args, tmp_path)
    _wait_for(tmp_path / "run" / "checkpoints" / "joint" / "last.npz", process)
    time.sleep(0.3)  # into the second epoch
    process.send_signal(signal.SIGKILL)
    process.wait()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "running" and results["runs"] == []  # killed before the end
    rerun = run_mtbench(args, cwd=tmp_path)  # the same command, the same run directory
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming at epoch" in rerun.stdout + rerun.stderr
    assert _test_numbers(tmp_path / "run") == reference


def test_ctrl_c_saves_says_how_to_resume_and_resume_finishes(reference, npz_root, tmp_path):
    args = [*TINY, f"dataset.root={npz_root}", "benchmark.single_task=false"]
    process = _start([*args, "hydra.run.dir=first"], tmp_path)
    _wait_for(tmp_path / "first" / "checkpoints" / "joint" / "last.npz", process)
    # at once: the first epoch's checkpoint is there and the other epochs take a few tenths of a
    # second on a fast machine (a later signal could find the benchmark finished)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    output = stdout + stderr
    results = json.loads((tmp_path / "first" / "results.json").read_text())
    assert results["status"] == "interrupted" and "interrupted" in results["error"]
    assert "resume with:" in output and f"resume={tmp_path / 'first'}" in output
    # a new Hydra run directory, resuming the interrupted one
    resumed = run_mtbench(
        [*args, "hydra.run.dir=second", f"resume={tmp_path / 'first'}"], cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _test_numbers(tmp_path / "first") == reference


def test_relaunched_sweep_skips_finished_runs(npz_root, tmp_path):
    args = [
        "-m", *TINY, f"dataset.root={npz_root}", "trainer.epochs=1", "seed=0,1",
        "benchmark.single_task=false", f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]  # fmt: skip
    first = run_mtbench(args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    finished = tmp_path / "sweep" / "0" / "results.json"
    crashed = json.loads((tmp_path / "sweep" / "1" / "results.json").read_text())
    (tmp_path / "sweep" / "1" / "results.json").write_text(
        json.dumps(crashed | {"status": "running", "runs": [], "comparison": None})
    )
    before = finished.stat().st_mtime_ns
    second = run_mtbench(args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert finished.stat().st_mtime_ns == before  # not trained, not even rewritten
    assert "already holds complete results" in second.stdout + second.stderr
    redone = json.loads((tmp_path / "sweep" / "1" / "results.json").read_text())
    assert redone["status"] == "complete"
    assert [r["test"] for r in redone["runs"]] == [r["test"] for r in crashed["runs"]]


def test_resuming_with_another_config_is_refused(npz_root, tmp_path):
    args = [*TINY, f"dataset.root={npz_root}", "trainer.epochs=1", "benchmark.single_task=false"]
    assert run_mtbench([*args, "hydra.run.dir=run"], cwd=tmp_path).returncode == 0
    other = run_mtbench([*args, "hydra.run.dir=run", "trainer.learning_rate=0.1"], cwd=tmp_path)
    assert other.returncode != 0
    assert "different config (differs in trainer.learning_rate)" in other.stderr
