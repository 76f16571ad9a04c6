"""The ``ordinal`` task kind: K ordered classes, predicted through K - 1 cumulative logits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from mtbench.tasks import MISSING_CLASS, Metric, TaskError, TaskKind, TaskSpec


class Ordinal(TaskKind):
    """Ordinal regression in the cumulative-link style of CORAL (Cao, Mirjalili and Raschka 2020).

    A label is one class index ``0..K-1`` of K ordered classes (``-1``: missing;
    ``TaskSpec("grade", 5, kind="ordinal")``). The head outputs K - 1 logits per example, the
    k-th that of ``P(y > k)``. The loss is the sum over the thresholds of the binary
    cross-entropy of ``y > k`` against the k-th logit (each weighted by ``threshold_weights``).
    The predicted class is the number of thresholds whose probability exceeds 1/2 (logit > 0);
    a linear head does not force the K - 1 probabilities to decrease with k, and counting them
    stays a class in ``0..K-1`` when they do not.

    Metrics: ``mae``, the mean absolute error in classes (lower is better, primary), and
    ``accuracy``, the fraction of exactly predicted classes (higher is better).

    Args:
        spec: The task; ``num_classes`` >= 2, ``label_shape`` ``()``.
        threshold_weights: K - 1 non-negative weights of the thresholds' cross-entropies, not
            all zero (empty: 1 each).

    Example:
        >>> from mtbench.tasks import task_kind
        >>> kind = task_kind(TaskSpec("grade", 5, kind="ordinal"))
        >>> kind.output_shape, kind.predictions(np.array([[3.0, 1.0, -2.0, -4.0]]))
        ((4,), array([2]))
    """

    label_dtype = "int"
    default_primary = "mae"

    def __init__(self, spec: TaskSpec, threshold_weights: Sequence[float] = ()) -> None:
        super().__init__(spec)
        if not spec.num_classes or spec.num_classes < 2:
            raise TaskError(
                f"task '{spec.name}' (ordinal) needs num_classes >= 2 ordered classes, got "
                f"{spec.num_classes}"
            )
        if spec.label_shape:
            raise TaskError(
                f"task '{spec.name}' (ordinal) takes one class index per example "
                f"(label_shape ()), got label_shape={spec.label_shape}"
            )
        self.num_classes = int(spec.num_classes)
        self.thresholds = self.num_classes - 1
        weights = [float(w) for w in threshold_weights] or [1.0] * self.thresholds
        if len(weights) != self.thresholds:
            raise TaskError(
                f"task '{spec.name}' (ordinal): threshold_weights has {len(weights)} entries; "
                f"{self.num_classes} classes have {self.thresholds} thresholds (give one weight "
                "per threshold, or none for 1 each)"
            )
        if min(weights) < 0 or not sum(weights) > 0:
            raise TaskError(
                f"task '{spec.name}' (ordinal): threshold_weights={weights} must be >= 0 and not "
                "all zero"
            )
        self.threshold_weights = np.asarray(weights, np.float32)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.thresholds,)

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return (
            Metric("mae", "classes", False, "mean absolute error of the predicted class"),
            Metric("accuracy", "fraction", True, "fraction of exactly predicted classes"),
        )

    def check_labels(self, labels: np.ndarray, split: str) -> None:
        super().check_labels(labels, split)
        labels = np.asarray(labels)
        present = labels[labels != MISSING_CLASS]
        if present.size and (present.min() < 0 or present.max() >= self.num_classes):
            raise TaskError(
                f"task '{self.name}' (ordinal): {split} labels range over [{present.min()}, "
                f"{present.max()}]; the task has {self.num_classes} ordered classes (0.."
                f"{self.num_classes - 1}; {MISSING_CLASS} marks a missing label)"
            )

    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        logits = np.asarray(outputs, np.float64).reshape(len(outputs), self.thresholds)
        return np.sum(logits > 0.0, axis=1).astype(np.int64)  # sigmoid(logit) > 1/2

    def evaluate(self, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        labels = np.asarray(labels)
        keep = self.labelled(labels)
        if not keep.any():
            return {m.name: float("nan") for m in self.metrics}
        predicted = self.predictions(np.asarray(outputs)[keep])
        truth = labels[keep].astype(np.int64)
        return {
            "mae": float(np.mean(np.abs(predicted - truth))),
            "accuracy": float(np.mean(predicted == truth)),
        }

    def loss(self, labels: Any, outputs: Any, present: Any) -> Any:
        import tensorflow as tf

        logits = tf.cast(tf.reshape(outputs, [-1, self.thresholds]), tf.float32)
        ranks = tf.range(self.thresholds, dtype=tf.int32)
        above = tf.cast(tf.cast(labels, tf.int32)[:, None] > ranks[None, :], tf.float32)
        per_threshold = tf.nn.sigmoid_cross_entropy_with_logits(labels=above, logits=logits)
        return tf.reduce_sum(per_threshold * tf.constant(self.threshold_weights), axis=1)
