"""One trainer for single-task and multitask runs, on one device or under a ``tf.distribute``
strategy: the epochs of a fit, its budget, checkpoints, evaluation and logs.

The training function is compiled once per run (before the clock starts) from
:class:`~mtbench.training.step.ReplicaStep`'s per-replica step; the best epoch is chosen by
:func:`~mtbench.training.selection.selection_score`; what a fit measured (and how its seconds
are timed) is in :mod:`mtbench.training.records`.

In equal-budget mode (``time_budget_s``) the learning-rate schedule runs on the fraction of the
budget spent (or of ``epochs``, whichever is further along), so it anneals fully by the end of
the budget whatever the step rate.

A weighting method with ``needs_meta_batch`` (Auto-Lambda) gets a meta batch with every training
batch, from the training split in its own order (:class:`~mtbench.pipeline.EpochBatches`); the
validation split only ever chooses the best epoch.

A NaN or infinite loss or gradient stops the run with :class:`NonFiniteError` (the update is not
applied, the last checkpoint is kept); ``skip_nonfinite_steps`` skips and counts such steps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mtbench.architecture import check_weighting
from mtbench.config import TrainerConfig
from mtbench.data import Split
from mtbench.hardware import gpu_utilisation, machine_share, sample_machine
from mtbench.inputs import Inputs
from mtbench.model import MultiTaskModel
from mtbench.optim import BudgetSchedule, learning_rate, make_optimizer
from mtbench.pipeline import EpochBatches
from mtbench.tasks import TaskKind
from mtbench.training.checkpoints import FitCheckpoints
from mtbench.training.compiled import predict_function, train_function
from mtbench.training.counters import EpochCounters
from mtbench.training.records import EpochRecord, FitResult
from mtbench.training.selection import selection_score
from mtbench.training.step import ReplicaStep
from mtbench.weighting import GradientWeighting, Weighting

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """A loss or gradient became NaN or infinite; the update was not applied."""


class Interrupted(Exception):
    """Training was interrupted (Ctrl-C or SIGTERM); a checkpoint of the moment was saved."""


@dataclass
class Budget:
    """When a run stops besides its epochs (see ``benchmark`` in :mod:`mtbench.config`)."""

    time_budget_s: float | None = None
    target: Mapping[str, float] = field(default_factory=dict)
    stop_at_target: bool = False


class Trainer:
    """Trains a :class:`MultiTaskModel` on some tasks with a weighting method.

    The model and the weighting must have been created under ``strategy.scope()``.

    Args:
        config: The ``trainer`` config.
        model: The model; its heads must predict every task in ``tasks``.
        weighting: The weighting plugin, not yet set up.
        tasks: The kinds of the tasks this run trains (bound to their tasks, fitted on the
            training split: :func:`mtbench.data.validate`), in a fixed order.
        inputs: The dataset's input declaration (augmentation, evaluation views).
        precision: The resolved Keras dtype policy the model was built under.
        seed: Seeds the data order and augmentation (see :mod:`mtbench.pipeline`).
        strategy: The ``tf.distribute`` strategy (default: the current one).
        budget: Time budget and accuracy targets.
        logdir: Where TensorBoard scalars go (``None``: nowhere).
        checkpoint_dir: Where ``last.npz`` and ``best.npz`` go (``None``: no checkpoints).
        name: The run's name, for progress bars and logs.
    """

    def __init__(
        self,
        config: TrainerConfig,
        model: MultiTaskModel,
        weighting: Weighting,
        tasks: Sequence[TaskKind] | Mapping[str, TaskKind],
        *,
        inputs: Inputs | None = None,
        precision: str,
        seed: int,
        strategy: tf.distribute.Strategy | None = None,
        budget: Budget | None = None,
        logdir: Path | None = None,
        checkpoint_dir: Path | None = None,
        name: str = "run",
    ) -> None:
        self.config = config
        self.model = model
        self.weighting = weighting
        kinds = list(tasks.values()) if isinstance(tasks, Mapping) else list(tasks)
        if not all(isinstance(k, TaskKind) for k in kinds):
            raise TypeError(
                "Trainer(tasks=...) takes the tasks' kinds (mtbench.tasks.TaskKind, e.g. from "
                "mtbench.data.validate or mtbench.tasks.task_kind(TaskSpec(...))), not names"
            )
        self.kinds = {k.name: k for k in kinds}
        self.tasks = tuple(self.kinds)
        self.inputs = inputs or Inputs()
        self.precision = precision
        self.seed = seed
        self.strategy = strategy or tf.distribute.get_strategy()
        self.budget = budget or Budget()
        self.checkpoint_dir = checkpoint_dir
        self.name = name
        if len(self.tasks) > 1:  # a feature-level method needs the one representation heads read
            check_weighting(
                model,
                weighting,
                architecture=getattr(model, "architecture", type(model).__name__),
                weighting_name=type(weighting).__name__,
            )
        with self.strategy.scope():
            self.weighting.setup(self.tasks)
            if (
                isinstance(weighting, GradientWeighting)
                and weighting.gradient_of == "shared_parameters"
            ):
                size = sum(int(np.prod(v.shape)) for v in model.shared_variables)
                weighting.build_gradient_state(size)
        self._writer = tf.summary.create_file_writer(str(logdir)) if logdir else None
        self.counters = EpochCounters(self.tasks)
        self.optimizer: keras.optimizers.Optimizer | None = None
        self._train_call: Any = None
        self._predict: Any = None
        self._epoch_started = 0.0
        self._epoch_machine: dict[str, float | None] = {}
        self._budget_progress: tf.Variable | None = None
        self.batches: EpochBatches | None = None
        self.step = ReplicaStep(
            model, weighting, self.kinds, self.strategy, precision, lambda: self.optimizer
        )
        self.samples = self.step.samples
        self.checkpoints = FitCheckpoints(checkpoint_dir, model, self._state)
        self.trace_seconds = 0.0

    # --------------------------------------------------------------- compiled functions
    def _build(self, steps_per_epoch: int, example: Split) -> None:
        config = self.config
        with self.strategy.scope():
            rate = learning_rate(
                config.schedule.value,
                config.learning_rate,
                steps_per_epoch,
                config.epochs,
                config.warmup_epochs,
            )
            if self.budget.time_budget_s is not None and not isinstance(rate, float):
                # the schedule runs on the fraction of the budget spent, set between calls
                self._budget_progress = tf.Variable(0.0, trainable=False, dtype=tf.float32)
                rate = BudgetSchedule(rate, steps_per_epoch * config.epochs, self._budget_progress)
            self.optimizer = make_optimizer(
                config.optimizer.value,
                rate,
                momentum=config.momentum,
                nesterov=config.nesterov,
                weight_decay=config.weight_decay,
                precision=self.precision,
            )
            self.optimizer.build(self.step.updated_variables())
        self._train_call = train_function(
            self.step, self.counters, self.strategy, config.skip_nonfinite_steps
        )
        self._predict = predict_function(self.model, self.inputs, example)

    # ------------------------------------------------------------------------------------- fit
    def fit(self, train: Split, val: Split, resume: bool = False) -> FitResult:
        """Train, validating after each epoch; the model ends with its best epoch's weights.

        The best epoch is chosen on validation by
        :func:`~mtbench.training.selection.selection_score` (see
        :data:`~mtbench.training.selection.SELECTION_RULE`). With ``resume``, training continues
        from ``checkpoint_dir/last.npz``.

        Raises:
            NonFiniteError: a loss or gradient was not finite (unless skipping is configured).
            Interrupted: Ctrl-C or SIGTERM; a checkpoint of the moment was saved first.
        """
        config, counters, checkpoints = self.config, self.counters, self.checkpoints
        if config.batch_size > len(train):
            raise ValueError(
                f"trainer.batch_size={config.batch_size} is larger than the training split "
                f"({len(train)} examples); lower trainer.batch_size or train on more data."
            )
        batches = self.prepare(train)
        result = FitResult(steps_per_epoch=self._steps_per_epoch(batches))
        best_weights: list[np.ndarray] | None = None
        best_score, epoch, first_batch, partial_seconds = -np.inf, 1, 0, 0.0
        if resume:
            progress = checkpoints.restore(result)
            epoch, first_batch = progress["epoch"], progress["batch"]
            partial_seconds, best_score = progress["partial_seconds"], progress["best_score"]
            best_weights = checkpoints.best_weights()
            result.resumed_from = {"epoch": epoch, "batch": first_batch}
            log.info("%s: resuming at epoch %d, batch %d", self.name, epoch, first_batch)
        result.trace_seconds += self.trace_seconds

        while epoch <= config.epochs and result.stopped_by == "epochs":
            if first_batch == 0:
                counters.reset()
            try:
                seconds, stopped = self._train_epoch(batches, epoch, first_batch, result)
            except KeyboardInterrupt as exc:
                partial_seconds += time.perf_counter() - self._epoch_started
                step = counters.steps_done()
                checkpoints.save_last(result, epoch, step, best_score, partial_seconds)
                raise Interrupted(
                    f"{self.name} interrupted at step {step} of epoch {epoch}"
                ) from exc
            seconds += partial_seconds
            first_batch, partial_seconds = 0, 0.0
            steps = counters.steps_done()
            result.images_seen += min(steps * self.samples * config.batch_size, len(train))
            if stopped:
                result.stopped_by = stopped
            tick = time.perf_counter()
            val_metrics = self.evaluate(val)[0]
            result.eval_seconds += time.perf_counter() - tick
            record = self._record(epoch, val_metrics, seconds, result)
            result.history.append(record)
            result.skipped_steps += record.skipped_steps
            self.weighting.on_epoch_end(epoch, counters.losses_per_step())
            self._log_epoch(record, steps * config.batch_size / max(seconds, 1e-9))
            reference = result.history[0].val if result.history else val_metrics
            score = selection_score(val_metrics, self.kinds, reference)
            if score > best_score:
                best_score, best_weights = score, [v.numpy() for v in self.model.variables]
                result.best_epoch, result.best_val = epoch, val_metrics
                result.best_score = score
                checkpoints.save_best(epoch, val_metrics)
            self._check_target(record, result)
            if config.checkpoint_every and (
                epoch % config.checkpoint_every == 0 or epoch == config.epochs
            ):
                checkpoints.save_last(result, epoch + 1, 0, best_score)
            epoch += 1
        if best_weights is not None:
            for variable, value in zip(self.model.variables, best_weights, strict=True):
                variable.assign(value)
        if self._writer is not None:
            self._writer.flush()
        return result

    def prepare(self, train: Split) -> EpochBatches:
        """Build the optimizer and compile the training and prediction functions for ``train``
        (``fit`` starts with this; benchmarks call it to time steps alone). The seconds it took
        are in ``trace_seconds``."""
        config = self.config
        batches = EpochBatches(
            train,
            self.kinds,
            config.batch_size,
            self.seed,
            self.inputs,
            meta_batches=self.weighting.needs_meta_batch,
        )
        if batches.steps_per_epoch < self.samples:
            raise ValueError(
                f"{type(self.weighting).__name__} draws {self.samples} batches per update, but an "
                f"epoch has only {batches.steps_per_epoch}; lower trainer.batch_size"
            )
        self._build(self._steps_per_epoch(batches), train)
        start = time.perf_counter()
        self._trace(batches)
        self.trace_seconds = time.perf_counter() - start
        self.batches = batches
        return batches

    def _steps_per_epoch(self, batches: EpochBatches) -> int:
        """Updates per epoch: one per batch, or per ``samples`` batches for sampling methods."""
        return batches.steps_per_epoch // self.samples

    def updates_per_epoch(self, batches: EpochBatches) -> int:
        """How many training steps (updates; :meth:`run_steps` counts these) make an epoch of
        ``batches``: one per batch, or one per ``samples`` batches for sampling methods."""
        return self._steps_per_epoch(batches)

    def step_iterator(self, batches: EpochBatches, epoch: int = 1) -> Any:
        """An endless iterator over ``batches`` (epoch ``epoch``'s order, repeated) for
        :meth:`run_steps`, distributed like training batches."""
        return iter(self._distribute(batches.dataset(epoch).repeat()))

    def train_epoch(self, batches: EpochBatches, epoch: int) -> float:
        """Train one whole epoch of ``batches`` (after :meth:`prepare`); return its seconds."""
        self.counters.reset()
        return self._train_epoch(batches, epoch, 0, FitResult())[0]

    def run_steps(self, iterator: Any, count: int) -> None:
        """Run ``count`` training steps from ``iterator`` (after :meth:`prepare`), waiting for
        them to finish."""
        self._train_call(iterator, tf.constant(count, tf.int64))
        self.counters.steps_done()

    def _trace(self, batches: EpochBatches) -> None:
        """Compile the training and prediction functions (the training clock is not running)."""
        probe = iter(self._distribute(batches.dataset(epoch=1).take(1)))
        # Running zero steps changes no state but makes TensorFlow optimise the graph, which it
        # does on a function's first execution: that cost belongs here, not in epoch 1.
        self._train_call(probe, tf.constant(0, tf.int64))
        self._predict.get_concrete_function()

    def _distribute(self, dataset: tf.data.Dataset) -> Any:
        if type(self.strategy).__name__ == "_DefaultDistributionStrategy":
            return dataset
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        return self.strategy.experimental_distribute_dataset(dataset.with_options(options))

    def _train_epoch(
        self, batches: EpochBatches, epoch: int, first_batch: int, result: FitResult
    ) -> tuple[float, str | None]:
        """Train one epoch from ``first_batch``; return its seconds and why it stopped early."""
        total = self._steps_per_epoch(batches)
        bar = _progress_bar(
            total, f"{self.name} epoch {epoch}/{self.config.epochs}", self.config.progress
        )
        bar.update(first_batch)
        budget = self.budget.time_budget_s
        spent = result.train_seconds
        steps_before = (epoch - 1) * total
        stopped = None
        start = sample_machine()
        tick = self._epoch_started = start.wall
        iterator = iter(self._distribute(batches.dataset(epoch, first_batch * self.samples)))
        done = first_batch
        try:
            while done < total:
                count = min(self.config.steps_per_call, total - done)
                if self._budget_progress is not None and budget is not None:
                    elapsed = (spent + time.perf_counter() - tick) / budget
                    by_steps = (steps_before + done) / (total * self.config.epochs)
                    self._budget_progress.assign(min(max(elapsed, by_steps), 1.0))
                self._train_call(iterator, tf.constant(count, tf.int64))
                done = self.counters.steps_done()  # reads back: the call's work has finished
                bar.update(done - bar.n)
                if self.counters.failed.numpy():
                    raise NonFiniteError(self._nonfinite_message(epoch, done))
                if done % 25 < count or done == total:
                    bar.set_postfix(self.counters.mean_losses(), refresh=False)
                if budget is not None and spent + time.perf_counter() - tick >= budget:
                    stopped = "time_budget"
                    break
        finally:
            bar.close()  # before any message, so that it is not glued to the bar's line
        end = sample_machine()
        self._epoch_machine = machine_share(start, end) | {"gpu_utilisation": gpu_utilisation()}
        return end.wall - tick, stopped

    def _record(
        self, epoch: int, val: dict[str, dict[str, float]], seconds: float, result: FitResult
    ) -> EpochRecord:
        counters, machine = self.counters, self._epoch_machine
        assert self.optimizer is not None
        return EpochRecord(
            epoch=epoch,
            train_loss=counters.mean_losses(),
            weights=counters.mean_weights(),
            val=val,
            seconds=seconds,
            steps=counters.steps_done(),
            train_seconds_so_far=result.train_seconds + seconds,
            learning_rate=float(keras.ops.convert_to_numpy(self.optimizer.learning_rate)),
            skipped_steps=counters.skipped_steps(),
            cpu_seconds=machine.get("cpu_seconds"),
            others_utilisation=machine.get("others_utilisation"),
            share=machine.get("share"),
            cpu_utilisation=machine.get("cpu_utilisation"),
            load_average=machine.get("load_average"),
            gpu_utilisation=machine.get("gpu_utilisation"),
        )

    def _check_target(self, record: EpochRecord, result: FitResult) -> None:
        target = {t: v for t, v in self.budget.target.items() if t in self.tasks}
        if not target or result.time_to_target is not None:
            return

        def reached(task: str, value: float) -> bool:
            metric = self.kinds[task].primary
            current = record.val[task][metric.name]
            return current >= value if metric.higher_is_better else current <= value

        if all(reached(t, v) for t, v in target.items()):
            result.time_to_target = {
                "epoch": record.epoch,
                "train_seconds": record.train_seconds_so_far,
                "target": dict(target),
                "load_dependent": True,  # wall-clock seconds: see the epochs' machine share
            }
            if self.budget.stop_at_target:
                result.stopped_by = "target"

    def _nonfinite_message(self, epoch: int, step: int) -> str:
        bad_losses, bad_grads = self.counters.nonfinite_tasks()
        where = f"at step {step} of epoch {epoch}"
        if bad_losses:
            what = f"the loss of task {', '.join(repr(t) for t in bad_losses)} is not finite"
        elif bad_grads:
            what = f"the gradient of task {', '.join(repr(t) for t in bad_grads)} is not finite"
        else:
            what = (
                "the update is not finite although every task's loss is "
                f"(the weighting {type(self.weighting).__name__} or the optimizer produced it)"
            )
        return (
            f"{self.name}: {what} {where}; the update was not applied and the last checkpoint "
            "is kept. Lower trainer.learning_rate, or set trainer.skip_nonfinite_steps=true to "
            "skip such steps."
        )

    def _state(self) -> dict[str, list[Any]]:
        """Every variable a resumed fit needs, by group (after :meth:`prepare`)."""
        assert self.optimizer is not None
        return {
            "model": list(self.model.variables),
            "optimizer": list(self.optimizer.variables),
            "weighting": list(self.weighting.variables),
            "trainer": self.counters.checkpointed,
        }

    # ----------------------------------------------------------------------------- evaluation
    def predict(self, split: Split) -> dict[str, np.ndarray]:
        """float32 head outputs of every task for every example of ``split``."""
        if self._predict is None:
            self._predict = predict_function(self.model, self.inputs, split)
        outputs: dict[str, list[np.ndarray]] = {t: [] for t in self.tasks}
        size = self.config.eval_batch_size
        for start in range(0, len(split), size):
            batch = tf.nest.map_structure(lambda a, i=start: tf.constant(a[i : i + size]), split.x)
            predicted = self._predict(batch)
            for t in self.tasks:
                outputs[t].append(predicted[t].numpy())
        return {t: np.concatenate(chunks) for t, chunks in outputs.items()}

    def evaluate(self, split: Split) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
        """Every task's metrics (on its labelled examples) and its predictions in label space
        (the predicted class, the 0/1 labels, the target in its unit) for every example."""
        outputs = self.predict(split)
        metrics = {t: self.kinds[t].evaluate(outputs[t], split.y[t]) for t in self.tasks}
        predictions = {t: self.kinds[t].predictions(outputs[t]) for t in self.tasks}
        return metrics, predictions

    # ---------------------------------------------------------------------------------- report
    def _log_epoch(self, record: EpochRecord, examples_per_second: float) -> None:
        primaries = ", ".join(
            f"{t} {self.kinds[t].primary.name} {record.val[t][self.kinds[t].primary.name]:.4f}"
            for t in self.tasks
        )
        log.info(
            "%s epoch %d: %.1f s (%.0f examples/s), val %s",
            self.name, record.epoch, record.seconds, examples_per_second, primaries,
        )  # fmt: skip
        if self._writer is None:
            return
        with self._writer.as_default(step=record.epoch):
            for t in self.tasks:
                tf.summary.scalar(f"train_loss/{t}", record.train_loss[t])
                tf.summary.scalar(f"loss_weight/{t}", record.weights[t])
                for metric, value in record.val[t].items():
                    tf.summary.scalar(f"val_{metric}/{t}", value)
            tf.summary.scalar("time/epoch_seconds", record.seconds)
            tf.summary.scalar("time/examples_per_second", examples_per_second)
            tf.summary.scalar("learning_rate", record.learning_rate)


def _progress_bar(total: int, desc: str, enabled: bool) -> Callable[..., Any] | Any:
    from tqdm.auto import tqdm

    # disable=None: shown on a terminal, silent when stderr goes to a file or a pipe
    return tqdm(total=total, desc=desc, unit="step", disable=None if enabled else True, leave=False)
