"""The benchmark protocol: single-task baselines against one joint model, under one protocol.

Every run uses the same data splits, data order, backbone, hyper-parameters, epoch budget and
seed (the model is initialised from the same seed in each run). Single-task baselines train one
task with the plain loss; the joint model trains all tasks with the chosen weighting method.
``results.json`` is rewritten after every run, so a failure keeps what was finished.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf

from mtbench import registry
from mtbench.config import TrainerConfig, check_keys
from mtbench.data import DatasetError, DatasetSplits
from mtbench.hardware import PeakMemory, describe_device, resolve_precision
from mtbench.io import atomic_write_json, atomic_write_text
from mtbench.model import MultiTaskModel
from mtbench.results import (
    SCHEMA,
    compare,
    environment,
    hierarchy_consistency,
    render_report,
    summary_text,
)
from mtbench.trainer import Trainer
from mtbench.weighting import EqualWeights, Weighting

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    name: str
    tasks: tuple[str, ...]
    joint: bool


@contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Build layers under a Keras dtype policy, restoring the previous one afterwards."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def plan_runs(tasks: Sequence[str], single_task: bool) -> list[RunPlan]:
    plans = [RunPlan(f"single:{t}", (t,), False) for t in tasks] if single_task else []
    if len(tasks) > 1:
        plans.append(RunPlan("joint", tuple(tasks), True))
    return plans


def build_model(
    cfg: DictConfig, data: DatasetSplits, tasks: Sequence[str], precision: str, seed: int
) -> MultiTaskModel:
    """The backbone and heads for ``tasks``, initialised from ``seed`` under ``precision``."""
    keras.utils.set_random_seed(seed)
    hierarchy = data.hierarchy
    if hierarchy is not None and not {hierarchy.child, hierarchy.parent} <= set(tasks):
        hierarchy = None
    with dtype_policy(precision):
        model = MultiTaskModel(
            registry.build("backbone", cfg.backbone),
            registry.build(
                "head", cfg.head, tasks=[data.task(t) for t in tasks], hierarchy=hierarchy
            ),
        )
        model(tf.zeros([1, *data.train.x.shape[1:]], tf.as_dtype(data.train.x.dtype)))
    return model


class Benchmark:
    """Runs the protocol for one composed config and writes its results into ``output_dir``."""

    def __init__(self, cfg: DictConfig, output_dir: Path) -> None:
        check_keys(cfg)
        self.cfg = cfg
        self.output_dir = Path(output_dir)
        self.trainer_config: TrainerConfig = OmegaConf.to_object(cfg.trainer)  # type: ignore[assignment]
        self.results: dict[str, Any] = {
            "schema": SCHEMA,
            "status": "running",
            "error": None,
            "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
            "environment": environment(),
            "runs": [],
            "comparison": None,
        }

    def run(self) -> dict[str, Any]:
        try:
            self._run()
        except BaseException as exc:
            self.results["status"] = "failed"
            self.results["error"] = "".join(traceback.format_exception_only(exc)).strip()
            self._write()
            raise
        self.results["status"] = "complete"
        self._write()
        print(summary_text(self.results))
        log.info("results written to %s", self.output_dir / "results.json")
        return self.results

    def _run(self) -> None:
        cfg = self.cfg
        # Build the joint weighting first: a bad option fails before any data is read.
        check = self._make_weighting(joint=True)
        precision = resolve_precision(str(self.results["config"]["trainer"]["precision"]))
        data = registry.build("dataset", cfg.dataset).load()
        tasks = self._select_tasks(data)
        check.setup(tasks)  # options that depend on the tasks fail before training, too
        log.info(
            "data: %d train, %d validation, %d test images; tasks %s; precision %s",
            len(data.train), len(data.val), len(data.test), ", ".join(tasks), precision,
        )  # fmt: skip
        predictions: dict[str, dict[str, np.ndarray]] = {}
        for plan in plan_runs(tasks, bool(cfg.benchmark.single_task)):
            run, predictions[plan.name] = self._train(plan, data, precision)
            self.results["runs"].append(run)
            self._write()
        self.results["comparison"] = self._compare(tasks, data, predictions)

    def _select_tasks(self, data: DatasetSplits) -> list[str]:
        available = [t.name for t in data.tasks]
        wanted = list(self.cfg.benchmark.tasks or available)
        unknown = [t for t in wanted if t not in available]
        if unknown or not wanted:
            raise DatasetError(
                f"benchmark.tasks={wanted} is not a non-empty subset of the dataset's tasks "
                f"{available}"
            )
        return wanted

    def _make_weighting(self, joint: bool) -> Weighting:
        if not joint:
            return EqualWeights()
        weighting = registry.build("weighting", self.cfg.weighting)
        if not isinstance(weighting, Weighting):
            raise registry.PluginError(
                f"weighting '{self.cfg.weighting.name}' built a {type(weighting).__name__}, "
                "not a mtbench.weighting.Weighting"
            )
        return weighting

    def _train(
        self, plan: RunPlan, data: DatasetSplits, precision: str
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        seed = int(self.cfg.seed)
        log.info("run %s: tasks %s", plan.name, ", ".join(plan.tasks))
        memory = PeakMemory()
        memory.start()
        model = build_model(self.cfg, data, plan.tasks, precision, seed)
        weighting = self._make_weighting(plan.joint)
        trainer = Trainer(
            self.trainer_config,
            model,
            weighting,
            plan.tasks,
            precision=precision,
            seed=seed,
            logdir=self.output_dir / "tensorboard" / plan.name.replace(":", "_"),
            name=plan.name,
        )
        fit = trainer.fit(data.train, data.val)
        tick = time.perf_counter()
        test_metrics, predictions = trainer.evaluate(data.test)
        test_seconds = time.perf_counter() - tick
        memory.stop()
        run = {
            "name": plan.name,
            "tasks": list(plan.tasks),
            "weighting": self.cfg.weighting.name if plan.joint else "plain loss",
            "test": test_metrics,
            "best_epoch": fit.best_epoch,
            "val": fit.best_val,
            "history": [
                {
                    "epoch": r.epoch,
                    "train_loss": r.train_loss,
                    "loss_weights": r.weights,
                    "val": r.val,
                    "seconds": r.seconds,
                }
                for r in fit.history
            ],
            "timing": {
                "epoch_seconds": fit.epoch_seconds,
                "train_seconds": fit.train_seconds,
                "images_per_second": fit.images_per_second,
                "trace_seconds": fit.trace_seconds,
                "eval_seconds": fit.eval_seconds,
                "test_seconds": test_seconds,
            },
            "parameters": int(model.count_params()),
            "peak_memory_mb": memory.host_mb,
            "peak_memory_scope": memory.scope,
            "peak_device_memory_mb": memory.device_mb,
            "device": describe_device(),
            "precision": precision,
        }
        return run, predictions

    def _compare(
        self,
        tasks: list[str],
        data: DatasetSplits,
        predictions: dict[str, dict[str, np.ndarray]],
    ) -> dict[str, Any] | None:
        comparison = compare(self.results["runs"], tasks)
        hierarchy = data.hierarchy
        if comparison is None:
            return None
        comparison.update(
            hierarchy=None, hierarchy_consistency=None, hierarchy_consistency_single=None
        )
        if hierarchy is not None and {hierarchy.child, hierarchy.parent} <= set(tasks):
            joint = predictions["joint"]
            comparison["hierarchy"] = {"child": hierarchy.child, "parent": hierarchy.parent}
            comparison["hierarchy_consistency"] = hierarchy_consistency(
                joint[hierarchy.child], joint[hierarchy.parent], hierarchy.parent_of
            )
            comparison["hierarchy_consistency_single"] = hierarchy_consistency(
                predictions[f"single:{hierarchy.child}"][hierarchy.child],
                predictions[f"single:{hierarchy.parent}"][hierarchy.parent],
                hierarchy.parent_of,
            )
        return comparison

    def _write(self) -> None:
        atomic_write_json(self.output_dir / "results.json", self.results)
        atomic_write_text(self.output_dir / "report.md", render_report(self.results))


def run_benchmark(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Run the benchmark that ``cfg`` describes; write ``results.json`` and ``report.md``."""
    return Benchmark(cfg, output_dir).run()
