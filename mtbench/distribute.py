"""Which ``tf.distribute`` strategy trains a run.

- ``auto``: ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` describes a cluster of several
  workers, ``MirroredStrategy`` over all GPUs when there are several, else the default strategy
  (one device).
- ``none``: the default strategy. ``mirrored``: ``MirroredStrategy`` over all GPUs, or over
  ``cpu_replicas`` logical CPU devices. ``multi_worker``: ``MultiWorkerMirroredStrategy`` from
  ``TF_CONFIG``.

``cpu_replicas > 1`` splits the CPU into that many logical devices; TensorFlow allows this only
before its runtime starts, so it must be the first TensorFlow work of the process.
"""

from __future__ import annotations

import functools
import json
import os

import tensorflow as tf

from mtbench.config import ConfigError

STRATEGIES = ("auto", "none", "mirrored", "multi_worker")


def _tf_config() -> dict:
    try:
        return json.loads(os.environ.get("TF_CONFIG", "{}"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"TF_CONFIG is not valid JSON: {exc}") from exc


def _workers_in_tf_config() -> int:
    cluster = _tf_config().get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def split_cpu(replicas: int) -> None:
    """Expose ``replicas`` logical CPU devices (before TensorFlow's runtime starts)."""
    if replicas <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == replicas:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)]
        )
    except RuntimeError as exc:
        raise ConfigError(
            f"trainer.cpu_replicas={replicas} needs to split the CPU before TensorFlow starts; "
            "this process already started it (with another number of CPU devices): run it as its "
            "own `python -m mtbench` process"
        ) from exc


def make_strategy(kind: str, cpu_replicas: int = 1) -> tf.distribute.Strategy:
    if kind not in STRATEGIES:
        raise ValueError(f"trainer.distribute={kind!r}; choose one of {', '.join(STRATEGIES)}")
    split_cpu(cpu_replicas)
    # physical devices only: listing logical ones would start the runtime, which a multi-worker
    # strategy must configure first
    gpus = tf.config.list_physical_devices("GPU")
    if kind == "auto":
        if _workers_in_tf_config() > 1:
            kind = "multi_worker"
        elif len(gpus) > 1 or cpu_replicas > 1:
            kind = "mirrored"
        else:
            kind = "none"
    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "multi_worker":
        if _workers_in_tf_config() < 1:
            raise ConfigError(
                "trainer.distribute=multi_worker needs TF_CONFIG describing the cluster "
                '(e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                '"task": {"type": "worker", "index": 0}})'
            )
        return _multi_worker()
    if gpus:
        return _mirrored(tuple(d.name for d in tf.config.list_logical_devices("GPU")))
    return _mirrored(tuple(d.name for d in tf.config.list_logical_devices("CPU")))


@functools.cache
def _mirrored(devices: tuple[str, ...]) -> tf.distribute.MirroredStrategy:
    """One strategy per process and device list. Every ``MirroredStrategy`` made in a process
    starts its collective keys afresh, so a second one (the next job of a Hydra multirun) reuses
    the first's keys and its all-reduces fail with "Shape mismatch in the collective instance";
    reusing the strategy is safe (its variables belong to the models, not to it)."""
    return tf.distribute.MirroredStrategy(list(devices))


#: the process's multi-worker strategy and the TF_CONFIG it was made from
_MULTI_WORKER: list[tuple[dict, tf.distribute.MultiWorkerMirroredStrategy]] = []


def _multi_worker() -> tf.distribute.MultiWorkerMirroredStrategy:
    """One per process: TensorFlow configures the collective runtime once, with the first
    strategy, so a process stays in the cluster it joined first; a later run whose ``TF_CONFIG``
    describes another cluster or another task is refused rather than trained in the old one."""
    config = _tf_config()
    if not _MULTI_WORKER:
        _MULTI_WORKER.append((config, tf.distribute.MultiWorkerMirroredStrategy()))
    joined, strategy = _MULTI_WORKER[0]
    if config != joined:
        raise ConfigError(
            f"TF_CONFIG changed after this process joined its cluster as "
            f"{json.dumps(joined)}; it is now {json.dumps(config)}. TensorFlow sets up a "
            "process's collective runtime once, so run each cluster's job as its own "
            "`python -m mtbench` process on every worker rather than as the next job of a "
            "multirun (e.g. through hydra.job.env_set.TF_CONFIG)"
        )
    return strategy


def describe(strategy: tf.distribute.Strategy) -> dict[str, object]:
    name = type(strategy).__name__
    return {
        "strategy": "default" if name == "_DefaultDistributionStrategy" else name,
        "replicas": int(strategy.num_replicas_in_sync),
    }


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's outputs (the chief, or worker 0 without a chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief
