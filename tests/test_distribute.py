"""tf.distribute: a mirrored run on two logical CPU devices and a two-process multi-worker run
train and match a single-device run, for loss-level and gradient-level weighting."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import fake_distribution, run_mtbench

#: slow: these run whole benchmarks in subprocesses; `python -m pytest -m slow`
pytestmark = pytest.mark.slow

SUM_OF_GRADIENTS = """
    import tensorflow as tf

    from mtbench import register
    from mtbench.weighting import GradientWeighting

    @register("weighting", "test_sum_of_gradients")
    class SumOfGradients(GradientWeighting):
        def aggregate(self, grads, losses):
            return tf.reduce_sum(grads, axis=0), tf.ones_like(losses)
"""


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> str:
    site = tmp_path_factory.mktemp("site")
    fake_distribution(site, "mtbench_test_sum", "mtbench_test_sum", SUM_OF_GRADIENTS, "sum")
    return str(site)


def _args(npz_root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "+experiment=cifar100_mtl",
        "weighting=test_sum_of_gradients",  # joint: gradient level; baselines: loss level
        f"dataset.root={npz_root}",
        "dataset.val_size=100",
        "benchmark.tasks=[fine,coarse]",
        "trainer.epochs=2",
        "trainer.batch_size=64",
        "trainer.precision=float32",
        "trainer.progress=false",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def _losses(run_dir: Path) -> dict[str, list[dict[str, float]]]:
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "complete", results["error"]
    return {run["name"]: [h["train_loss"] for h in run["history"]] for run in results["runs"]}


def _strategy(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())["runs"][-1]["distribution"]


def _assert_close(actual: dict, expected: dict) -> None:
    # Same batches and updates; only the order of floating-point sums differs.
    assert actual.keys() == expected.keys()
    for run, epochs in expected.items():
        for got, want in zip(actual[run], epochs, strict=True):
            assert got == pytest.approx(want, rel=1e-3), run


@pytest.fixture(scope="module")
def single_device(npz_root, plugin_path, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("single")
    result = run_mtbench(
        _args(npz_root, work / "run", "trainer.distribute=none"), cwd=work,
        env={"PYTHONPATH": plugin_path},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return _losses(work / "run")


def test_mirrored_on_two_logical_cpus_matches_one_device(
    single_device, npz_root, plugin_path, tmp_path
):
    result = run_mtbench(
        _args(npz_root, tmp_path / "run", "trainer.distribute=mirrored", "trainer.cpu_replicas=2"),
        cwd=tmp_path,
        env={"PYTHONPATH": plugin_path},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert _strategy(tmp_path / "run") == {"strategy": "MirroredStrategy", "replicas": 2}
    _assert_close(_losses(tmp_path / "run"), single_device)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_local_workers_match_one_device(single_device, npz_root, plugin_path, tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps(tf_config),
            "PYTHONPATH": plugin_path,
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "mtbench", *_args(npz_root, tmp_path / "run")],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        )
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    assert _strategy(tmp_path / "run")["replicas"] == 2  # the chief writes the run directory
    assert (tmp_path / "run" / "worker-1" / "results.json").is_file()  # the other worker apart
    _assert_close(_losses(tmp_path / "run"), single_device)
    _assert_close(_losses(tmp_path / "run" / "worker-1"), single_device)
