"""One replica's training step: the task losses, the weighting method's objective or combined
gradient, whether everything is finite, and the update.

Each task's loss comes from its head (:func:`~mtbench.training.losses.masked_task_losses`); the
losses, or each task's gradient, go to the weighting plugin, which returns the objective or the
combined update (see :mod:`mtbench.weighting`). Under a strategy with several replicas, each
replica's loss is its share of the global batch mean, the weighting method sees the global losses
(and, for ``gradient_of="shared_parameters"``, the all-reduced per-task gradients), so the update
equals the single-device one. (``gradient_of="features"`` methods combine each replica's own
slice of the batch.)

A method with ``needs_meta_batch`` gets a :class:`ReplicaLookAhead` first
(:meth:`ReplicaStep.meta_update`): it evaluates the model at any parameter values with Keras's
``stateless_call``, so that look-ahead passes change no variable (no moving statistics either),
and all-reduces its losses and gradients like the step does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from mtbench.model import MultiTaskModel
from mtbench.tasks import TaskKind
from mtbench.training.losses import masked_task_losses
from mtbench.weighting import BatchName, GradientWeighting, LookAhead, LossWeighting, Weighting


class Step(NamedTuple):
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
    has_regularization: bool  # the model added losses (add_loss) in this forward pass
    heads_objective: tf.Tensor  # sum of the task losses plus regularization, scaled


class ReplicaStep:
    """The computations of one training step on one replica (run by ``strategy.run``).

    Args:
        model: The model trained.
        weighting: The weighting method, set up for the tasks of ``kinds``.
        kinds: The tasks' kinds by name, in the order of the weighting method's tasks.
        strategy: The ``tf.distribute`` strategy the step runs under.
        precision: The Keras dtype policy of the model (``mixed_float16`` leaves non-finite
            gradients to the loss scaler).
        get_optimizer: Returns the optimizer, once the trainer built it (``None`` before: no
            loss scaling).
    """

    def __init__(
        self,
        model: MultiTaskModel,
        weighting: Weighting,
        kinds: Mapping[str, TaskKind],
        strategy: tf.distribute.Strategy,
        precision: str,
        get_optimizer: Callable[[], keras.optimizers.Optimizer | None],
    ) -> None:
        self.model = model
        self.weighting = weighting
        self.kinds = kinds
        self.strategy = strategy
        self.precision = precision
        self.get_optimizer = get_optimizer
        self.samples = int(weighting.samples_per_step)
        if self.samples > 1 and weighting.needs_meta_batch:
            raise ValueError(
                f"{type(weighting).__name__}: a method draws either several batches per update "
                "(samples_per_step > 1) or a meta batch (needs_meta_batch), not both"
            )
        if self.samples > 1 and (
            not isinstance(weighting, GradientWeighting)
            or weighting.gradient_of != "shared_parameters"
            or weighting.skips_gradients
        ):
            raise ValueError(
                f"{type(weighting).__name__}: samples_per_step > 1 needs a gradient method with "
                "gradient_of='shared_parameters' and no skipped gradients"
            )

    # ------------------------------------------------------------------------------ the losses
    @property
    def _replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    def _scale(self, loss: tf.Tensor) -> tf.Tensor:
        optimizer = self.get_optimizer()
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            return optimizer.scale_loss(loss)
        return loss

    def _loss_scale(self) -> tf.Tensor:
        optimizer = self.get_optimizer()
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            return tf.cast(optimizer.dynamic_scale, tf.float32)
        return tf.constant(1.0)

    def task_losses(self, labels: dict, outputs: dict[str, tf.Tensor]) -> list[tf.Tensor]:
        """This replica's share of each task's loss (see :func:`masked_task_losses`)."""
        return masked_task_losses(self.kinds, labels, outputs)

    def _regularization_share(self) -> tf.Tensor:
        """This replica's share of the losses the model added (``add_loss``) in the forward pass
        just run. Read it right after the forward pass, before any all-reduce: under
        ``MirroredStrategy`` an all-reduce lets the other replica run its forward pass, which
        replaces the model's loss lists, and a replica would read the other's regulariser (not on
        its own tape)."""
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

    # ------------------------------------------------------------------------------- the steps
    def loss_level(self, images: tf.Tensor, labels: dict[str, tf.Tensor]) -> Step:
        """A loss-level method: the gradient of its objective of the global task losses."""
        weighting = self.weighting
        assert isinstance(weighting, LossWeighting)
        variables = self.model.trainable_variables + weighting.trainable_variables
        with tf.GradientTape() as tape:
            outputs = self.model(images, training=True)
            regularization = self._regularization_share()  # before any all-reduce
            shares = self.task_losses(labels, outputs)
            losses = tf.stop_gradient(self._global(shares))
            # The method's objective at the global losses; its slope turns each replica's
            # share into exactly its part of the gradient, whatever the method's formula.
            with tf.GradientTape() as slope_tape:
                slope_tape.watch(losses)
                objective, weights = weighting.combine(losses)
            slopes = tf.stop_gradient(slope_tape.gradient(objective, losses))
            local = tf.reduce_sum(slopes * tf.stack(shares)) + objective / self._replicas
            local = self._scale(local + regularization)
        grads = tape.gradient(local, variables)
        return self._result(grads, losses, weights)

    def _result(
        self,
        grads: list[tf.Tensor],
        losses: tf.Tensor,
        weights: tf.Tensor,
        bad_task_grads: tf.Tensor | None = None,
    ) -> Step:
        """The step's result, with whether every replica found its losses and update finite."""
        bad_losses = tf.logical_not(tf.math.is_finite(losses))
        finite = tf.logical_not(tf.reduce_any(bad_losses))
        if self.precision != "mixed_float16":  # float16 overflow is the loss scaler's business
            finite = tf.logical_and(finite, self._all_finite(grads))
        if bad_task_grads is None:
            bad_task_grads = tf.zeros_like(bad_losses)
        return Step(
            grads, losses, tf.cast(weights, tf.float32), self._agree(finite), bad_losses,
            bad_task_grads,
        )  # fmt: skip

    def _forward_on_tape(
        self, tape: tf.GradientTape, images: tf.Tensor, labels: dict[str, tf.Tensor]
    ) -> _Forward:
        """The forward pass, recorded on ``tape`` (everything differentiated is computed here)."""
        with tape:
            features = self.model.features(images, training=True)
            outputs = self.model.predict_heads(features, training=True)
            has_regularization = bool(self.model.losses)
            regularization = self._scale(self._regularization_share())  # before any all-reduce
            shares = self.task_losses(labels, outputs)
            scaled = [self._scale(share) for share in shares]
            heads_objective = tf.add_n(scaled) + regularization
        return _Forward(
            features, shares, scaled, regularization, has_regularization, heads_objective
        )

    def fixed_weights_now(self, images: tf.Tensor, labels: dict[str, tf.Tensor]) -> Step:
        """A step that skips per-task gradients: the method's current weights, fixed."""
        weighting = self.weighting
        assert isinstance(weighting, GradientWeighting)
        return self.fixed_weight_gradients(images, labels, weighting.current_weights())

    def combined_gradients(self, images: tf.Tensor, labels: dict[str, tf.Tensor]) -> Step:
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
        if forward.has_regularization:
            extra = tape.gradient(forward.regularization, shared)
            shared_grads = [
                g if e is None else g + e for g, e in zip(shared_grads, extra, strict=True)
            ]
        del tape
        bad_task_grads = tf.logical_not(tf.reduce_all(tf.math.is_finite(per_task), axis=1))
        return self._result(shared_grads + head_grads, losses, weights, bad_task_grads)

    def sampled_gradients(self, images: tuple, labels: tuple) -> Step:
        """Per-task gradients of the shared parameters on each of ``samples`` batches, combined by
        the method's ``aggregate_samples``; heads get the mean of their own-loss gradients."""
        weighting = self.weighting
        assert isinstance(weighting, GradientWeighting)
        shared, heads = self.model.shared_variables, self.model.task_variables
        scale = self._loss_scale()
        context = tf.distribute.get_replica_context()
        all_grads, all_losses, head_sum, extra_sum = [], [], None, None
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
            if forward.has_regularization:  # the model's own losses, as combined_gradients adds
                extra = _zeros_for_none(tape.gradient(forward.regularization, shared), shared)
                extra_sum = (
                    extra
                    if extra_sum is None
                    else [a + b for a, b in zip(extra_sum, extra, strict=True)]
                )
            del tape
        per_task = tf.stack(all_grads)  # [S, T, P]
        losses_per_sample = tf.stack(all_losses)  # [S, T]
        update, weights = weighting.aggregate_samples(per_task, losses_per_sample)
        shared_grads = _unflatten(update * scale / self._replicas, shared)
        if extra_sum is not None:  # the mean over the samples, like the heads' gradients
            shared_grads = [
                g + e / float(self.samples) for g, e in zip(shared_grads, extra_sum, strict=True)
            ]
        head_grads = [g / float(self.samples) for g in head_sum]
        losses = tf.reduce_mean(losses_per_sample, axis=0)
        bad_task_grads = tf.logical_not(tf.reduce_all(tf.math.is_finite(per_task), axis=[0, 2]))
        return self._result(shared_grads + head_grads, losses, weights, bad_task_grads)

    def fixed_weight_gradients(
        self, images: tf.Tensor, labels: dict[str, tf.Tensor], weights: tf.Tensor
    ) -> Step:
        """The update of :meth:`combined_gradients` for fixed weights: ``sum_t w_t g_t`` for the
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
        return self._result(shared_grads + head_grads, losses, weights)

    def meta_update(self, images: Any, labels: dict, meta_images: Any, meta_labels: dict) -> None:
        """Give a ``needs_meta_batch`` method its look-ahead on this step's batches (before the
        step itself, which then sees the state the method updated)."""
        look_ahead = ReplicaLookAhead(self, (images, labels), (meta_images, meta_labels))
        self.weighting.meta_update(look_ahead)

    # ------------------------------------------------------------------------------ the update
    def apply(self, grads: list[tf.Tensor], images: tf.Tensor, labels: dict, losses: tf.Tensor):
        """Apply the update (per replica); give methods that ask the losses after it."""
        optimizer = self.get_optimizer()
        assert optimizer is not None
        optimizer.apply(grads, self.updated_variables())
        weighting = self.weighting
        if isinstance(weighting, LossWeighting) and weighting.needs_losses_after_update:
            after = self._global(self.task_losses(labels, self.model(images, training=False)))
            weighting.after_update(losses, after)

    def updated_variables(self) -> list[keras.Variable]:
        """The variables the optimizer updates, in the order of a step's ``grads``."""
        if self.weighting.level == "loss":
            return self.model.trainable_variables + self.weighting.trainable_variables
        return self.model.shared_variables + self.model.task_variables


class ReplicaLookAhead(LookAhead):
    """:class:`~mtbench.weighting.LookAhead` on one replica: its slices of the step's training
    and meta batches; losses and gradients all-reduced over the replicas.

    Args:
        step: The replica's step (the model, the optimizer, the tasks' losses).
        train: This replica's ``(inputs, labels)`` of the training batch.
        meta: The same of the meta batch.
    """

    def __init__(self, step: ReplicaStep, train: tuple[Any, dict], meta: tuple[Any, dict]) -> None:
        self._step = step
        self._batches = {"train": train, "meta": meta}
        model = step.model
        self._variables = list(model.trainable_variables)
        self._current = [tf.convert_to_tensor(v) for v in self._variables]
        # the moving statistics and seed states the passes read (their updates are dropped)
        self._state = [tf.convert_to_tensor(v) for v in model.non_trainable_variables]

    def _optimizer(self) -> keras.optimizers.Optimizer:
        optimizer = self._step.get_optimizer()
        if optimizer is None:
            raise RuntimeError("a look-ahead needs the model's optimizer: call Trainer.prepare")
        return optimizer

    @property
    def learning_rate(self) -> tf.Tensor:
        return tf.cast(self._optimizer().learning_rate, tf.float32)

    def parameters(self) -> list[tf.Tensor]:
        return list(self._current)

    def _at(self, parameters: Sequence[tf.Tensor] | None) -> list[tf.Tensor]:
        if parameters is None:
            return list(self._current)
        parameters = list(parameters)
        if len(parameters) != len(self._variables):
            raise ValueError(
                f"a look-ahead got {len(parameters)} parameter tensors; the model has "
                f"{len(self._variables)} trainable variables"
            )
        return parameters

    def _forward(
        self, batch: BatchName, parameters: list[tf.Tensor]
    ) -> tuple[list[tf.Tensor], tf.Tensor]:
        """This replica's shares of the task losses and of the regularization at ``parameters``."""
        if batch not in self._batches:
            raise ValueError(f"a look-ahead batch is 'train' or 'meta', not {batch!r}")
        images, labels = self._batches[batch]
        outputs, _, extra = self._step.model.stateless_call(
            parameters, self._state, images, training=True, return_losses=True
        )
        shares = self._step.task_losses(labels, outputs)
        regularization = (
            tf.add_n([tf.cast(x, tf.float32) for x in extra]) / self._step._replicas
            if extra
            else tf.constant(0.0)
        )
        return shares, regularization

    def losses(self, batch: BatchName, parameters: Sequence[tf.Tensor] | None = None) -> tf.Tensor:
        shares, _ = self._forward(batch, self._at(parameters))
        return self._step._global(shares)

    def gradient(
        self,
        batch: BatchName,
        weights: tf.Tensor,
        parameters: Sequence[tf.Tensor] | None = None,
        *,
        regularization: bool = False,
    ) -> tuple[tf.Tensor, list[tf.Tensor]]:
        step = self._step
        at = self._at(parameters)
        weights = tf.stop_gradient(tf.cast(weights, tf.float32))
        with tf.GradientTape() as tape:
            tape.watch(at)
            shares, extra = self._forward(batch, at)
            objective = tf.reduce_sum(weights * tf.stack(shares))
            if regularization:
                objective += extra
            scaled = step._scale(objective)
        grads = _zeros_for_none(tape.gradient(scaled, at), self._variables)
        scale = step._loss_scale()
        local = [tf.cast(g, tf.float32) / scale for g in grads]
        context = tf.distribute.get_replica_context()
        return step._global(shares), list(context.all_reduce(tf.distribute.ReduceOp.SUM, local))

    def virtual_step(self, gradient: Sequence[tf.Tensor]) -> list[tf.Tensor]:
        optimizer = self._optimizer()
        inner = getattr(optimizer, "inner_optimizer", optimizer)  # under loss scaling
        rate = self.learning_rate
        decay = inner.weight_decay
        momentum = (
            float(getattr(inner, "momentum", 0.0))
            if isinstance(inner, keras.optimizers.SGD)
            else 0.0
        )
        stepped = []
        for variable, theta, g in zip(self._variables, self._current, gradient, strict=True):
            g = tf.cast(g, tf.float32)
            # the order of Keras's update: decoupled weight decay, then the optimizer's rule
            # (private helpers: the optimizer's own exclusions and slot of this variable)
            if decay and inner._use_weight_decay(variable):
                theta = theta - theta * tf.cast(decay, tf.float32) * rate
            if momentum:
                held = tf.convert_to_tensor(inner.momentums[inner._get_variable_index(variable)])
                velocity = momentum * held - rate * g
                theta = theta + (momentum * velocity - rate * g if inner.nesterov else velocity)
            else:
                theta = theta - rate * g
            stepped.append(theta)
        return stepped


def _flatten(tensors: Sequence[tf.Tensor | None], like: Sequence[keras.Variable]) -> tf.Tensor:
    """One float32 vector of gradients; a variable that a loss does not reach contributes zeros."""
    return tf.concat(
        [
            tf.zeros([int(np.prod(v.shape))])
            if t is None
            else tf.reshape(tf.cast(t, tf.float32), [int(np.prod(v.shape))])
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
