"""One trainer for single-task and multitask runs, on one device or under a ``tf.distribute``
strategy.

The training step is compiled once per run (before the clock starts). It computes each task's
loss from its head and hands the losses, or each task's gradient, to the weighting plugin, which
returns the objective or the combined update; see :mod:`mtbench.weighting`. Under a strategy with
several replicas, each replica's loss is its share of the global batch mean, the weighting method
sees the global losses (and, for ``gradient_of="shared_parameters"``, the all-reduced per-task
gradients), so the update equals the single-device one. (``gradient_of="features"`` methods
combine each replica's own slice of the batch.)

Timing rules (the same for every run):
- ``trace_seconds``: tracing and optimising the training function (a call that runs zero steps)
  and tracing the prediction function, before the clock starts.
- ``epoch_seconds[e]``: from the epoch's first touch of training data to the end of its last
  training step (results are read back, so no queued work is left uncounted).
- ``train_seconds``: the sum of ``epoch_seconds``; ``images_per_second``: training images
  processed divided by ``train_seconds``.
- ``eval_seconds``: validation after each epoch, measured apart from training.
- ``seconds_per_epoch``: ``train_seconds / steps * steps_per_epoch``, a rate, so that an epoch cut
  short by a time budget or a target is not averaged in as if it were whole.

Wall-clock seconds depend on what else the machine runs. Each epoch also records the process's
CPU seconds, the part of the machine other processes used meanwhile, its share (see
:func:`mtbench.hardware.machine_share`) and the load average, so that a run whose time was
inflated by other processes can be recognised (:mod:`mtbench.protocol` flags it).

In equal-budget mode (``time_budget_s``) the learning-rate schedule runs on the fraction of the
budget spent (or of ``epochs``, whichever is further along), so it anneals fully by the end of
the budget whatever the step rate.

A NaN or infinite loss or gradient stops the run with :class:`NonFiniteError` (the update is not
applied, the last checkpoint is kept); ``skip_nonfinite_steps`` skips and counts such steps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from mtbench import checkpoint
from mtbench.config import TrainerConfig
from mtbench.data import Split
from mtbench.hardware import gpu_utilisation, machine_share, sample_machine
from mtbench.inputs import Inputs
from mtbench.model import MultiTaskModel
from mtbench.optim import BudgetSchedule, learning_rate, make_optimizer
from mtbench.pipeline import EpochBatches
from mtbench.tasks import TaskKind
from mtbench.weighting import GradientWeighting, LossWeighting, Weighting

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


@dataclass
class EpochRecord:
    epoch: int
    train_loss: dict[str, float]
    weights: dict[str, float]
    val: dict[str, dict[str, float]]
    seconds: float
    steps: int
    train_seconds_so_far: float
    learning_rate: float
    skipped_steps: int = 0
    #: how much of the machine the epoch's training got (see :func:`hardware.machine_share`)
    cpu_seconds: float | None = None
    others_utilisation: float | None = None
    share: float | None = None
    cpu_utilisation: float | None = None
    load_average: float | None = None
    gpu_utilisation: float | None = None


@dataclass
class FitResult:
    """What training produced: per-epoch history, the selected epoch and the timings."""

    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_val: dict[str, dict[str, float]] = field(default_factory=dict)
    best_score: float | None = None  #: the selection score of the best epoch
    trace_seconds: float = 0.0
    eval_seconds: float = 0.0
    images_seen: int = 0
    stopped_by: str = "epochs"
    time_to_target: dict[str, Any] | None = None
    skipped_steps: int = 0
    resumed_from: dict[str, Any] | None = None
    steps_per_epoch: int = 0

    @property
    def epoch_seconds(self) -> list[float]:
        return [record.seconds for record in self.history]

    @property
    def steps(self) -> int:
        return int(sum(record.steps for record in self.history))

    @property
    def seconds_per_epoch(self) -> float | None:
        """Training seconds per full epoch: the step rate times the steps of an epoch."""
        if not self.steps or not self.steps_per_epoch:
            return None
        return self.train_seconds / self.steps * self.steps_per_epoch

    @property
    def train_seconds(self) -> float:
        return float(sum(self.epoch_seconds))

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.train_seconds if self.train_seconds > 0 else 0.0


def selection_score(
    val: Mapping[str, Mapping[str, float]],
    kinds: Mapping[str, TaskKind],
    reference: Mapping[str, Mapping[str, float]] | None,
) -> float:
    """The validation score the best epoch maximises (see :data:`SELECTION_RULE`)."""
    primaries = {t: kinds[t].primary for t in kinds}
    signs = {t: 1.0 if m.higher_is_better else -1.0 for t, m in primaries.items()}
    values = {t: float(val[t][m.name]) for t, m in primaries.items()}
    if any(np.isnan(v) for v in values.values()):
        return -np.inf
    if len({(m.unit, m.higher_is_better) for m in primaries.values()}) == 1:
        return float(np.mean([signs[t] * values[t] for t in kinds]))
    assert reference is not None
    changes = []
    for t, metric in primaries.items():
        base = float(reference[t][metric.name])
        scale = abs(base) if base and np.isfinite(base) else 1.0
        changes.append(signs[t] * (values[t] - base) / scale)
    return float(np.mean(changes))


#: How :func:`selection_score` chooses the best epoch (written into results).
SELECTION_RULE = (
    "best epoch = the highest validation score (the earliest on ties); score = the mean over the "
    "run's tasks of each task's primary metric, negated where lower is better, when all those "
    "metrics share unit and direction (e.g. accuracies); otherwise the mean over tasks of the "
    "signed relative change of the primary metric against the run's first epoch, "
    "s_k * (M_k - M_k,1) / |M_k,1| with s_k = -1 where lower is better. The test split "
    "chooses nothing."
)


class _Step(NamedTuple):
    """What one replica's step computed, before the update is applied."""

    grads: list[tf.Tensor]
    losses: tf.Tensor  # [T] global batch means
    weights: tf.Tensor  # [T]
    finite: tf.Tensor  # scalar bool, the same on every replica
    bad_losses: tf.Tensor  # [T] bool
    bad_task_grads: tf.Tensor  # [T] bool (gradient-level methods)


class _Forward(NamedTuple):
    features: tf.Tensor
    losses: list[tf.Tensor]  # each task's share of the global batch mean, on this replica
    scaled: list[tf.Tensor]  # the same, scaled for float16 loss scaling
    regularization: tf.Tensor  # this replica's share, scaled
    heads_objective: tf.Tensor  # sum of the task losses plus regularization, scaled


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
        with self.strategy.scope():
            self.weighting.setup(self.tasks)
            if (
                isinstance(weighting, GradientWeighting)
                and weighting.gradient_of == "shared_parameters"
            ):
                size = sum(int(np.prod(v.shape)) for v in model.shared_variables)
                weighting.build_gradient_state(size)
        self._writer = tf.summary.create_file_writer(str(logdir)) if logdir else None
        num_tasks = len(self.tasks)
        self._loss_sum = tf.Variable(tf.zeros([num_tasks]), trainable=False)
        self._weight_sum = tf.Variable(tf.zeros([num_tasks]), trainable=False)
        self._steps = tf.Variable(0, dtype=tf.int64, trainable=False)  # steps done this epoch
        self._skipped = tf.Variable(0, dtype=tf.int64, trainable=False)  # this epoch
        self._failed = tf.Variable(False, trainable=False)
        self._bad_losses = tf.Variable(tf.zeros([num_tasks], tf.bool), trainable=False)
        self._bad_grads = tf.Variable(tf.zeros([num_tasks], tf.bool), trainable=False)
        self.optimizer: keras.optimizers.Optimizer | None = None
        self._train_call: Any = None
        self._predict: Any = None
        self._epoch_started = 0.0
        self._epoch_machine: dict[str, float | None] = {}
        self._budget_progress: tf.Variable | None = None
        self.batches: EpochBatches | None = None
        self.samples = int(weighting.samples_per_step)
        if self.samples > 1 and (
            weighting.gradient_of != "shared_parameters" or weighting.skips_gradients
        ):
            raise ValueError(
                f"{type(weighting).__name__}: samples_per_step > 1 needs gradient_of="
                "'shared_parameters' and no skipped gradients"
            )
        self.trace_seconds = 0.0

    # ------------------------------------------------------------------------------ the losses
    @property
    def _replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    def _scale(self, loss: tf.Tensor) -> tf.Tensor:
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            return self.optimizer.scale_loss(loss)
        return loss

    def _loss_scale(self) -> tf.Tensor:
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            return tf.cast(self.optimizer.dynamic_scale, tf.float32)
        return tf.constant(1.0)

    def _shares(self, labels: dict[str, Any], outputs: dict[str, tf.Tensor]) -> list[tf.Tensor]:
        """This replica's share of each task's mean loss over the global batch's labelled
        examples (the shares of all replicas sum to it). A task without a labelled example in
        the batch gets exactly zero loss and gradient."""
        context = tf.distribute.get_replica_context()
        per_example, counts = [], []
        for t in self.tasks:
            y, present = labels[t]
            labelled = tf.reduce_any(tf.reshape(present, [tf.shape(present)[0], -1]), axis=1)
            loss = self.kinds[t].loss(y, outputs[t], present)
            per_example.append(tf.where(labelled, loss, tf.zeros_like(loss)))
            counts.append(tf.reduce_sum(tf.cast(labelled, tf.float32)))
        totals = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stack(counts))
        return [
            tf.reduce_sum(loss) / tf.maximum(totals[i], 1.0) for i, loss in enumerate(per_example)
        ]

    def _regularization_share(self) -> tf.Tensor:
        losses = self.model.losses
        if not losses:
            return tf.constant(0.0)
        return tf.add_n([tf.cast(x, tf.float32) for x in losses]) / self._replicas

    def _global(self, shares: Sequence[tf.Tensor] | tf.Tensor) -> tf.Tensor:
        context = tf.distribute.get_replica_context()
        return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stack(shares))

    def _all_finite(self, tensors: Sequence[tf.Tensor | None]) -> tf.Tensor:
        checks = [tf.reduce_all(tf.math.is_finite(t)) for t in tensors if t is not None]
        return tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)

    def _agree(self, flag: tf.Tensor) -> tf.Tensor:
        """``flag`` true on every replica."""
        context = tf.distribute.get_replica_context()
        failures = context.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(flag, tf.float32))
        return failures < 0.5

    # ------------------------------------------------------------------- the step, per replica
    def _loss_level(self, images: tf.Tensor, labels: dict[str, tf.Tensor]) -> _Step:
        weighting = self.weighting
        assert isinstance(weighting, LossWeighting)
        variables = self.model.trainable_variables + weighting.trainable_variables
        with tf.GradientTape() as tape:
            shares = self._shares(labels, self.model(images, training=True))
            losses = tf.stop_gradient(self._global(shares))
            # The method's objective at the global losses; its slope turns each replica's
            # share into exactly its part of the gradient, whatever the method's formula.
            with tf.GradientTape() as slope_tape:
                slope_tape.watch(losses)
                objective, weights = weighting.combine(losses)
            slopes = tf.stop_gradient(slope_tape.gradient(objective, losses))
            local = tf.reduce_sum(slopes * tf.stack(shares)) + objective / self._replicas
            local = self._scale(local + self._regularization_share())
        grads = tape.gradient(local, variables)
        return self._step(grads, losses, weights)

    def _step(
        self,
        grads: list[tf.Tensor],
        losses: tf.Tensor,
        weights: tf.Tensor,
        bad_task_grads: tf.Tensor | None = None,
    ) -> _Step:
        """The step's result, with whether every replica found its losses and update finite."""
        bad_losses = tf.logical_not(tf.math.is_finite(losses))
        finite = tf.logical_not(tf.reduce_any(bad_losses))
        if self.precision != "mixed_float16":  # float16 overflow is the loss scaler's business
            finite = tf.logical_and(finite, self._all_finite(grads))
        if bad_task_grads is None:
            bad_task_grads = tf.zeros_like(bad_losses)
        return _Step(
            grads, losses, tf.cast(weights, tf.float32), self._agree(finite), bad_losses,
            bad_task_grads,
        )  # fmt: skip

    def _forward_on_tape(
        self, tape: tf.GradientTape, images: tf.Tensor, labels: dict[str, tf.Tensor]
    ) -> _Forward:
        """The forward pass, recorded on ``tape`` (everything differentiated is computed here)."""
        with tape:
            features = self.model.features(images, training=True)
            shares = self._shares(labels, self.model.predict_heads(features, training=True))
            scaled = [self._scale(share) for share in shares]
            regularization = self._scale(self._regularization_share())
            heads_objective = tf.add_n(scaled) + regularization
        return _Forward(features, shares, scaled, regularization, heads_objective)

    def _fixed_weights_now(self, images: tf.Tensor, labels: dict[str, tf.Tensor]) -> _Step:
        weighting = self.weighting
        assert isinstance(weighting, GradientWeighting)
        return self._fixed_weight_gradients(images, labels, weighting.current_weights())

    def _combined_gradients(self, images: tf.Tensor, labels: dict[str, tf.Tensor]) -> _Step:
        """Per-task gradients combined by the method for the backbone; own-loss ones for heads."""
        weighting = self.weighting
        assert isinstance(weighting, GradientWeighting)
        shared, heads = self.model.shared_variables, self.model.task_variables
        scale = self._loss_scale()
        tape = tf.GradientTape(persistent=True)
        forward = self._forward_on_tape(tape, images, labels)
        losses = self._global(forward.losses)
        head_grads = tape.gradient(forward.heads_objective, heads)
        features = forward.features
        if weighting.gradient_of == "features":
            per_task = (
                tf.stack(
                    [
                        tf.reshape(tf.cast(tape.gradient(s, features), tf.float32), [-1])
                        for s in forward.scaled
                    ]
                )
                / scale
            )
            update, weights = weighting.aggregate(per_task, losses)
            upstream = tf.cast(tf.reshape(update * scale, tf.shape(features)), features.dtype)
            shared_grads = _zeros_for_none(
                tape.gradient(features, shared, output_gradients=upstream), shared
            )
        else:
            local = tf.stack(
                [_flatten(tape.gradient(s, shared), like=shared) for s in forward.scaled]
            )
            context = tf.distribute.get_replica_context()
            per_task = context.all_reduce(tf.distribute.ReduceOp.SUM, local / scale)
            update, weights = weighting.aggregate(per_task, losses)
            # every replica holds the same update; the optimizer sums the replicas' copies
            shared_grads = _unflatten(update * scale / self._replicas, shared)
        if self.model.losses:
            extra = tape.gradient(forward.regularization, shared)
            shared_grads = [
                g if e is None else g + e for g, e in zip(shared_grads, extra, strict=True)
            ]
        del tape
        bad_task_grads = tf.logical_not(tf.reduce_all(tf.math.is_finite(per_task), axis=1))
        return self._step(shared_grads + head_grads, losses, weights, bad_task_grads)

    def _sampled_gradients(self, images: tuple, labels: tuple) -> _Step:
        """Per-task gradients of the shared parameters on each of ``samples`` batches, combined by
        the method's ``aggregate_samples``; heads get the mean of their own-loss gradients."""
        weighting = self.weighting
        assert isinstance(weighting, GradientWeighting)
        shared, heads = self.model.shared_variables, self.model.task_variables
        scale = self._loss_scale()
        context = tf.distribute.get_replica_context()
        all_grads, all_losses, head_sum = [], [], None
        for sample_images, sample_labels in zip(images, labels, strict=True):
            tape = tf.GradientTape(persistent=True)
            forward = self._forward_on_tape(tape, sample_images, sample_labels)
            all_losses.append(self._global(forward.losses))
            head_grads = _zeros_for_none(tape.gradient(forward.heads_objective, heads), heads)
            head_sum = (
                head_grads
                if head_sum is None
                else [a + b for a, b in zip(head_sum, head_grads, strict=True)]
            )
            local = tf.stack(
                [_flatten(tape.gradient(s, shared), like=shared) for s in forward.scaled]
            )
            all_grads.append(context.all_reduce(tf.distribute.ReduceOp.SUM, local / scale))
            del tape
        per_task = tf.stack(all_grads)  # [S, T, P]
        losses_per_sample = tf.stack(all_losses)  # [S, T]
        update, weights = weighting.aggregate_samples(per_task, losses_per_sample)
        shared_grads = _unflatten(update * scale / self._replicas, shared)
        head_grads = [g / float(self.samples) for g in head_sum]
        losses = tf.reduce_mean(losses_per_sample, axis=0)
        bad_task_grads = tf.logical_not(tf.reduce_all(tf.math.is_finite(per_task), axis=[0, 2]))
        return self._step(shared_grads + head_grads, losses, weights, bad_task_grads)

    def _fixed_weight_gradients(
        self, images: tf.Tensor, labels: dict[str, tf.Tensor], weights: tf.Tensor
    ) -> _Step:
        """The update of :meth:`_combined_gradients` for fixed weights: ``sum_t w_t g_t`` for the
        backbone is the gradient of ``sum_t w_t L_t``, one backward pass."""
        shared, heads = self.model.shared_variables, self.model.task_variables
        weights = tf.stop_gradient(tf.cast(weights, tf.float32))
        tape = tf.GradientTape(persistent=True)
        forward = self._forward_on_tape(tape, images, labels)
        with tape:
            backbone_objective = tf.reduce_sum(weights * tf.stack(forward.scaled))
            backbone_objective += forward.regularization
        shared_grads = _zeros_for_none(tape.gradient(backbone_objective, shared), shared)
        head_grads = tape.gradient(forward.heads_objective, heads)
        del tape
        losses = self._global(forward.losses)
        return self._step(shared_grads + head_grads, losses, weights)

    def _apply(self, grads: list[tf.Tensor], images: tf.Tensor, labels: dict, losses: tf.Tensor):
        """Apply the update (per replica); give methods that ask the losses after it."""
        assert self.optimizer is not None
        self.optimizer.apply(grads, self._updated_variables())
        weighting = self.weighting
        if isinstance(weighting, LossWeighting) and weighting.needs_losses_after_update:
            after = self._global(self._shares(labels, self.model(images, training=False)))
            weighting.after_update(losses, after)

    def _updated_variables(self) -> list[keras.Variable]:
        if self.weighting.level == "loss":
            return self.model.trainable_variables + self.weighting.trainable_variables
        return self.model.shared_variables + self.model.task_variables

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
            self.optimizer.build(self._updated_variables())
        strategy, skip = self.strategy, config.skip_nonfinite_steps
        weighting = self.weighting
        if weighting.level == "loss":
            body = self._loss_level
        else:
            body = self._combined_gradients

        def step_with(compute: Callable[..., _Step], images: tf.Tensor, labels: dict) -> None:
            step = strategy.run(compute, args=(images, labels))
            # every replica holds the same global values; read the first replica's
            first = _first_replica(strategy, step)

            def apply() -> None:
                strategy.run(self._apply, args=(step.grads, images, labels, step.losses))

            tf.cond(first.finite, apply, lambda: None)
            self._loss_sum.assign_add(tf.where(first.finite, first.losses, 0.0))
            self._weight_sum.assign_add(tf.where(first.finite, first.weights, 0.0))
            self._steps.assign_add(1)
            if not first.finite:
                self._skipped.assign_add(1)
                if not skip:
                    self._failed.assign(True)
                    self._bad_losses.assign(first.bad_losses)
                    self._bad_grads.assign(first.bad_task_grads)

        def one_step(images: tf.Tensor, labels: dict[str, tf.Tensor]) -> None:
            if isinstance(weighting, GradientWeighting) and weighting.skips_gradients:
                # decided across replicas, so that each branch may all-reduce inside
                needed = _first_replica(strategy, strategy.run(weighting.gradients_needed))
                tf.cond(
                    needed,
                    lambda: step_with(self._combined_gradients, images, labels),
                    lambda: step_with(self._fixed_weights_now, images, labels),
                )
            else:
                step_with(body, images, labels)

        samples = self.samples

        def train_call(iterator: Any, steps: tf.Tensor) -> None:
            for _ in tf.range(steps):
                if self._failed:
                    break
                if samples == 1:
                    images, labels = next(iterator)
                    one_step(images, labels)
                else:  # several independent batches for one update
                    drawn = [next(iterator) for _ in range(samples)]
                    step_with(
                        self._sampled_gradients,
                        tuple(d[0] for d in drawn),
                        tuple(d[1] for d in drawn),
                    )

        self._train_call = tf.function(train_call, reduce_retracing=True)
        self._predict = self._make_predict(example)

    def _make_predict(self, example: Split) -> Any:
        """Outputs for a batch: the mean over the dataset's evaluation views (one by default;
        e.g. an image and its mirror with flip averaging)."""
        spec = tf.nest.map_structure(
            lambda a: tf.TensorSpec([None, *np.shape(a)[1:]], tf.as_dtype(np.asarray(a).dtype)),
            example.x,
        )
        inputs = self.inputs

        def predict(x: Any) -> dict[str, tf.Tensor]:
            views = inputs.views(x)
            outputs = self.model(views[0], training=False)
            for view in views[1:]:
                more = self.model(view, training=False)
                outputs = {t: outputs[t] + more[t] for t in outputs}
            if len(views) == 1:
                return outputs
            return {t: v / len(views) for t, v in outputs.items()}

        return tf.function(predict, input_signature=[spec])

    # ------------------------------------------------------------------------------------- fit
    def fit(self, train: Split, val: Split, resume: bool = False) -> FitResult:
        """Train, validating after each epoch; the model ends with its best epoch's weights.

        The best epoch is chosen on validation by :func:`selection_score` (see
        :data:`SELECTION_RULE`). With ``resume``, training continues from
        ``checkpoint_dir/last.npz``.

        Raises:
            NonFiniteError: a loss or gradient was not finite (unless skipping is configured).
            Interrupted: Ctrl-C or SIGTERM; a checkpoint of the moment was saved first.
        """
        config = self.config
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
            progress = self._restore(result)
            epoch, first_batch = progress["epoch"], progress["batch"]
            partial_seconds, best_score = progress["partial_seconds"], progress["best_score"]
            best_weights = self._best_weights_on_disk()
            result.resumed_from = {"epoch": epoch, "batch": first_batch}
            log.info("%s: resuming at epoch %d, batch %d", self.name, epoch, first_batch)
        result.trace_seconds += self.trace_seconds

        while epoch <= config.epochs and result.stopped_by == "epochs":
            if first_batch == 0:
                self._reset_epoch()
            try:
                seconds, stopped = self._train_epoch(batches, epoch, first_batch, result)
            except KeyboardInterrupt as exc:
                partial_seconds += time.perf_counter() - self._epoch_started
                self._save_last(result, epoch, None, best_score, partial_seconds)
                raise Interrupted(
                    f"{self.name} interrupted at step {int(self._steps.numpy())} of epoch {epoch}"
                ) from exc
            seconds += partial_seconds
            first_batch, partial_seconds = 0, 0.0
            steps = int(self._steps.numpy())
            result.images_seen += min(steps * self.samples * config.batch_size, len(train))
            if stopped:
                result.stopped_by = stopped
            tick = time.perf_counter()
            val_metrics = self.evaluate(val)[0]
            result.eval_seconds += time.perf_counter() - tick
            record = self._record(epoch, val_metrics, seconds, result)
            result.history.append(record)
            result.skipped_steps += record.skipped_steps
            self.weighting.on_epoch_end(epoch, self._loss_sum.numpy() / max(steps, 1))
            self._log_epoch(record, steps * config.batch_size / max(seconds, 1e-9))
            reference = result.history[0].val if result.history else val_metrics
            score = selection_score(val_metrics, self.kinds, reference)
            if score > best_score:
                best_score, best_weights = score, [v.numpy() for v in self.model.variables]
                result.best_epoch, result.best_val = epoch, val_metrics
                result.best_score = score
                self._save_best(epoch, val_metrics)
            self._check_target(record, result)
            if config.checkpoint_every and (
                epoch % config.checkpoint_every == 0 or epoch == config.epochs
            ):
                self._save_last(result, epoch + 1, 0, best_score)
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
        batches = EpochBatches(train, self.kinds, config.batch_size, self.seed, self.inputs)
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

    def step_iterator(self, batches: EpochBatches, epoch: int = 1) -> Any:
        """An endless iterator over ``batches`` (epoch ``epoch``'s order, repeated) for
        :meth:`run_steps`, distributed like training batches."""
        return iter(self._distribute(batches.dataset(epoch).repeat()))

    def train_epoch(self, batches: EpochBatches, epoch: int) -> float:
        """Train one whole epoch of ``batches`` (after :meth:`prepare`); return its seconds."""
        self._reset_epoch()
        return self._train_epoch(batches, epoch, 0, FitResult())[0]

    def run_steps(self, iterator: Any, count: int) -> None:
        """Run ``count`` training steps from ``iterator`` (after :meth:`prepare`), waiting for
        them to finish."""
        self._train_call(iterator, tf.constant(count, tf.int64))
        self._steps.numpy()

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

    def _reset_epoch(self) -> None:
        for variable in (self._loss_sum, self._weight_sum):
            variable.assign(tf.zeros_like(variable))
        self._steps.assign(0)
        self._skipped.assign(0)

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
                done = int(self._steps.numpy())  # reads back: the call's work has finished
                bar.update(done - bar.n)
                if self._failed.numpy():
                    raise NonFiniteError(self._nonfinite_message(epoch, done))
                if done % 25 < count or done == total:
                    bar.set_postfix(self._mean_losses(), refresh=False)
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
        steps = max(int(self._steps.numpy()), 1)
        skipped = int(self._skipped.numpy())
        applied = max(steps - skipped, 1)
        weights = self._weight_sum.numpy() / applied
        machine = self._epoch_machine
        assert self.optimizer is not None
        return EpochRecord(
            epoch=epoch,
            train_loss={
                t: float(v) / applied
                for t, v in zip(self.tasks, self._loss_sum.numpy(), strict=True)
            },
            weights={t: float(w) for t, w in zip(self.tasks, weights, strict=True)},
            val=val,
            seconds=seconds,
            steps=int(self._steps.numpy()),
            train_seconds_so_far=result.train_seconds + seconds,
            learning_rate=float(keras.ops.convert_to_numpy(self.optimizer.learning_rate)),
            skipped_steps=skipped,
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
        bad_losses = [t for t, bad in zip(self.tasks, self._bad_losses.numpy(), strict=True) if bad]
        bad_grads = [t for t, bad in zip(self.tasks, self._bad_grads.numpy(), strict=True) if bad]
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

    # ----------------------------------------------------------------------------- checkpoints
    def _groups(self) -> dict[str, list[Any]]:
        assert self.optimizer is not None
        return {
            "model": list(self.model.variables),
            "optimizer": list(self.optimizer.variables),
            "weighting": list(self.weighting.variables),
            "trainer": [self._loss_sum, self._weight_sum, self._steps, self._skipped],
        }

    def _save_last(
        self,
        result: FitResult,
        epoch: int,
        batch: int | None,
        best: float,
        partial_seconds: float = 0.0,
    ) -> None:
        """Save where training stands: at ``epoch``, ``batch`` (None: the steps done so far,
        with ``partial_seconds`` of training time spent in that epoch)."""
        if self.checkpoint_dir is None:
            return
        if batch is None:
            batch = int(self._steps.numpy())
        progress = {
            "epoch": epoch,
            "batch": batch,
            "partial_seconds": partial_seconds,
            "best_score": best if np.isfinite(best) else None,
            "result": _result_to_dict(result),
        }
        checkpoint.save(self.checkpoint_dir / "last.npz", self._groups(), progress)

    def _save_best(self, epoch: int, val: dict[str, dict[str, float]]) -> None:
        if self.checkpoint_dir is None:
            return
        checkpoint.save(
            self.checkpoint_dir / "best.npz",
            {"model": list(self.model.variables)},
            {"epoch": epoch, "val": val},
        )

    def _best_weights_on_disk(self) -> list[np.ndarray] | None:
        path = (self.checkpoint_dir or Path()) / "best.npz"
        if self.checkpoint_dir is None or not path.is_file():
            return None
        groups, _ = checkpoint.load(path)
        return groups["model"]

    def _restore(self, result: FitResult) -> dict[str, Any]:
        assert self.checkpoint_dir is not None
        path = self.checkpoint_dir / "last.npz"
        groups, progress = checkpoint.load(path)
        for name, variables in self._groups().items():
            checkpoint.restore(variables, groups.get(name, []), name, path)
        _result_from_dict(progress["result"], result)
        if progress["best_score"] is None:
            progress["best_score"] = -np.inf
        return progress

    # ----------------------------------------------------------------------------- evaluation
    def predict(self, split: Split) -> dict[str, np.ndarray]:
        """float32 head outputs of every task for every example of ``split``."""
        if self._predict is None:
            self._predict = self._make_predict(split)
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
    def _mean_losses(self) -> dict[str, float]:
        steps = max(int(self._steps.numpy()) - int(self._skipped.numpy()), 1)
        sums = self._loss_sum.numpy()
        return {t: float(s) / steps for t, s in zip(self.tasks, sums, strict=True)}

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


def _result_to_dict(result: FitResult) -> dict[str, Any]:
    data = asdict(result)
    data["history"] = [asdict(r) for r in result.history]
    return data


def _result_from_dict(data: Mapping[str, Any], result: FitResult) -> None:
    for key, value in data.items():
        if key == "history":
            result.history = [EpochRecord(**r) for r in value]
        else:
            setattr(result, key, value)


def _first_replica(strategy: tf.distribute.Strategy, values: Any) -> Any:
    return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], values)


def _flatten(tensors: Sequence[tf.Tensor | None], like: Sequence[keras.Variable]) -> tf.Tensor:
    """One float32 vector of gradients; a variable that a loss does not reach contributes zeros."""
    return tf.concat(
        [
            tf.zeros([int(np.prod(v.shape))])
            if t is None
            else tf.reshape(tf.cast(t, tf.float32), [-1])
            for t, v in zip(tensors, like, strict=True)
        ],
        axis=0,
    )


def _zeros_for_none(grads: Sequence[tf.Tensor | None], like: Sequence[keras.Variable]) -> list:
    return [
        tf.zeros(v.shape, tf.float32) if g is None else g for g, v in zip(grads, like, strict=True)
    ]


def _unflatten(flat: tf.Tensor, like: Sequence[keras.Variable]) -> list[tf.Tensor]:
    sizes = [int(np.prod(v.shape)) for v in like]
    parts = tf.split(flat, sizes)
    return [tf.cast(tf.reshape(p, v.shape), v.dtype) for p, v in zip(parts, like, strict=True)]


def _progress_bar(total: int, desc: str, enabled: bool) -> Callable[..., Any] | Any:
    from tqdm.auto import tqdm

    # disable=None: shown on a terminal, silent when stderr goes to a file or a pipe
    return tqdm(total=total, desc=desc, unit="step", disable=None if enabled else True, leave=False)
