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
- A method that learns its weights from a look-ahead on a second batch (the bilevel
  optimisation of Auto-Lambda) sets ``needs_meta_batch = True`` and implements
  :meth:`~Weighting.meta_update`. Each step then also draws a *meta batch* from the training
  split, in an independent order (never from the validation split, which chooses the best
  epoch), and before the method's usual call the trainer calls ``meta_update`` with a
  :class:`LookAhead`: the step's training and meta batches, the model's parameters, the task
  losses and gradients at any parameter values and the next step of the model's optimizer. The
  method updates its own state from them; it never sees the model, the optimizer or the
  trainer.

All tensors are float32 whatever the training precision. Calls happen inside the compiled
training step, so use TensorFlow operations, not Python branching on tensor values.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Literal

import keras
import numpy as np
import tensorflow as tf

#: The batches of a training step a :class:`LookAhead` evaluates: the one the update is computed
#: on, and the meta batch (drawn from the training split in an independent order).
BatchName = Literal["train", "meta"]


class LookAhead(ABC):
    """What a method with ``needs_meta_batch`` may compute in a training step (the trainer builds
    one per step and passes it to :meth:`Weighting.meta_update`).

    *Parameters* are the model's trainable variables, in the order of
    ``model.trainable_variables``, as a list of float32 tensors; functions that take
    ``parameters`` evaluate the model there instead of at its current values, in training mode
    (dropout active, batch statistics normalised by the batch) but without any side effect: the
    model's variables, its moving statistics and the optimizer's state stay as they are. Every
    value returned is global (the whole batch, all replicas) and the same on every replica, so
    a method that updates its state from them updates every replica's copy alike.

    Each call of :meth:`losses` is one forward pass of the batch; each call of :meth:`gradient`
    a forward and a backward pass: a method's documentation should say how many it makes.
    """

    @property
    @abstractmethod
    def learning_rate(self) -> tf.Tensor:
        """The model optimizer's learning rate for the coming update (a float32 scalar)."""

    @abstractmethod
    def parameters(self) -> list[tf.Tensor]:
        """The model's current parameters."""

    @abstractmethod
    def losses(self, batch: BatchName, parameters: Sequence[tf.Tensor] | None = None) -> tf.Tensor:
        """Each task's loss ``[T]`` on ``batch`` (``"train"`` or ``"meta"``), at ``parameters``
        (default: the current ones)."""

    @abstractmethod
    def gradient(
        self,
        batch: BatchName,
        weights: tf.Tensor,
        parameters: Sequence[tf.Tensor] | None = None,
        *,
        regularization: bool = False,
    ) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """``(losses [T], gradient)`` of ``sum_t weights[t] L_t`` on ``batch`` with respect to
        the parameters, at ``parameters`` (default: the current ones); with ``regularization``
        the model's regularization losses are added to the objective, as the update adds
        them. A parameter the objective does not reach gets a zero gradient."""

    @abstractmethod
    def virtual_step(self, gradient: Sequence[tf.Tensor]) -> list[tf.Tensor]:
        """The parameters the model's optimizer would produce from the current ones with
        ``gradient`` (e.g. from :meth:`gradient` on ``"train"``), without changing anything.

        SGD: its next step exactly (the momentum it holds, Nesterov, its decoupled weight
        decay). Adam and AdamW: a plain gradient step with their learning rate and decoupled
        weight decay, ``theta (1 - lr wd) - lr g`` (a look-ahead through Adam's moments is not
        what the bilevel methods differentiate).
        """


class Weighting(keras.layers.Layer):
    """Base of weighting methods; subclass :class:`LossWeighting` or :class:`GradientWeighting`."""

    level: ClassVar[Literal["loss", "gradient"]]
    #: batches drawn per update (more than one only for gradient methods with aggregate_samples)
    samples_per_step: ClassVar[int] = 1
    #: whether each step also draws a meta batch and calls :meth:`meta_update` first
    needs_meta_batch: ClassVar[bool] = False

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

    def meta_update(self, look_ahead: LookAhead) -> None:
        """With ``needs_meta_batch``: called in every training step before the method's usual
        call (``combine`` or ``aggregate``) on the same training batch, to update the method's
        state (non-trainable weights created in :meth:`build_state`, so that checkpoints hold
        them) from what ``look_ahead`` computes. Inside the compiled step: TensorFlow
        operations only.
        """
        raise NotImplementedError(
            f"{type(self).__name__} sets needs_meta_batch but does not implement meta_update"
        )

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
