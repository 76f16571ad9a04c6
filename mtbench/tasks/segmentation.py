"""The ``segmentation`` task kind: a class per element of an array label (per pixel)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mtbench.tasks import MISSING_CLASS, Metric, TaskError, TaskKind, TaskSpec, check_class_range


@dataclass
class SegmentationOptions:
    """Options of the ``segmentation`` kind (none yet)."""


class Segmentation(TaskKind):
    """A class per element of an array label (``label_shape=(H, W)``: a class map per image;
    ``-1``: an unlabelled pixel). The head outputs ``(H, W, num_classes)`` logits.

    Loss: cross-entropy averaged over the example's labelled pixels. Metrics: mean intersection
    over union over classes present in labels or predictions (primary) and pixel accuracy.
    """

    default_primary = "mean_iou"

    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        if not spec.label_shape:
            raise TaskError(f"task '{spec.name}' (segmentation) needs label_shape=(H, W, ...)")
        if not spec.num_classes or spec.num_classes < 2:
            raise TaskError(f"task '{spec.name}' (segmentation) needs num_classes >= 2")
        self.num_classes = int(spec.num_classes)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (*self.spec.label_shape, self.num_classes)

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return (
            Metric("mean_iou", "fraction", True, "intersection over union averaged over classes"),
            Metric("pixel_accuracy", "fraction", True, "fraction of labelled pixels right"),
        )

    def check_labels(self, labels: np.ndarray, split: str) -> None:
        super().check_labels(labels, split)
        check_class_range(self.name, labels, self.num_classes, split)

    def evaluate(self, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        labels = np.asarray(labels)
        predicted = np.argmax(outputs, axis=-1)
        keep = labels != MISSING_CLASS
        if not keep.any():
            return {m.name: float("nan") for m in self.metrics}
        y, p = labels[keep].astype(np.int64), predicted[keep]
        confusion = np.bincount(y * self.num_classes + p, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )
        intersection = np.diag(confusion).astype(np.float64)
        union = confusion.sum(0) + confusion.sum(1) - intersection
        seen = union > 0
        return {
            "mean_iou": float(np.mean(intersection[seen] / union[seen])),
            "pixel_accuracy": float(np.mean(y == p)),
        }

    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        return np.argmax(outputs, axis=-1).astype(np.int16)

    def loss(self, labels: Any, outputs: Any, present: Any) -> Any:
        import tensorflow as tf

        per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, outputs)
        weights = tf.cast(present, tf.float32)
        axes = list(range(1, len(self.spec.label_shape) + 1))
        return tf.reduce_sum(per_pixel * weights, axis=axes) / tf.maximum(
            tf.reduce_sum(weights, axis=axes), 1.0
        )
