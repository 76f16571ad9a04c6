"""The ``mgda`` weighting: the multiple-gradient descent algorithm (min-norm point), and MGDA-UB."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from mtbench.weighting import GradientWeighting

from .common import check_choice, choice, combine, gramian, options_of
from .options import MGDAConfig, Normalization
from .solvers import min_norm_weights


class MGDA(GradientWeighting):
    """MGDA: Sener and Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018.

    The update is the min-norm point of the convex hull of the task gradients,
    ``sum_t a_t g_t`` with ``a = argmin_{a in simplex} |sum_t a_t g_t|^2``: a common descent
    direction for every task, or zero at a Pareto-stationary point. The weights ``a`` sum to 1.
    The quadratic program is solved exactly on the Gram matrix (see :mod:`.solvers`; the
    reference uses an approximate Frank-Wolfe solver).

    With ``upper_bound`` (MGDA-UB, Sec. 3.3) the gradients are those of the shared features,
    which bounds the parameter version from above and costs one backbone backward pass.

    Example:
        ``python -m mtbench weighting=mgda weighting.upper_bound=true``
    """

    def __init__(
        self,
        upper_bound: bool = False,
        normalization: Normalization | str = "none",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_choice("upper_bound", upper_bound, (False, True))
        self.upper_bound = bool(upper_bound)
        self.normalization = choice("normalization", normalization, Normalization)
        # an instance attribute: the trainer reads it from the instance
        self.gradient_of = "features" if self.upper_bound else "shared_parameters"

    def aggregate(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        gram = gramian(grads)
        scale = self._scale(gram, losses)
        weights = min_norm_weights(gram / (scale[:, None] * scale[None, :]))
        return combine(grads, weights), weights

    def _scale(self, gram: tf.Tensor, losses: tf.Tensor) -> tf.Tensor:
        """float64 ``[T]``, like the Gram matrix."""
        losses = tf.cast(losses, tf.float64)
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
        scale = {
            "none": tf.ones_like(losses),
            "l2": norms,
            "loss": losses,
            "loss+": losses * norms,
        }[self.normalization]
        return tf.where(scale > 0.0, scale, tf.ones_like(scale))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, MGDAConfig)}
