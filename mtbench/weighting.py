"""The interface of loss-weighting plugins: from per-task statistics to one update.

A weighting method is a small Keras layer (so that its state, such as learnable log-variances or a
loss history, is saved with checkpoints) that never reads trainer state: the trainer hands it what
it needs.

- :class:`LossWeighting` maps the per-task losses of a batch to one objective. Its trainable
  variables, if any, are trained with the model by the same optimizer.
- :class:`GradientWeighting` maps each task's gradient to one combined gradient. ``gradient_of``
  says which gradient: ``"shared_parameters"`` (the backbone's parameters, flattened; the combined
  gradient updates them directly) or ``"features"`` (the shared representation of the batch, as
  MGDA-UB uses; the combined gradient is back-propagated through the backbone). Task-specific
  heads are always trained on their own task's loss. A gradient method that learns variables
  updates them itself inside :meth:`GradientWeighting.aggregate`. A method that needs the
  per-task gradients only on some steps (Nash-MTL's "update every k steps") sets
  ``skips_gradients = True`` and implements :meth:`~GradientWeighting.gradients_needed` and
  :meth:`~GradientWeighting.current_weights`: on the other steps the trainer applies
  ``sum_t w_t g_t`` with the current weights at the cost of one backward pass. A method that
  needs several independent batches per update (the double or triple sampling of MoDo and
  SDMGrad) sets ``samples_per_step = S`` and implements
  :meth:`~GradientWeighting.aggregate_samples`: each step then draws ``S`` batches, the method
  gets every batch's per-task gradients ``[S, T, P]`` and losses ``[S, T]``, the heads get the
  mean over the ``S`` batches of their own task's gradient, and an epoch of ``N`` batches makes
  ``N // S`` updates (each step costs ``S`` times a one-batch gradient method's).

All tensors are float32 whatever the training precision. Calls happen inside the compiled
training step, so use TensorFlow operations, not Python branching on tensor values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import keras
import numpy as np
import tensorflow as tf


class Weighting(keras.layers.Layer):
    """Base of weighting methods; subclass :class:`LossWeighting` or :class:`GradientWeighting`."""

    level: ClassVar[Literal["loss", "gradient"]]
    #: batches drawn per update (more than one only for gradient methods with aggregate_samples)
    samples_per_step: ClassVar[int] = 1

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("dtype", "float32")  # weights are never computed in low precision
        super().__init__(**kwargs)
        self.tasks: tuple[str, ...] = ()

    def setup(self, tasks: Sequence[str]) -> None:
        """Called before training with the task names in the order of every tensor (again with
        the same tasks: nothing happens)."""
        if self.built and self.tasks == tuple(tasks):
            return
        self.tasks = tuple(tasks)
        self.build_state(len(self.tasks))
        self.built = True

    def build_state(self, num_tasks: int) -> None:
        """Create variables (``self.add_weight``) that depend on the number of tasks."""

    def on_epoch_end(self, epoch: int, mean_losses: np.ndarray) -> None:
        """Called between epochs (eagerly) with each task's mean training loss of that epoch."""

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)


class LossWeighting(Weighting):
    """A method that weights the task losses. Override :meth:`loss_weights` or :meth:`combine`.

    A method that learns from how the update changed the losses (FAMO) sets
    ``needs_losses_after_update = True``; the trainer then evaluates the batch again after the
    optimizer step (one forward pass, in inference mode) and calls :meth:`after_update`.
    """

    level = "loss"
    needs_losses_after_update: ClassVar[bool] = False

    def combine(self, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Map the batch's task losses ``[T]`` to ``(objective, weights [T])``."""
        weights = self.loss_weights(losses)
        return tf.reduce_sum(weights * losses), weights

    def loss_weights(self, losses: tf.Tensor) -> tf.Tensor:
        """The weight of each task's loss, ``[T]``.

        (Not called ``weights``: that name is the Keras layer's list of variables.)
        """
        raise NotImplementedError

    def after_update(self, losses_before: tf.Tensor, losses_after: tf.Tensor) -> None:
        """The batch's task losses before and after the optimizer step (when requested)."""


class GradientWeighting(Weighting):
    """A method that combines per-task gradients. Override :meth:`aggregate`."""

    level = "gradient"
    gradient_of: ClassVar[Literal["shared_parameters", "features"]] = "shared_parameters"
    skips_gradients: ClassVar[bool] = False

    def aggregate(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Combine ``grads`` ``[T, P]`` (row t: task t's gradient) into ``(update, weights)``.

        ``weights`` are the effective task weights where the method has them (they are logged);
        otherwise any ``[T]`` summary of the combination.
        """
        raise NotImplementedError

    def build_gradient_state(self, gradient_size: int) -> None:
        """Create state shaped like the per-task gradients (``[T, gradient_size]``, e.g. MoCo's
        tracked gradients); called once after :meth:`setup` by the trainer with the number of
        shared parameters, for ``gradient_of = "shared_parameters"``."""

    def aggregate_samples(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """For ``samples_per_step = S > 1``: combine the per-task gradients of ``S`` independent
        batches ``[S, T, P]`` (with their losses ``[S, T]``) into ``(update [P], weights [T])``."""
        raise NotImplementedError

    def gradients_needed(self) -> tf.Tensor:
        """A boolean scalar: whether this step needs per-task gradients (``skips_gradients``)."""
        return tf.constant(True)

    def current_weights(self) -> tf.Tensor:
        """The weights ``[T]`` to apply on a step that skips per-task gradients."""
        raise NotImplementedError


class EqualWeights(LossWeighting):
    """Every task's loss with weight 1: the objective is the plain sum of the task losses.

    Single-task baselines are trained with this objective whatever method the joint run uses.
    """

    def loss_weights(self, losses: tf.Tensor) -> tf.Tensor:
        return tf.ones_like(losses)
