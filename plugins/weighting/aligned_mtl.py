"""The ``aligned_mtl`` weighting: aligning the task gradients' principal components."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from mtbench.weighting import GradientWeighting

from .common import choice, combine, gramian, options_of
from .options import AlignedMTLConfig, ScaleMode

FLOAT32_EPSILON = 1.1920929e-07  # the reference's rank tolerance uses float32's epsilon


class AlignedMTL(GradientWeighting):
    """Aligned-MTL: Senushkin, Patakin, Kuznetsov and Konushin, "Independent Component Alignment
    for Multi-Task Learning", CVPR 2023.

    With the Gram matrix ``G = V diag(lambda) V'`` (rank r; eigenvalues at most
    ``max(lambda) T eps`` are dropped), the gradient matrix is whitened to condition number one:
    ``B = sigma V_r diag(lambda_r)^(-1/2) V_r'`` with ``sigma^2`` the smallest kept eigenvalue
    (``scale_mode=min``). The aligned gradients ``B g`` are orthogonal with equal norms ``sigma``
    on the gradients' span, and the update is their sum, ``sum_t (B 1)_t g_t``; the logged
    weights are ``B 1``.

    Against the references: the sum and the cut-off ``eps`` (float32's machine epsilon) follow
    LibMTL and the authors' code; torchjd's ``AlignedMTL`` averages the aligned gradients (an
    update ``T`` times smaller) and takes ``eps`` of the input's dtype (float64 input keeps
    eigenvalues that float32's epsilon drops). ``tests/test_weighting_crosscheck.py`` compares
    after converting both.

    Example:
        ``python -m mtbench weighting=aligned_mtl weighting.scale_mode=median``
    """

    def __init__(self, scale_mode: ScaleMode | str = "min", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale_mode = choice("scale_mode", scale_mode, ScaleMode)

    def aggregate(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        weights = tf.reduce_sum(self.alignment(gramian(grads)), axis=1)
        return combine(grads, weights), tf.cast(weights, tf.float32)

    def alignment(self, gram: tf.Tensor) -> tf.Tensor:
        """The symmetric ``[T, T]`` matrix ``B``: row t holds aligned gradient t's coefficients
        (float64; the eigenvalues and the rank decision need the float64 Gram matrix: near the
        threshold a float32 one rounds the smallest eigenvalue across it)."""
        num_tasks = gram.shape[0]
        eigenvalues, vectors = tf.linalg.eigh(tf.cast(gram, tf.float64))
        tolerance = tf.reduce_max(eigenvalues) * num_tasks * FLOAT32_EPSILON
        kept = eigenvalues > tolerance
        count = tf.reduce_sum(tf.cast(kept, tf.int32))
        ascending = tf.sort(tf.where(kept, eigenvalues, tf.reduce_max(eigenvalues) + 1.0))
        if self.scale_mode == "min":
            sigma2 = ascending[0]
        elif self.scale_mode == "median":  # the lower median, as torch.median
            sigma2 = tf.gather(ascending, tf.maximum(count - 1, 0) // 2)
        else:
            total = tf.reduce_sum(tf.where(kept, eigenvalues, tf.zeros_like(eigenvalues)))
            sigma2 = total / tf.cast(tf.maximum(count, 1), tf.float64)
        inverse = tf.where(kept, tf.math.rsqrt(tf.where(kept, eigenvalues, 1.0)), 0.0)
        whitening = tf.matmul(vectors * inverse[None, :], vectors, transpose_b=True)
        b = tf.sqrt(tf.maximum(sigma2, 0.0)) * whitening
        return tf.where(count > 0, b, tf.zeros_like(b))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, AlignedMTLConfig)}
