"""The ``sdmgrad`` weighting: stochastic direction-oriented multi-objective gradient descent."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from mtbench.weighting import GradientWeighting

from .common import check_range, combine, options_of, state
from .options import SDMGradConfig
from .sampling import project_to_simplex


class SDMGrad(GradientWeighting):
    """SDMGrad: Xiao, Ban and Ji, "Direction-oriented Multi-objective Learning: Simple and
    Provable Stochastic Algorithms", NeurIPS 2023, as in LibMTL's ``SDMGrad.py`` (modified from
    the authors' code, github.com/OptMN-Lab/sdmgrad).

    Each update draws three independent batches (``samples_per_step = 3``) with per-task
    gradient matrices ``Z`` (first batch), ``X1``, ``X2``. With ``M = X1 X2'`` scaled by the
    squared mean gradient norm (``s = mean_t sqrt(max(M_tt, 0))``, ``M / (s^2 + 1e-8)``) and
    ``m = mean over columns of M``, the weights ``w`` (kept between updates, starting at
    ``1/T``) take ``niter`` projected SGD-with-momentum steps on ``w' M w / 2 + lamda m' w``:
    gradient ``M w + lamda m``, then projection onto the simplex. The update is
    ``(Z' w + lamda mean_t Z_t) / (1 + lamda)``; the logged weights are
    ``(w + lamda / T) / (1 + lamda)``. The heads are trained on the mean of their own task's
    gradients over the three batches (the reference sums them: the same direction, three times
    the step). Each update costs three batches' per-task gradients (``3 T`` backward passes),
    and an epoch of N batches makes ``N // 3`` updates; LibMTL's trainer makes N, each drawing
    three batches: ``trainer.epochs=3E`` here gives the updates of its E epochs.

    Many noisy tasks: the cross-batch matrix ``M`` is not symmetric and, when the per-task
    gradients are mostly noise (``cifar100_tasks``, about six labelled examples per task in a
    batch), indefinite; the projected steps then end on a vertex of the simplex, so each update
    is mostly one task's gradient (weight ``1 / 1.3``) plus ``0.3 / 1.3`` of the mean. The
    reference computes the same (tests/test_weighting_short_budget.py).

    Example:
        ``python -m mtbench weighting=sdmgrad weighting.lamda=0.3``
    """

    samples_per_step = 3

    def __init__(
        self,
        lamda: float = 0.3,
        niter: int = 20,
        weight_lr: float = 5.0,
        weight_momentum: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_range("lamda", lamda, 0.0)
        check_range("niter", niter, 1)
        check_range("weight_lr", weight_lr, 0.0, low_open=True)
        check_range("weight_momentum", weight_momentum, 0.0, 1.0, high_open=True)
        self.lamda, self.niter = float(lamda), int(niter)
        self.weight_lr, self.weight_momentum = float(weight_lr), float(weight_momentum)

    def build_state(self, num_tasks: int) -> None:
        self.w = state(self, "w", (num_tasks,), tf.keras.initializers.Constant(1.0 / num_tasks))

    def aggregate_samples(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        zeta, xi1, xi2 = (tf.cast(grads[i], tf.float64) for i in range(3))
        gram = tf.matmul(xi1, xi2, transpose_b=True)
        diagonal = tf.maximum(tf.linalg.diag_part(gram), 0.0)
        scale = tf.reduce_mean(tf.sqrt(diagonal))
        gram = gram / (scale**2 + 1e-8)
        mean_column = tf.reduce_mean(gram, axis=1)
        w = tf.cast(tf.convert_to_tensor(self.w), tf.float64)
        buffer = tf.zeros_like(w)
        for i in range(self.niter):
            gradient = tf.linalg.matvec(gram, w) + self.lamda * mean_column
            buffer = gradient if i == 0 else self.weight_momentum * buffer + gradient
            w = project_to_simplex(w - self.weight_lr * buffer)
        self.w.assign(tf.cast(w, tf.float32))
        num_tasks = tf.cast(tf.size(w), tf.float64)
        weights = (w + self.lamda / num_tasks) / (1.0 + self.lamda)
        weights = tf.cast(weights, tf.float32)
        return combine(grads[0], weights), weights

    def aggregate(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError("sdmgrad draws three batches per update: see aggregate_samples")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, SDMGradConfig)}
