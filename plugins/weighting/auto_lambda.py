"""The ``auto_lambda`` weighting: task weights learned through a one-step look-ahead."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from mtbench.weighting import LookAhead, LossWeighting

from .common import Adam, check_range, options_of, state
from .options import AutoLambdaConfig


class AutoLambda(LossWeighting):
    """Auto-Lambda: Liu, James, Davison and Johns, "Auto-Lambda: Disentangling Dynamic Task
    Relationships", TMLR 2022, as in the authors' reference code (``auto_lambda.py`` and
    ``trainer_dense.py`` of github.com/lorenmt/auto-lambda at
    bdba6365953f7ebb3a8ae33fabfecd3f933ecc27).

    The model is trained on ``sum_t lambda_t L_t``. Before each update the weights ``lambda``
    take one Adam step (learning rate ``weight_lr``) on the bilevel objective: the primary
    tasks' loss on a *meta batch* after a look-ahead step of the model,
    ``L_meta(theta'(lambda))`` with ``theta' = theta - alpha grad_theta sum_t lambda_t L_t``
    on the training batch (``alpha``: the model's current learning rate). As in the reference,
    the look-ahead is the next step of an SGD optimizer, its momentum and weight decay included,
    and a plain gradient step (with decoupled weight decay) under Adam or AdamW
    (:meth:`mtbench.weighting.LookAhead.virtual_step`). Its gradient in ``lambda`` is
    ``-alpha H d`` with ``d = grad L_meta(theta')`` and ``H = d/dlambda grad_theta (sum_t
    lambda_t L_t)``, whose row t, ``<grad L_t(theta), d>``, is taken by central differences as
    in DARTS: ``(L_t(theta + eps d) - L_t(theta - eps d)) / (2 eps)``,
    ``eps = radius / |d|``.

    The meta batch is drawn from the training split in a second, independent order (as the
    reference's "validation" loader, a second shuffled loader of the training set); the
    validation split stays untouched for model selection (see :mod:`mtbench.pipeline`).

    Cost per step, in passes over a batch: ``ew`` makes one forward and one backward pass;
    Auto-Lambda makes five forward and three backward passes (the look-ahead gradient, the
    meta-batch gradient at ``theta'``, the two finite-difference losses, then the update): 3.7
    times ``ew``'s arithmetic when a backward pass costs two forwards. Measured: 3.19 times
    ``ew``'s step time with two tasks and 2.90 with twenty (the README's cost tables: seed_cnn,
    batch 128, mixed bfloat16, Adam, 2 idle CPU cores, median of interleaved rounds).

    Differences from the reference code: the look-ahead passes change no variable (the
    reference's model, in training mode, also updates batch-norm running statistics in them)
    and all draw the dropout masks of the step's own forward pass; the parameters are never moved
    and moved back (the reference perturbs them in place, which leaves rounding drift); a step
    whose meta gradient is not finite, or whose meta-batch gradient ``d`` is zero (e.g. no
    primary label in the meta batch; the reference would divide by zero), leaves ``lambda`` and
    its Adam state as they are. ``lambda`` is not constrained, as in the reference.
    ``meta_gradient`` holds the last meta gradient (for inspection and tests).

    Example:
        ``python -m mtbench +experiment=cifar100_mtl weighting=auto_lambda
        weighting.primary_tasks=[fine]``
    """

    needs_meta_batch = True

    def __init__(
        self,
        init_weight: float = 0.1,
        weight_lr: float = 1e-4,
        primary_tasks: Sequence[str] = (),
        radius: float = 0.01,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_range("weight_lr", weight_lr, 0.0, low_open=True)
        check_range("radius", radius, 0.0, low_open=True)
        self.init_weight, self.weight_lr = float(init_weight), float(weight_lr)
        self.primary_tasks = [str(t) for t in primary_tasks]
        self.radius = float(radius)

    def setup(self, tasks: Sequence[str]) -> None:
        unknown = sorted(set(self.primary_tasks) - set(tasks))
        if unknown:
            raise ValueError(
                f"weighting.primary_tasks names {unknown}, which this run does not train; "
                f"choose among {list(tasks)} (or [] for every task)"
            )
        super().setup(tasks)

    def build_state(self, num_tasks: int) -> None:
        initial = keras.initializers.Constant(self.init_weight)
        self.lambd = state(self, "lambda", (num_tasks,), initial)
        self.adam = Adam(self, self.lambd, self.weight_lr)
        self.meta_gradient = state(self, "meta_gradient", (num_tasks,))

    def loss_weights(self, losses: tf.Tensor) -> tf.Tensor:
        return tf.convert_to_tensor(self.lambd)

    def _primary(self) -> tf.Tensor:
        """1 for the tasks whose meta-batch loss is lowered, 0 for the others."""
        chosen = set(self.primary_tasks or self.tasks)
        return tf.constant([1.0 if t in chosen else 0.0 for t in self.tasks])

    def meta_update(self, look_ahead: LookAhead) -> None:
        weights = tf.convert_to_tensor(self.lambd)
        # theta' = the optimizer's next step on the training batch's weighted loss
        _, gradient = look_ahead.gradient("train", weights, regularization=True)
        ahead = look_ahead.virtual_step(gradient)
        # d = grad of the primary tasks' meta-batch loss at theta'
        _, direction = look_ahead.gradient("meta", self._primary(), ahead)
        norm = tf.linalg.global_norm(direction)
        usable = norm > 0.0
        eps = self.radius / tf.where(usable, norm, 1.0)
        current = look_ahead.parameters()
        plus = [p + eps * d for p, d in zip(current, direction, strict=True)]
        minus = [p - eps * d for p, d in zip(current, direction, strict=True)]
        hessian = (look_ahead.losses("train", plus) - look_ahead.losses("train", minus)) / (
            2.0 * eps
        )
        meta_gradient = -look_ahead.learning_rate * hessian

        def step() -> tf.Tensor:
            self.meta_gradient.assign(meta_gradient)
            self.adam.apply(meta_gradient)
            return tf.constant(True)

        finite = tf.logical_and(usable, tf.reduce_all(tf.math.is_finite(meta_gradient)))
        tf.cond(finite, step, lambda: tf.constant(False))

    def get_config(self) -> dict[str, Any]:
        config = {**super().get_config(), **options_of(self, AutoLambdaConfig)}
        config["primary_tasks"] = list(self.primary_tasks)  # a plain list, not Keras's tracked one
        return config
