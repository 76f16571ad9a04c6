"""The ``multilabel`` task kind: independent binary labels per example."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mtbench.tasks import MISSING_CLASS, Metric, TaskError, TaskKind, TaskSpec


@dataclass
class MultilabelOptions:
    """Options of the ``multilabel`` kind.

    Attributes:
        threshold: Probability above which a label is predicted present.
    """

    threshold: float = 0.5


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision of one binary label: the mean of the precision at each positive's rank
    (ties ordered by score only, as scikit-learn's ``average_precision_score``)."""
    positives = labels.sum()
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, hits = scores[order], labels[order].astype(np.float64)
    # group tied scores: precision is evaluated at the end of each tie group
    ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(sorted_scores) - 1]
    cum_hits = np.cumsum(hits)[ends]
    precision = cum_hits / (ends + 1)
    recall_step = np.diff(np.r_[0.0, cum_hits]) / positives
    return float(np.sum(precision * recall_step))


class Multilabel(TaskKind):
    """Independent binary labels per example: ``label_shape=(K,)``, values 0/1 (``-1``: missing;
    an example counts as labelled when any of its K labels is present).

    Loss: sigmoid cross-entropy averaged over the example's present labels. Metrics: mean accuracy
    over labels (primary), macro F1 over labels, mean average precision (labels with a positive),
    all higher-is-better fractions.
    """

    default_primary = "mean_accuracy"

    def __init__(self, spec: TaskSpec, threshold: float = 0.5) -> None:
        super().__init__(spec)
        if len(spec.label_shape) != 1:
            raise TaskError(
                f"task '{spec.name}' (multilabel) needs label_shape=(K,), got {spec.label_shape}"
            )
        if spec.num_classes not in (None, spec.label_shape[0]):
            raise TaskError(
                f"task '{spec.name}' (multilabel): num_classes={spec.num_classes} differs from "
                f"label_shape={spec.label_shape}"
            )
        if not 0 < threshold < 1:
            raise TaskError(f"task '{spec.name}': threshold={threshold} must be in (0, 1)")
        self.threshold = float(threshold)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (int(self.spec.label_shape[0]),)

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return (
            Metric("mean_accuracy", "fraction", True, "accuracy averaged over labels"),
            Metric("macro_f1", "fraction", True, "F1 averaged over labels"),
            Metric("mean_average_precision", "fraction", True, "AP averaged over labels"),
        )

    def check_labels(self, labels: np.ndarray, split: str) -> None:
        super().check_labels(labels, split)
        values = np.unique(labels)
        if not set(values.tolist()) <= {0, 1, MISSING_CLASS}:
            raise TaskError(
                f"task '{self.name}' (multilabel): {split} labels hold {values[:8].tolist()}; "
                f"each must be 0 or 1 ({MISSING_CLASS}: missing)"
            )

    def evaluate(self, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        labels = np.asarray(labels)
        present = self.element_labelled(labels)
        if not present.any():
            return {m.name: float("nan") for m in self.metrics}
        predicted = (outputs > math.log(self.threshold / (1 - self.threshold))).astype(np.int64)
        accuracies, f1s, aps = [], [], []
        for j in range(labels.shape[1]):
            keep = present[:, j]
            if not keep.any():
                continue
            y, p, s = labels[keep, j], predicted[keep, j], outputs[keep, j]
            accuracies.append(np.mean(p == y))
            tp = np.sum((p == 1) & (y == 1))
            denominator = np.sum(p == 1) + np.sum(y == 1)
            f1s.append(2 * tp / denominator if denominator else 0.0)
            ap = average_precision(s, y)
            if not np.isnan(ap):
                aps.append(ap)
        return {
            "mean_accuracy": float(np.mean(accuracies)),
            "macro_f1": float(np.mean(f1s)),
            "mean_average_precision": float(np.mean(aps)) if aps else float("nan"),
        }

    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        return (outputs > math.log(self.threshold / (1 - self.threshold))).astype(np.int8)

    def loss(self, labels: Any, outputs: Any, present: Any) -> Any:
        import tensorflow as tf

        per_label = tf.nn.sigmoid_cross_entropy_with_logits(tf.cast(labels, tf.float32), outputs)
        weights = tf.cast(present, tf.float32)
        return tf.reduce_sum(per_label * weights, axis=1) / tf.maximum(
            tf.reduce_sum(weights, axis=1), 1.0
        )
