"""The ``famo`` weighting: fast adaptive multitask optimization."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from mtbench.weighting import LossWeighting

from .common import Adam, check_range, choice, options_of, state
from .options import FAMOConfig, FAMOUpdate

EPSILON = 1e-8  # added to every loss before its logarithm, as in the reference code


class FAMO(LossWeighting):
    """FAMO: Liu, Feng, Stone and Liu, "FAMO: Fast Adaptive Multitask Optimization",
    NeurIPS 2023 (Algorithm 1 and the authors' reference code).

    Task logits ``xi`` give ``z = softmax(xi)``. The model minimises
    ``sum_t (z_t / c) log(L_t + eps)`` with ``c = sum_t z_t / (L_t + eps)`` held constant, i.e.
    the loss weights are ``w_t = z_t / (c (L_t + eps))`` (they sum to 1). After each update, with
    ``delta_t = log(L_t + eps) - log(L_t' + eps)`` the decrease of each task's log loss, ``xi``
    takes an Adam step (learning rate ``weight_lr``, L2 decay ``gamma``) along
    ``J_softmax(xi)' delta``: a task whose loss falls faster than the weighted average loses
    weight, one that falls slower gains it.

    ``update`` chooses where ``L'`` comes from: the same batch after the step (the paper and its
    reference code; one more forward pass, about 1.3x ``ew``'s step time on the reference model),
    or the next step's batch (no extra pass, about ``ew``'s time). The default is the paper's:
    across batches the change in loss is mostly batch-to-batch noise. On CIFAR-100 (seed_cnn,
    batch 128, 200 steps of ``ew``) the per-step difference between the two tasks' log-loss
    decreases, which drives the logits, had mean/std -0.84 on the same batch but -0.01 across
    batches, so ``next_batch`` logits mostly random-walk.

    Differences from the reference code: its stand-alone ``famo.py`` clips the norm of the
    shared parameters' gradient to ``max_norm = 1.0`` after the backward pass when the shared
    parameters are passed to ``FAMO.backward``; mtbench does not clip (a loss weighting does not
    see gradients). In the paper's experiment scripts (``methods/weight_methods.py``) the clip
    runs before the backward pass, on the gradients the optimizer has just zeroed, so there it
    changes nothing. Its ``min_losses`` (0 unless set) are not subtracted here.

    Example:
        ``python -m mtbench weighting=famo weighting.update=next_batch``
    """

    def __init__(
        self,
        gamma: float = 0.01,
        weight_lr: float = 0.025,
        update: FAMOUpdate | str = "same_batch",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_range("gamma", gamma, 0.0)
        check_range("weight_lr", weight_lr, 0.0, low_open=True)
        self.gamma, self.weight_lr = float(gamma), float(weight_lr)
        self.update = choice("update", update, FAMOUpdate)
        # an instance attribute: the trainer reads it from the instance
        self.needs_losses_after_update = self.update == FAMOUpdate.same_batch

    def build_state(self, num_tasks: int) -> None:
        self.logits = state(self, "logits", (num_tasks,))
        self.adam = Adam(self, self.logits, self.weight_lr, weight_decay=self.gamma)
        self.previous_losses = state(self, "previous_losses", (num_tasks,))
        self.has_previous = state(self, "has_previous")

    def combine(self, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if self.update == "next_batch":
            self._learn_from_previous_step(tf.stop_gradient(losses))
        z = tf.nn.softmax(tf.convert_to_tensor(self.logits))
        shifted = losses + EPSILON
        c = tf.stop_gradient(tf.reduce_sum(z / shifted))
        objective = tf.reduce_sum(z * tf.math.log(shifted)) / c
        return objective, tf.stop_gradient(z / (c * shifted))

    def loss_weights(self, losses: tf.Tensor) -> tf.Tensor:
        z = tf.nn.softmax(tf.convert_to_tensor(self.logits))
        shifted = losses + EPSILON
        return z / (tf.reduce_sum(z / shifted) * shifted)

    def after_update(self, losses_before: tf.Tensor, losses_after: tf.Tensor) -> None:
        self.learn(losses_before, losses_after)

    def learn(self, losses_before: tf.Tensor, losses_after: tf.Tensor) -> None:
        """One Adam step of the logits from the losses before and after a model update."""
        delta = tf.math.log(losses_before + EPSILON) - tf.math.log(losses_after + EPSILON)

        def step() -> tf.Tensor:
            z = tf.nn.softmax(tf.convert_to_tensor(self.logits))
            # J_softmax(xi)' delta = z * (delta - <z, delta>)
            self.adam.apply(z * (delta - tf.reduce_sum(z * delta)))
            return tf.constant(True)

        # a skipped non-finite step must not poison the logits
        tf.cond(tf.reduce_all(tf.math.is_finite(delta)), step, lambda: tf.constant(False))

    def _learn_from_previous_step(self, losses: tf.Tensor) -> None:
        def learn() -> tf.Tensor:
            self.learn(tf.convert_to_tensor(self.previous_losses), losses)
            return tf.constant(True)

        tf.cond(self.has_previous > 0.0, learn, lambda: tf.constant(False))
        self.previous_losses.assign(losses)
        self.has_previous.assign(1.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, FAMOConfig)}
