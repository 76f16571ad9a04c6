"""The ``cr_mogm`` weighting: MGDA's weights smoothed by an exponential moving average."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from mtbench.weighting import GradientWeighting

from .common import check_range, combine, gramian, options_of, state
from .options import CRMOGMConfig
from .solvers import min_norm_weights


class CRMOGM(GradientWeighting):
    """CR-MOGM: Zhou, Zhang, Jiang, Zhong, Gu and Zhu, "On the Convergence of Stochastic
    Multi-Objective Gradient Manipulation and Beyond", NeurIPS 2022, with MGDA (Sener and Koltun
    2018) as the gradient manipulation.

    Weights computed from one mini-batch's gradients alone make stochastic gradient manipulation
    biased, and it can fail to converge; the paper averages them over steps instead:
    ``lambda_k = alpha lambda_{k-1} + (1 - alpha) lambda_hat_k``, with ``lambda_hat_k`` the
    min-norm (MGDA) weights of step k's gradients, and the update is ``sum_t lambda_k,t g_t``.
    The first step uses ``lambda_1 = lambda_hat_1``. The smoothed weights and a step counter
    are layer weights, so a checkpoint holds them.

    No reference code of the authors is public; this follows the paper's description as torchjd
    states it (``CRMOGMWeighting``, with the same convention for ``alpha`` and the first step).
    torchjd reads the paper's Corollary 1 as letting ``alpha_k`` grow towards 1 as the learning
    rate decays; mtbench, like torchjd's default, keeps it constant. LibMOON's ``CRMOGMCore``
    adapts it instead, ``alpha_k = max(0, 1 - k |lambda_hat_k - lambda_{k-1}|_1)``; that is not
    done here.

    Example:
        ``python -m mtbench weighting=cr_mogm weighting.alpha=0.9``
    """

    def __init__(self, alpha: float = 0.9, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_range("alpha", alpha, 0.0, 1.0)
        self.alpha = float(alpha)

    def build_state(self, num_tasks: int) -> None:
        self.smoothed = state(self, "smoothed_weights", (num_tasks,), "zeros")
        self.steps = state(self, "steps", dtype="int64")

    def aggregate(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        fresh = min_norm_weights(gramian(grads))
        weights = self.smooth(fresh)
        return combine(grads, weights), weights

    def smooth(self, fresh: tf.Tensor) -> tf.Tensor:
        """One step of the moving average of the weights ``fresh`` (float32 ``[T]``)."""
        previous = tf.convert_to_tensor(self.smoothed)
        averaged = self.alpha * previous + (1.0 - self.alpha) * fresh
        weights = tf.where(tf.convert_to_tensor(self.steps) > 0, averaged, fresh)
        self.smoothed.assign(weights)
        self.steps.assign_add(1)
        return weights

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, CRMOGMConfig)}
