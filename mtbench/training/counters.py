"""What the compiled training function tallies over an epoch, on the device: loss and weight
sums, steps done and skipped, and which tasks made a step fail. Read back between calls."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf


class EpochCounters:
    """The epoch's tallies, as variables the compiled training function updates.

    Args:
        tasks: The tasks' names, in the order of the weighting method's tasks.
    """

    def __init__(self, tasks: Sequence[str]) -> None:
        self.tasks = tuple(tasks)
        num_tasks = len(self.tasks)
        self.loss_sum = tf.Variable(tf.zeros([num_tasks]), trainable=False)
        self.weight_sum = tf.Variable(tf.zeros([num_tasks]), trainable=False)
        self.steps = tf.Variable(0, dtype=tf.int64, trainable=False)  # steps done this epoch
        self.skipped = tf.Variable(0, dtype=tf.int64, trainable=False)  # this epoch
        self.failed = tf.Variable(False, trainable=False)
        self.bad_losses = tf.Variable(tf.zeros([num_tasks], tf.bool), trainable=False)
        self.bad_grads = tf.Variable(tf.zeros([num_tasks], tf.bool), trainable=False)

    @property
    def checkpointed(self) -> list[tf.Variable]:
        """The tallies a checkpoint saves (those of an epoch in progress)."""
        return [self.loss_sum, self.weight_sum, self.steps, self.skipped]

    def reset(self) -> None:
        """Start an epoch."""
        for variable in (self.loss_sum, self.weight_sum):
            variable.assign(tf.zeros_like(variable))
        self.steps.assign(0)
        self.skipped.assign(0)

    def steps_done(self) -> int:
        """Steps run this epoch (reading it waits for the queued steps to finish)."""
        return int(self.steps.numpy())

    def skipped_steps(self) -> int:
        return int(self.skipped.numpy())

    def _applied(self) -> int:
        return max(self.steps_done() - self.skipped_steps(), 1)

    def mean_losses(self) -> dict[str, float]:
        """Each task's mean training loss over the steps applied this epoch."""
        steps = self._applied()
        sums = self.loss_sum.numpy()
        return {t: float(s) / steps for t, s in zip(self.tasks, sums, strict=True)}

    def mean_weights(self) -> dict[str, float]:
        """Each task's mean weight over the steps applied this epoch."""
        weights = self.weight_sum.numpy() / self._applied()  # float32, as the sums
        return {t: float(w) for t, w in zip(self.tasks, weights, strict=True)}

    def losses_per_step(self) -> np.ndarray:
        """The loss sums over all steps run this epoch, skipped ones included."""
        return self.loss_sum.numpy() / max(self.steps_done(), 1)

    def nonfinite_tasks(self) -> tuple[list[str], list[str]]:
        """The tasks whose loss, and those whose gradient, made the failed step non-finite."""
        bad_losses = [t for t, bad in zip(self.tasks, self.bad_losses.numpy(), strict=True) if bad]
        bad_grads = [t for t, bad in zip(self.tasks, self.bad_grads.numpy(), strict=True) if bad]
        return bad_losses, bad_grads
