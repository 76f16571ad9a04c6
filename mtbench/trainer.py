"""One trainer for single-task and multitask runs.

The training step is a ``tf.function`` traced once per run (before the clock starts). It computes
each task's loss from its head and hands the losses, or each task's gradient, to the weighting
plugin, which returns the objective or the combined update; see :mod:`mtbench.weighting`.

Timing rules (the same for every run):
- ``trace_seconds``: tracing the training step, measured before the training clock starts.
- ``epoch_seconds[e]``: from the epoch's first touch of training data to the end of its last
  training step (the step's results are read back, so no queued work is left uncounted).
- ``train_seconds``: the sum of ``epoch_seconds``; ``images_per_second``: training images
  processed divided by ``train_seconds``.
- ``eval_seconds``: validation after each epoch, measured apart from training.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from mtbench.config import TrainerConfig
from mtbench.data import Split
from mtbench.model import MultiTaskModel
from mtbench.weighting import GradientWeighting, LossWeighting, Weighting

log = logging.getLogger(__name__)


class _Forward(NamedTuple):
    features: tf.Tensor
    losses: tf.Tensor  # [T] float32, unscaled
    scaled: list[tf.Tensor]  # each task's loss, scaled for float16 loss scaling
    regularization: tf.Tensor
    heads_objective: tf.Tensor  # sum of the task losses plus regularization


@dataclass
class EpochRecord:
    epoch: int
    train_loss: dict[str, float]
    weights: dict[str, float]
    val: dict[str, dict[str, float]]
    seconds: float


@dataclass
class FitResult:
    """What training produced: per-epoch history, the selected epoch and the timings."""

    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_val: dict[str, dict[str, float]] = field(default_factory=dict)
    trace_seconds: float = 0.0
    eval_seconds: float = 0.0
    images_seen: int = 0

    @property
    def epoch_seconds(self) -> list[float]:
        return [record.seconds for record in self.history]

    @property
    def train_seconds(self) -> float:
        return float(sum(self.epoch_seconds))

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.train_seconds if self.train_seconds > 0 else 0.0


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` largest logits."""
    if k >= logits.shape[1]:
        return 1.0
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": float(np.mean(np.argmax(logits, axis=1) == labels)),
        "top5_accuracy": topk_accuracy(logits, labels, 5),
    }


def make_optimizer(config: TrainerConfig, precision: str) -> keras.optimizers.Optimizer:
    name = getattr(config.optimizer, "value", config.optimizer)
    if name == "adam":
        optimizer: keras.optimizers.Optimizer = keras.optimizers.Adam(config.learning_rate)
    elif name == "sgd":
        optimizer = keras.optimizers.SGD(config.learning_rate, momentum=0.9)
    else:
        raise ValueError(f"trainer.optimizer={name!r}; choose adam or sgd")
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


class Trainer:
    """Trains a :class:`MultiTaskModel` on some tasks with a weighting method.

    Args:
        config: The ``trainer`` config.
        model: The model; its heads must predict every task in ``tasks``.
        weighting: The weighting plugin, not yet set up.
        tasks: The tasks this run trains, in a fixed order.
        precision: The resolved Keras dtype policy the model was built under.
        seed: Seeds the data order (epoch ``e`` uses permutation ``rng([seed, e])``).
        logdir: Where TensorBoard scalars go (``None``: nowhere).
        name: The run's name, for progress bars and logs.
    """

    def __init__(
        self,
        config: TrainerConfig,
        model: MultiTaskModel,
        weighting: Weighting,
        tasks: Sequence[str],
        *,
        precision: str,
        seed: int,
        logdir: Path | None = None,
        name: str = "run",
    ) -> None:
        self.config = config
        self.model = model
        self.weighting = weighting
        self.tasks = tuple(tasks)
        self.precision = precision
        self.seed = seed
        self.name = name
        self.weighting.setup(self.tasks)
        self.optimizer = make_optimizer(config, precision)
        self._writer = tf.summary.create_file_writer(str(logdir)) if logdir else None
        num_tasks = len(self.tasks)
        self._loss_sum = tf.Variable(tf.zeros([num_tasks]), trainable=False)
        self._weight_sum = tf.Variable(tf.zeros([num_tasks]), trainable=False)
        self._steps = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._train_step: Any = None
        self._predict_step: Any = None

    # ----------------------------------------------------------------------------------- steps
    def _task_losses(self, labels: dict[str, tf.Tensor], logits: dict[str, tf.Tensor]) -> tf.Tensor:
        return tf.stack(
            [
                tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels[t], logits[t]))
                for t in self.tasks
            ]
        )

    def _scale(self, loss: tf.Tensor) -> tf.Tensor:
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            return self.optimizer.scale_loss(loss)
        return loss

    def _loss_scale(self) -> tf.Tensor:
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            return tf.cast(self.optimizer.dynamic_scale, tf.float32)
        return tf.constant(1.0)

    def _regularization(self) -> tf.Tensor:
        losses = self.model.losses
        return tf.add_n([tf.cast(x, tf.float32) for x in losses]) if losses else tf.constant(0.0)

    def _loss_level_step(
        self, images: tf.Tensor, labels: dict[str, tf.Tensor]
    ) -> tuple[tf.Tensor, tf.Tensor]:
        weighting = self.weighting
        assert isinstance(weighting, LossWeighting)
        variables = self.model.trainable_variables + weighting.trainable_variables
        with tf.GradientTape() as tape:
            losses = self._task_losses(labels, self.model(images, training=True))
            objective, weights = weighting.combine(losses)
            objective = self._scale(objective + self._regularization())
        grads = tape.gradient(objective, variables)
        self.optimizer.apply(grads, variables)
        if weighting.needs_losses_after_update:
            after = self._task_losses(labels, self.model(images, training=False))
            weighting.after_update(losses, after)
        return losses, weights

    def _gradient_level_step(
        self, images: tf.Tensor, labels: dict[str, tf.Tensor]
    ) -> tuple[tf.Tensor, tf.Tensor]:
        weighting = self.weighting
        assert isinstance(weighting, GradientWeighting)
        if weighting.skips_gradients:
            grads, losses, weights = tf.cond(
                weighting.gradients_needed(),
                lambda: self._combined_gradients(images, labels),
                lambda: self._fixed_weight_gradients(images, labels, weighting.current_weights()),
            )
        else:
            grads, losses, weights = self._combined_gradients(images, labels)
        variables = self.model.shared_variables + self.model.task_variables
        self.optimizer.apply(grads, variables)
        return losses, weights

    def _forward_on_tape(
        self, tape: tf.GradientTape, images: tf.Tensor, labels: dict[str, tf.Tensor]
    ) -> _Forward:
        """The forward pass, recorded on ``tape`` (everything differentiated is computed here)."""
        with tape:
            features = self.model.features(images, training=True)
            losses = self._task_losses(labels, self.model.predict_heads(features, training=True))
            scaled = [self._scale(losses[i]) for i in range(len(self.tasks))]
            regularization = self._scale(self._regularization())
            heads_objective = tf.add_n(scaled) + regularization
        return _Forward(features, losses, scaled, regularization, heads_objective)

    def _combined_gradients(
        self, images: tf.Tensor, labels: dict[str, tf.Tensor]
    ) -> tuple[list[tf.Tensor], tf.Tensor, tf.Tensor]:
        """Per-task gradients, combined by the method for the backbone; own-loss ones for heads."""
        weighting = self.weighting
        assert isinstance(weighting, GradientWeighting)
        shared, heads = self.model.shared_variables, self.model.task_variables
        scale = self._loss_scale()
        tape = tf.GradientTape(persistent=True)
        forward = self._forward_on_tape(tape, images, labels)
        features, losses = forward.features, forward.losses
        head_grads = tape.gradient(forward.heads_objective, heads)
        if weighting.gradient_of == "features":
            per_task = [
                tf.reshape(tf.cast(tape.gradient(s, features), tf.float32), [-1])
                for s in forward.scaled
            ]
            update, weights = weighting.aggregate(tf.stack(per_task) / scale, losses)
            upstream = tf.cast(tf.reshape(update * scale, tf.shape(features)), features.dtype)
            shared_grads = _zeros_for_none(
                tape.gradient(features, shared, output_gradients=upstream), shared
            )
        else:
            per_task = [_flatten(tape.gradient(s, shared), like=shared) for s in forward.scaled]
            update, weights = weighting.aggregate(tf.stack(per_task) / scale, losses)
            shared_grads = _unflatten(update * scale, shared)
        if self.model.losses:
            extra = tape.gradient(forward.regularization, shared)
            shared_grads = [
                g if e is None else g + e for g, e in zip(shared_grads, extra, strict=True)
            ]
        del tape
        return shared_grads + head_grads, losses, tf.cast(weights, tf.float32)

    def _fixed_weight_gradients(
        self, images: tf.Tensor, labels: dict[str, tf.Tensor], weights: tf.Tensor
    ) -> tuple[list[tf.Tensor], tf.Tensor, tf.Tensor]:
        """The same update as :meth:`_combined_gradients` when the method's weights are fixed:
        ``sum_t w_t g_t`` for the backbone is the gradient of ``sum_t w_t L_t``, one backward pass.
        """
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
        return shared_grads + head_grads, forward.losses, weights

    def _build_steps(self, example: Split) -> None:
        image_spec = tf.TensorSpec([None, *example.x.shape[1:]], tf.as_dtype(example.x.dtype))
        label_spec = {t: tf.TensorSpec([None], tf.int64) for t in self.tasks}
        body = (
            self._gradient_level_step
            if self.weighting.level == "gradient"
            else self._loss_level_step
        )

        def train_step(images: tf.Tensor, labels: dict[str, tf.Tensor]) -> None:
            losses, weights = body(images, labels)
            self._loss_sum.assign_add(losses)
            self._weight_sum.assign_add(tf.cast(weights, tf.float32))
            self._steps.assign_add(1)

        def predict_step(images: tf.Tensor) -> dict[str, tf.Tensor]:
            return self.model(images, training=False)

        self._train_step = tf.function(train_step, input_signature=[image_spec, label_spec])
        self._predict_step = tf.function(predict_step, input_signature=[image_spec])

    # ------------------------------------------------------------------------------------ data
    def _epoch_batches(self, split_x: tf.Tensor, split_y: dict[str, tf.Tensor], n: int, epoch: int):
        order = np.random.default_rng([self.seed, epoch]).permutation(n)
        dataset = tf.data.Dataset.from_tensor_slices(order).batch(self.config.batch_size)
        dataset = dataset.map(
            lambda idx: (
                tf.gather(split_x, idx),
                {t: tf.gather(split_y[t], idx) for t in self.tasks},
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        return dataset.prefetch(tf.data.AUTOTUNE)

    # ------------------------------------------------------------------------------------- fit
    def fit(self, train: Split, val: Split) -> FitResult:
        """Train for ``config.epochs`` epochs, validating after each; keep the best epoch's weights.

        The best epoch is the one with the highest mean validation accuracy over this run's tasks
        (the earliest on ties); the model holds its weights when ``fit`` returns.
        """
        if self.config.batch_size > len(train):
            raise ValueError(
                f"trainer.batch_size={self.config.batch_size} is larger than the training split "
                f"({len(train)} images); lower trainer.batch_size or raise dataset.train_limit."
            )
        result = FitResult()
        self._build_steps(train)
        self.optimizer.build(
            self.model.trainable_variables
            + (self.weighting.trainable_variables if self.weighting.level == "loss" else [])
        )
        start = time.perf_counter()
        self._train_step.get_concrete_function()
        self._predict_step.get_concrete_function()
        result.trace_seconds = time.perf_counter() - start

        x = tf.constant(train.x)
        y = {t: tf.constant(train.y[t].astype(np.int64)) for t in self.tasks}
        steps_per_epoch = -(-len(train) // self.config.batch_size)
        best_score, best_weights = -np.inf, None
        for epoch in range(1, self.config.epochs + 1):
            self._loss_sum.assign(tf.zeros_like(self._loss_sum))
            self._weight_sum.assign(tf.zeros_like(self._weight_sum))
            self._steps.assign(0)
            bar = _progress_bar(
                steps_per_epoch,
                f"{self.name} epoch {epoch}/{self.config.epochs}",
                self.config.progress,
            )
            tick = time.perf_counter()
            for step, (images, labels) in enumerate(
                self._epoch_batches(x, y, len(train), epoch), start=1
            ):
                self._train_step(images, labels)
                bar.update(1)
                if step % 25 == 0 or step == steps_per_epoch:
                    bar.set_postfix(self._mean_losses(), refresh=False)
            mean_losses = self._mean_losses()  # reads back: all queued work has finished
            seconds = time.perf_counter() - tick
            bar.close()
            result.images_seen += len(train)

            tick = time.perf_counter()
            val_metrics = self.evaluate(val)[0]
            result.eval_seconds += time.perf_counter() - tick
            steps = max(int(self._steps.numpy()), 1)
            weights = self._weight_sum.numpy() / steps
            record = EpochRecord(
                epoch=epoch,
                train_loss=mean_losses,
                weights={t: float(w) for t, w in zip(self.tasks, weights, strict=True)},
                val=val_metrics,
                seconds=seconds,
            )
            result.history.append(record)
            self.weighting.on_epoch_end(epoch, self._loss_sum.numpy() / steps)
            self._log_epoch(record, len(train) / seconds)
            score = float(np.mean([val_metrics[t]["accuracy"] for t in self.tasks]))
            if score > best_score:
                best_score, best_weights = score, self.model.get_weights()
                result.best_epoch, result.best_val = epoch, val_metrics
        if best_weights is not None:
            self.model.set_weights(best_weights)
        if self._writer is not None:
            self._writer.flush()
        return result

    def predict(self, split: Split) -> dict[str, np.ndarray]:
        """float32 logits of every task for every image of ``split``."""
        if self._predict_step is None:
            self._build_steps(split)
        outputs: dict[str, list[np.ndarray]] = {t: [] for t in self.tasks}
        size = self.config.eval_batch_size
        for start in range(0, len(split), size):
            logits = self._predict_step(tf.constant(split.x[start : start + size]))
            for t in self.tasks:
                outputs[t].append(logits[t].numpy())
        return {t: np.concatenate(chunks) for t, chunks in outputs.items()}

    def evaluate(self, split: Split) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
        """Top-1 and top-5 accuracy per task, and the predicted class of each image."""
        logits = self.predict(split)
        metrics = {t: classification_metrics(logits[t], split.y[t]) for t in self.tasks}
        predictions = {t: np.argmax(logits[t], axis=1) for t in self.tasks}
        return metrics, predictions

    # ---------------------------------------------------------------------------------- report
    def _mean_losses(self) -> dict[str, float]:
        steps = max(int(self._steps.numpy()), 1)
        sums = self._loss_sum.numpy()
        return {t: float(s) / steps for t, s in zip(self.tasks, sums, strict=True)}

    def _log_epoch(self, record: EpochRecord, images_per_second: float) -> None:
        accuracies = ", ".join(f"{t} {record.val[t]['accuracy']:.4f}" for t in self.tasks)
        log.info(
            "%s epoch %d: %.1f s (%.0f images/s), val accuracy %s",
            self.name,
            record.epoch,
            record.seconds,
            images_per_second,
            accuracies,
        )
        if self._writer is None:
            return
        with self._writer.as_default(step=record.epoch):
            for t in self.tasks:
                tf.summary.scalar(f"train_loss/{t}", record.train_loss[t])
                tf.summary.scalar(f"loss_weight/{t}", record.weights[t])
                tf.summary.scalar(f"val_accuracy/{t}", record.val[t]["accuracy"])
                tf.summary.scalar(f"val_top5_accuracy/{t}", record.val[t]["top5_accuracy"])
            tf.summary.scalar("time/epoch_seconds", record.seconds)
            tf.summary.scalar("time/images_per_second", images_per_second)


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


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    # disable=None: shown on a terminal, silent when stderr goes to a file or a pipe
    return tqdm(total=total, desc=desc, unit="step", disable=None if enabled else True, leave=False)
