"""The ``stch`` weighting: smooth Tchebycheff scalarisation of the log-normalised task losses."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from mtbench.weighting import LossWeighting

from .common import check_range, options_of, state
from .options import SmoothTchebycheffConfig

EPSILON = 1e-20  # added inside every logarithm, as in the reference code


class SmoothTchebycheff(LossWeighting):
    """Smooth Tchebycheff scalarisation: Lin, Zhang, Zhang, Liu, Zhang and Zhang, "Smooth
    Tchebycheff Scalarization for Multi-Objective Optimization", ICML 2024, in the multitask form
    of the authors' code (LibMTL's ``weighting/STCH.py``, the same file as the authors'
    ``STCH_MTL``).

    The paper's smooth Tchebycheff function ``mu log sum_t exp(lambda_t (f_t - z_t) / mu)`` is
    applied to the log losses, with ``lambda_t = 1``, the reference point ``z_t = log N_t`` and a
    factor ``T`` (the number of tasks)::

        l_t = log(L_t / N_t + eps),   objective = T mu log sum_t exp((l_t - max_s l_s) / mu)

    (``eps = 1e-20``; ``max_s l_s`` is held constant, it only shifts the value). The model feels
    ``w_t = T softmax(l / mu)_t / (L_t + eps N_t)``, which are the logged weights: a task
    far above its reference ``N_t`` (relative to the others) gets most of the weight. As
    ``mu -> 0`` the unshifted ``T mu log sum_t exp(l_t / mu)`` approaches the Tchebycheff
    scalarisation ``T max_t l_t`` (all weight on the worst task); as ``mu -> inf`` the weights
    approach ``1 / L_t``, the gradient of ``sum_t log L_t``. The paper's bound
    ``max_t l_t <= mu log sum_t exp(l_t / mu) <= max_t l_t + mu log T`` puts the objective in
    ``[0, T mu log T]``.

    ``N`` (the reference code's ``nadir_vector``) is each task's mean training loss over epoch
    ``warmup_epochs + 1``, passed by the trainer through :meth:`on_epoch_end` and kept in the
    layer's weights (so it is checkpointed). Until it is known (the first ``warmup_epochs + 1``
    epochs) the objective is ``sum_t log(L_t + eps)`` with weights ``1 / (L_t + eps)``. A run
    shorter than ``warmup_epochs + 2`` epochs never reaches STCH proper.

    Differences from the reference code: it logs weights of 1 in every phase; mtbench logs the
    effective weights ``d objective / d L_t``. The reference averages the batch losses of the
    nadir epoch itself; mtbench uses the trainer's epoch mean of the same batches (a step skipped
    as non-finite counts as zero there). As in the reference, a loss that is exactly 0 (a float32
    cross-entropy of a fully saturated batch) gets a weight near ``1e20``.

    Example:
        ``python -m mtbench weighting=stch weighting.mu=0.5 weighting.warmup_epochs=2``
    """

    def __init__(self, mu: float = 1.0, warmup_epochs: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_range("mu", mu, 0.0, low_open=True)
        check_range("warmup_epochs", warmup_epochs, 0)
        if int(warmup_epochs) != warmup_epochs:
            raise ValueError(f"weighting.warmup_epochs={warmup_epochs!r}; use a whole number")
        self.mu, self.warmup_epochs = float(mu), int(warmup_epochs)

    def build_state(self, num_tasks: int) -> None:
        self.nadir = state(self, "nadir", (num_tasks,), "ones")
        self.epochs_seen = state(self, "epochs_seen")

    def on_epoch_end(self, epoch: int, mean_losses: np.ndarray) -> None:
        self.epochs_seen.assign_add(1.0)
        latest = tf.constant(np.asarray(mean_losses, np.float32))
        is_nadir_epoch = tf.equal(self.epochs_seen, float(self.warmup_epochs + 1))
        self.nadir.assign(tf.where(is_nadir_epoch, latest, self.nadir))

    def combine(self, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        warm_objective = tf.reduce_sum(tf.math.log(losses + EPSILON))
        objective = tf.where(self._started(), self._stch_objective(losses), warm_objective)
        return objective, self.loss_weights(losses)

    def loss_weights(self, losses: tf.Tensor) -> tf.Tensor:
        nadir = tf.convert_to_tensor(self.nadir)
        count = tf.cast(tf.size(losses), losses.dtype)
        log_ratio = tf.math.log(losses / nadir + EPSILON)
        stch = count * tf.nn.softmax(log_ratio / self.mu) / (losses + EPSILON * nadir)
        return tf.stop_gradient(tf.where(self._started(), stch, 1.0 / (losses + EPSILON)))

    def _started(self) -> tf.Tensor:
        """Whether the nadir point is known (STCH proper), a boolean scalar."""
        return self.epochs_seen >= float(self.warmup_epochs + 1)

    def _stch_objective(self, losses: tf.Tensor) -> tf.Tensor:
        count = tf.cast(tf.size(losses), losses.dtype)
        log_ratio = tf.math.log(losses / tf.convert_to_tensor(self.nadir) + EPSILON)
        shifted = log_ratio - tf.stop_gradient(tf.reduce_max(log_ratio))
        return self.mu * tf.math.log(tf.reduce_sum(tf.exp(shifted / self.mu))) * count

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, SmoothTchebycheffConfig)}
