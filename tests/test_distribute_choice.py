"""Which strategy a run gets from ``trainer.distribute`` and ``TF_CONFIG``, and the refusals of a
cluster configuration it cannot honour (a ``ConfigError``: the command line prints its one line).
The strategies are stubbed: joining a real cluster is tested in ``test_distribute.py`` (slow)."""

from __future__ import annotations

import json

import pytest
import tensorflow as tf

from mtbench import distribute
from mtbench.config import ConfigError


class _StubMultiWorker:
    made = 0

    def __init__(self) -> None:
        type(self).made += 1


def _cluster(index: int, workers: tuple[str, ...] = ("h1:1", "h2:2")) -> str:
    return json.dumps(
        {"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}}
    )


@pytest.fixture
def stub_multi_worker(monkeypatch):
    _StubMultiWorker.made = 0
    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", _StubMultiWorker)
    monkeypatch.setattr(distribute, "_MULTI_WORKER", [])
    return _StubMultiWorker


def test_auto_joins_the_cluster_that_tf_config_describes(monkeypatch, stub_multi_worker):
    monkeypatch.setenv("TF_CONFIG", _cluster(0))
    strategy = distribute.make_strategy("auto")
    assert isinstance(strategy, stub_multi_worker)
    # the next run of the same process, same cluster: the same strategy, not a second one
    monkeypatch.setenv("TF_CONFIG", json.dumps(json.loads(_cluster(0)), indent=2))
    assert distribute.make_strategy("multi_worker") is strategy
    assert stub_multi_worker.made == 1


@pytest.mark.parametrize(
    "changed",
    [_cluster(1), _cluster(0, workers=("h1:1", "h3:3"))],
    ids=["another task", "another cluster"],
)
def test_a_changed_tf_config_is_refused_not_trained_in_the_old_cluster(
    monkeypatch, stub_multi_worker, changed
):
    monkeypatch.setenv("TF_CONFIG", _cluster(0))
    distribute.make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", changed)
    with pytest.raises(ConfigError, match="TF_CONFIG changed after this process joined") as info:
        distribute.make_strategy("auto")
    assert '"index": 0' in str(info.value) and changed in str(info.value)
    assert "python -m mtbench" in str(info.value)
    assert stub_multi_worker.made == 1


def test_multi_worker_without_a_cluster_says_what_tf_config_needs(monkeypatch, stub_multi_worker):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="needs TF_CONFIG describing the cluster"):
        distribute.make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{cluster: [")
    with pytest.raises(ConfigError, match="TF_CONFIG is not valid JSON"):
        distribute.make_strategy("auto")
    assert stub_multi_worker.made == 0


def test_an_unknown_strategy_names_the_choices():
    with pytest.raises(ValueError, match="choose one of auto, none, mirrored, multi_worker"):
        distribute.make_strategy("mirored")


def test_splitting_the_cpu_after_tensorflow_started_says_to_use_a_process_of_its_own():
    tf.config.list_logical_devices("CPU")  # starts TensorFlow's runtime in this process
    with pytest.raises(ConfigError, match=r"trainer.cpu_replicas=3 needs to split the CPU") as info:
        distribute.split_cpu(3)
    assert "own `python -m mtbench` process" in str(info.value)
