"""Optimizers and learning-rate schedules from the ``trainer`` config."""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

SCHEDULES = ("constant", "cosine", "onecycle")

#: Variables whose names contain one of these get no weight decay (biases, normalization).
NO_DECAY = ["bias", "gamma", "beta"]


@keras.saving.register_keras_serializable(package="mtbench")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ``peak/div`` to ``peak`` over ``warmup_steps``, then linear decay to
    ``peak/final_div`` at ``total_steps`` (the triangular one-cycle policy, Smith 2018)."""

    def __init__(
        self,
        peak: float,
        total_steps: int,
        warmup_steps: int,
        div: float = 25.0,
        final_div: float = 1e4,
    ) -> None:
        self.peak = peak
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.div = div
        self.final_div = final_div

    def __call__(self, step: Any) -> tf.Tensor:
        step = tf.cast(step, tf.float32)
        start, end = self.peak / self.div, self.peak / self.final_div
        warm = max(self.warmup_steps, 1)
        up = start + (self.peak - start) * step / warm
        frac = (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1)
        down = self.peak + (end - self.peak) * tf.minimum(frac, 1.0)
        return tf.where(step < self.warmup_steps, up, down)

    def get_config(self) -> dict[str, Any]:
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "div": self.div,
            "final_div": self.final_div,
        }


class BudgetSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule over ``total_steps`` driven by the fraction of a time budget spent.

    Equal-budget mode cannot know in advance how many steps a run gets, so the trainer sets
    ``progress`` (0 to 1: the larger of the budget's and the epochs' fraction done) before each
    call, and the rate is ``schedule(progress * total_steps)``: warm-up and decay follow the
    budget, and the rate reaches the schedule's end when the budget does.
    """

    def __init__(
        self,
        schedule: keras.optimizers.schedules.LearningRateSchedule,
        total_steps: int,
        progress: tf.Variable,
    ) -> None:
        self.schedule = schedule
        self.total_steps = total_steps
        self.progress = progress

    def __call__(self, step: Any) -> tf.Tensor:
        del step  # the budget, not the step count, says how far training is
        return self.schedule(tf.cast(self.progress * self.total_steps, tf.float32))

    def get_config(self) -> dict[str, Any]:
        return {"schedule": self.schedule.get_config(), "total_steps": self.total_steps}


def learning_rate(
    schedule: str, peak: float, steps_per_epoch: int, epochs: int, warmup_epochs: float
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate (or schedule over optimizer steps) for ``trainer.schedule``."""
    total = max(steps_per_epoch * epochs, 1)
    warmup = min(int(math.ceil(warmup_epochs * steps_per_epoch)), total)
    if schedule == "constant":
        return peak
    if schedule == "cosine":
        # from 0 to `peak` over the warm-up, then cosine decay to 0 at the last step
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else peak,
            decay_steps=max(total - warmup, 1),
            warmup_target=peak if warmup else None,
            warmup_steps=warmup,
        )
    if schedule == "onecycle":
        return OneCycle(peak, total, warmup or max(total // 4, 1))
    raise ValueError(f"trainer.schedule={schedule!r}; choose one of {', '.join(SCHEDULES)}")


def make_optimizer(
    name: str,
    rate: float | keras.optimizers.schedules.LearningRateSchedule,
    *,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    precision: str,
) -> keras.optimizers.Optimizer:
    """``adam``, ``adamw`` or ``sgd``; decoupled weight decay skips biases and normalization."""
    decay = weight_decay or None
    if name == "adam":
        optimizer: keras.optimizers.Optimizer = keras.optimizers.Adam(rate, weight_decay=decay)
    elif name == "adamw":
        optimizer = keras.optimizers.AdamW(rate, weight_decay=weight_decay)
    elif name == "sgd":
        optimizer = keras.optimizers.SGD(
            rate, momentum=momentum, nesterov=nesterov, weight_decay=decay
        )
    else:
        raise ValueError(f"trainer.optimizer={name!r}; choose adam, adamw or sgd")
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
