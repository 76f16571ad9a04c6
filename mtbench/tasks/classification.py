"""The ``classification`` task kind: one class per example."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mtbench.tasks import Metric, TaskError, TaskKind, TaskSpec, check_class_range


@dataclass
class ClassificationOptions:
    """Options of the ``classification`` kind.

    Attributes:
        label_smoothing: Cross-entropy label smoothing (``null``: the trainer's
            ``trainer.label_smoothing``).
        top_k: The k of the top-k accuracy reported besides top-1 (only when the task has more
            than k classes; 0: none).
    """

    label_smoothing: float | None = None
    top_k: int = 5


def _top_k(outputs: np.ndarray, labels: np.ndarray, k: int) -> float:
    top = np.argpartition(-outputs, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def macro_f1(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Unweighted mean over classes of F1 (classes absent from both labels and predictions are
    left out, as scikit-learn's ``f1_score(average="macro")`` with ``zero_division=0`` on the
    classes present)."""
    predicted, labels = predicted.ravel(), labels.ravel()
    tp = np.bincount(labels[predicted == labels], minlength=num_classes).astype(np.float64)
    pred_count = np.bincount(predicted, minlength=num_classes).astype(np.float64)
    true_count = np.bincount(labels, minlength=num_classes).astype(np.float64)
    denominator = pred_count + true_count
    seen = denominator > 0
    if not seen.any():
        return float("nan")
    return float(np.mean(2 * tp[seen] / denominator[seen]))


class Classification(TaskKind):
    """Single-label classification: one class index per example (``-1``: missing).

    Loss: softmax cross-entropy with optional label smoothing. Metrics: top-1 accuracy (primary),
    top-k accuracy (k < classes), macro F1, all higher-is-better fractions.
    """

    default_primary = "accuracy"

    def __init__(
        self, spec: TaskSpec, label_smoothing: float | None = None, top_k: int = 5
    ) -> None:
        super().__init__(spec)
        if not spec.num_classes or spec.num_classes < 2:
            raise TaskError(
                f"task '{spec.name}' (classification) needs num_classes >= 2, got "
                f"{spec.num_classes}"
            )
        smoothing = 0.0 if label_smoothing is None else float(label_smoothing)
        if not 0 <= smoothing < 1:
            raise TaskError(f"task '{spec.name}': label_smoothing={smoothing} must be in [0, 1)")
        self.label_smoothing = smoothing
        self.top_k = int(top_k)
        self.num_classes = int(spec.num_classes)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (*self.spec.label_shape, self.num_classes)

    @property
    def metrics(self) -> tuple[Metric, ...]:
        metrics = [Metric("accuracy", "fraction", True, "top-1 accuracy")]
        if 0 < self.top_k < self.num_classes:
            metrics.append(
                Metric(f"top{self.top_k}_accuracy", "fraction", True, f"top-{self.top_k} accuracy")
            )
        metrics.append(Metric("macro_f1", "fraction", True, "F1 averaged over classes"))
        return tuple(metrics)

    def check_labels(self, labels: np.ndarray, split: str) -> None:
        super().check_labels(labels, split)
        check_class_range(self.name, labels, self.num_classes, split)

    def evaluate(self, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        labels = np.asarray(labels)
        keep = self.labelled(labels)
        outputs = outputs.reshape(len(outputs), -1, self.num_classes)[keep].reshape(
            -1, self.num_classes
        )
        labels = labels[keep].reshape(-1)
        if not len(labels):
            return {m.name: float("nan") for m in self.metrics}
        predicted = np.argmax(outputs, axis=1)
        result = {"accuracy": float(np.mean(predicted == labels))}
        if 0 < self.top_k < self.num_classes:
            result[f"top{self.top_k}_accuracy"] = _top_k(outputs, labels, self.top_k)
        result["macro_f1"] = macro_f1(predicted, labels.astype(np.int64), self.num_classes)
        return result

    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        return np.argmax(outputs, axis=-1)

    def loss(self, labels: Any, outputs: Any, present: Any) -> Any:
        import tensorflow as tf

        if not self.label_smoothing:
            return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, outputs)
        classes = tf.shape(outputs)[-1]
        target = tf.one_hot(labels, classes) * (1.0 - self.label_smoothing)
        target += self.label_smoothing / tf.cast(classes, tf.float32)
        return tf.nn.softmax_cross_entropy_with_logits(target, outputs)
