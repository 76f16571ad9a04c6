"""The ``dualproj`` weighting: the mean gradient projected onto the dual cone of the gradients."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtbench.weighting import GradientWeighting

from .common import check_range, combine, gramian, options_of
from .options import DualProjConfig
from .solvers import nonnegative_qp


class DualProj(GradientWeighting):
    """DualProj: the projection of Lopez-Paz and Ranzato, "Gradient Episodic Memory for Continual
    Learning", NeurIPS 2017 (Eq. 11, solved through its dual), applied to all task gradients as
    in torchjd
    (Quinton and Rey, "Jacobian Descent for Multi-Objective Optimization", 2024;
    ``src/torchjd/aggregation/_dualproj.py``).

    The mean gradient ``J'u`` (``u = 1/T``, or ``p / T`` with a ``preference``) is projected
    onto the dual cone of the task gradients, ``{d : <g_t, d> >= 0 for every t}``, the
    directions that conflict with none of them. By GEM's dual (Proposition 1 of Quinton and Rey)
    the projection is ``J'w`` with ``w = argmin_{v >= u} v'Gv``; ``G`` is the Gram matrix divided
    by its trace (zero below ``norm_eps``) plus ``reg_eps`` times the identity, as in the
    reference. Where no two gradients conflict, the update is the mean gradient. The logged
    weights are ``w``. As in the reference, ``norm_eps`` is absolute: gradients whose squared
    norms sum to less than it are not projected (the update is the mean gradient), and
    ``reg_eps`` lets a projected update conflict slightly, ``<g_t, d> >= -reg_eps tr(G) w_t``.

    The box-constrained quadratic program is solved exactly in the graph, in float64, by the
    active-set solver of :mod:`.solvers` (the reference calls quadprog).

    Example:
        ``python -m mtbench weighting=dualproj +weighting.preference.fine=2.0``
    """

    def __init__(
        self,
        preference: Mapping[str, float] | None = None,
        norm_eps: float = 1e-4,
        reg_eps: float = 1e-4,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.preference = check_preference(preference)
        check_range("norm_eps", norm_eps, 0.0)
        check_range("reg_eps", reg_eps, 0.0, low_open=True)
        self.norm_eps, self.reg_eps = float(norm_eps), float(reg_eps)

    def build_state(self, num_tasks: int) -> None:
        self._projected = [p / num_tasks for p in preference_vector(self.preference, self.tasks)]

    def aggregate(self, grads: tf.Tensor, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        weights = self.weights_from_gram(gramian(grads))
        return combine(grads, weights), tf.cast(weights, tf.float32)

    def weights_from_gram(self, gram: tf.Tensor) -> tf.Tensor:
        """``w = argmin_{v >= u} v'Gv`` (float64 ``[T]``)."""
        return project_weights(
            gram, tf.constant(self._projected, tf.float64), self.norm_eps, self.reg_eps
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, DualProjConfig)}


def project_weights(
    gram: tf.Tensor, lower: tf.Tensor, norm_eps: float, reg_eps: float
) -> tf.Tensor:
    """``argmin_{v >= lower} v'Gv`` on the trace-normalised, regularised Gram matrix, float64.

    With ``v = lower + z`` this is ``argmin_{z >= 0} z'Gz / 2 + (G lower)'z``.
    """
    num_tasks = gram.shape[0]
    gram = tf.cast(gram, tf.float64)
    trace = tf.linalg.trace(gram)
    normalized = tf.where(
        trace < norm_eps, tf.zeros_like(gram), gram / tf.where(trace > 0.0, trace, 1.0)
    )
    regularized = normalized + reg_eps * tf.eye(num_tasks, dtype=tf.float64)
    linear = tf.linalg.matvec(regularized, lower)
    shift = nonnegative_qp(regularized[None], linear[None], on_simplex=False)[0]
    return lower + shift


# ------------------------------------------------------------------ per-task preference option
def check_preference(preference: Any, key: str = "preference") -> dict[str, float]:
    """The option as a plain dict; ``ValueError`` naming ``weighting.<key>`` unless it maps task
    names to finite weights >= 0."""
    if preference is None:
        return {}
    valid = isinstance(preference, Mapping) and all(
        isinstance(name, str)
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
        for name, value in preference.items()
    )
    if not valid:
        raise ValueError(
            f"weighting.{key}={preference!r}; map task names to weights >= 0, "
            f"e.g. {{fine: 2.0}} (tasks not listed: 1)"
        )
    return {str(name): float(value) for name, value in preference.items()}


def preference_vector(
    preference: Mapping[str, float], tasks: Sequence[str], key: str = "preference"
) -> list[float]:
    """``p_t`` in the order of ``tasks`` (1 where not named); refuses names of no task."""
    unknown = sorted(set(preference) - set(tasks))
    if unknown:
        raise ValueError(
            f"weighting.{key} names tasks {unknown} that this run does not train; "
            f"its tasks are {list(tasks)}"
        )
    return [preference.get(task, 1.0) for task in tasks]
