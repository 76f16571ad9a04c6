"""The ``config`` weighting: ConFIG, the conflict-free direction of the unit task gradients."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from mtbench.weighting import GradientWeighting

from .common import combine, gramian, options_of, safe_divide
from .dualproj import check_preference, preference_vector
from .options import ConFIGConfig

# Eigenvalues of the cosine matrix below this share of the largest are taken as zero in its
# pseudo-inverse: unit gradients at angles below about 1e-6 rad count as parallel (the float64
# Gram matrix resolves cosines to about 1e-15).
RCOND = 1e-12


class ConFIG(GradientWeighting):
    """ConFIG: Liu, Chu and Thuerey, "ConFIG: Towards Conflict-free Training of Physics Informed
    Neural Networks", ICLR 2025 (arXiv 2408.11104, 2024; Eq. 2, the authors'
    ``conflictfree/grad_operator.py`` ``ConFIG_update`` with its default equal weights and
    projection length, and torchjd's ``src/torchjd/aggregation/_config.py``).

    With the unit gradients ``u_t = g_t / |g_t|`` as the rows of ``U`` (a zero gradient gives a
    zero row), the direction is ``d = U^+ w`` (``w = 1``, or the ``preference``): the shortest
    vector with equal projections ``<u_t, d> = 1`` on every unit gradient, so it conflicts with
    none of them where the gradients are linearly independent. The update is
    ``(sum_t <g_t, d/|d|>) d/|d|``: its length is the sum of the gradients' projections on it.

    Computed on the Gram matrix, in float64: ``U^+ w = U' C^+ w`` with ``C`` the cosine matrix,
    so the update is ``sum_t a_t g_t`` and the logged weights are the coefficients ``a``.
    Eigenvalues of ``C`` below ``1e-12`` of the largest are dropped (the references take the
    pseudo-inverse, or a least-squares solve, of the float32 ``[T, P]`` matrix ``U`` with
    their libraries' default cut-offs). Where every gradient is zero the update is zero.

    Example:
        ``python -m mtbench weighting=config``
    """

    def __init__(self, preference: Mapping[str, float] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.preference = check_preference(preference)

    def build_state(self, num_tasks: int) -> None:
        self._wanted = preference_vector(self.preference, self.tasks)

    def aggregate(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        weights = config_weights(gramian(grads), tf.constant(self._wanted, tf.float64))
        return combine(grads, weights), tf.cast(weights, tf.float32)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, ConFIGConfig)}


def config_weights(gram: tf.Tensor, wanted: tf.Tensor) -> tf.Tensor:
    """The coefficients ``a`` of ConFIG's update ``sum_t a_t g_t`` (float64 ``[T]``)."""
    gram = tf.cast(gram, tf.float64)
    scale = tf.reduce_mean(tf.linalg.diag_part(gram))
    gram = gram / tf.where(scale > 0.0, scale, 1.0)  # so the guards below are relative
    norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
    inverse = safe_divide(tf.ones_like(norms), norms)  # 0 for a zero gradient
    cosines = gram * inverse[:, None] * inverse[None, :]
    c = tf.linalg.matvec(tf.linalg.pinv(cosines, rcond=RCOND), tf.cast(wanted, tf.float64))
    direction = c * inverse  # d = U'c = sum_t (c_t / |g_t|) g_t
    along = tf.linalg.matvec(gram, direction)  # <g_t, d>
    length2 = tf.reduce_sum(direction * along)  # |d|^2
    # the length of the update over |d|: (sum_t <g_t, d> / |d|) / |d|
    factor = safe_divide(tf.reduce_sum(along), length2)
    return factor * direction
