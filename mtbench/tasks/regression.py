"""The ``regression`` task kind: real-valued targets, standardised for training."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mtbench.tasks import Metric, TaskError, TaskKind, TaskSpec


@dataclass
class RegressionOptions:
    """Options of the ``regression`` kind.

    Attributes:
        loss: ``mse``, ``l1`` or ``huber`` (on standardised targets).
        huber_delta: Huber's delta, in standard deviations of the target.
        standardize: Train on targets standardised with the training split's mean and deviation
            (undone for reporting: metrics are in the target's own unit).
        units: The unit of each target, for reports (e.g. ``["eV"]``).
    """

    loss: Literal["mse", "l1", "huber"] = "mse"
    huber_delta: float = 1.0
    standardize: bool = True
    units: list[str] = field(default_factory=list)


class Regression(TaskKind):
    """Real-valued targets: ``label_shape=()`` for one, ``(K,)`` for K (NaN: missing).

    Metrics, in the target's own unit, lower is better: MAE (primary) and RMSE, each averaged over
    the K targets (and reported per target as ``mae/<name>`` when K > 1; ``class_names`` names
    the targets).
    """

    label_dtype = "float"
    default_primary = "mae"

    def __init__(
        self,
        spec: TaskSpec,
        loss: str = "mse",
        huber_delta: float = 1.0,
        standardize: bool = True,
        units: Sequence[str] = (),
    ) -> None:
        super().__init__(spec)
        loss = getattr(loss, "value", loss)
        if loss not in ("mse", "l1", "huber"):
            raise TaskError(f"task '{spec.name}': loss={loss!r}; choose mse, l1 or huber")
        if huber_delta <= 0:
            raise TaskError(f"task '{spec.name}': huber_delta={huber_delta} must be > 0")
        if len(spec.label_shape) > 1:
            raise TaskError(
                f"task '{spec.name}' (regression) needs label_shape () or (K,), got "
                f"{spec.label_shape}"
            )
        self.targets = int(spec.label_shape[0]) if spec.label_shape else 1
        units = list(units)
        if units and len(units) not in (1, self.targets):
            raise TaskError(f"task '{spec.name}': {len(units)} units for {self.targets} targets")
        self.units = units * self.targets if len(units) == 1 else units
        self.loss_name = loss
        self.huber_delta = float(huber_delta)
        self.standardize = bool(standardize)
        self.mean = np.zeros(self.targets)
        self.std = np.ones(self.targets)

    @property
    def unit(self) -> str:
        distinct = sorted(set(self.units))
        return distinct[0] if len(distinct) == 1 else ("mixed" if distinct else "target unit")

    @property
    def target_names(self) -> list[str]:
        names = list(self.spec.class_names)
        return names if len(names) == self.targets else [str(i) for i in range(self.targets)]

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.targets,)

    @property
    def metrics(self) -> tuple[Metric, ...]:
        metrics = [
            Metric("mae", self.unit, False, "mean absolute error"),
            Metric("rmse", self.unit, False, "root mean squared error"),
        ]
        if self.targets > 1:
            for name, unit in zip(
                self.target_names, self.units or [""] * self.targets, strict=True
            ):
                metrics.append(
                    Metric(f"mae/{name}", unit or "target unit", False, f"MAE of {name}")
                )
        return tuple(metrics)

    def check_labels(self, labels: np.ndarray, split: str) -> None:
        super().check_labels(labels, split)
        values = np.asarray(labels, np.float64)
        if np.isinf(values).any():
            raise TaskError(
                f"task '{self.name}' (regression): the {split} targets hold infinite values; "
                "mark a missing target with NaN"
            )

    def fit(self, labels: np.ndarray) -> None:
        values = np.asarray(labels, np.float64).reshape(len(labels), self.targets)
        if not self.standardize:
            return
        with np.errstate(invalid="ignore"):
            mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
        if np.isnan(mean).any():
            raise TaskError(f"task '{self.name}': a target has no labelled training example")
        self.mean, self.std = mean, np.where(std > 0, std, 1.0)

    def encode(self, labels: np.ndarray) -> np.ndarray:
        values = np.asarray(labels, np.float64).reshape(len(labels), self.targets)
        scaled = (values - self.mean) / self.std
        return np.nan_to_num(scaled, nan=0.0).astype(np.float32)

    def element_labelled(self, labels: np.ndarray) -> np.ndarray:
        return ~np.isnan(np.asarray(labels, np.float64).reshape(len(labels), self.targets))

    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        values = np.asarray(outputs, np.float64).reshape(len(outputs), self.targets)
        restored = values * self.std + self.mean
        return restored.reshape(len(outputs), *self.spec.label_shape)

    def evaluate(self, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        truth = np.asarray(labels, np.float64).reshape(len(labels), self.targets)
        predicted = self.predictions(outputs).reshape(len(outputs), self.targets)
        present = ~np.isnan(truth)
        if not present.any():
            return {m.name: float("nan") for m in self.metrics}
        errors = np.where(present, predicted - np.nan_to_num(truth), np.nan)
        with np.errstate(invalid="ignore"):
            mae = np.nanmean(np.abs(errors), axis=0)
            rmse = np.sqrt(np.nanmean(errors**2, axis=0))
        result = {"mae": float(np.nanmean(mae)), "rmse": float(np.nanmean(rmse))}
        if self.targets > 1:
            result |= {f"mae/{n}": float(v) for n, v in zip(self.target_names, mae, strict=True)}
        return result

    def loss(self, labels: Any, outputs: Any, present: Any) -> Any:
        import tensorflow as tf

        error = tf.reshape(outputs, tf.shape(labels)) - labels
        if self.loss_name == "mse":
            per_target = tf.square(error)
        elif self.loss_name == "l1":
            per_target = tf.abs(error)
        else:
            delta = self.huber_delta
            magnitude = tf.abs(error)
            per_target = tf.where(
                magnitude <= delta, 0.5 * tf.square(error), delta * (magnitude - 0.5 * delta)
            )
        weights = tf.cast(present, tf.float32)
        return tf.reduce_sum(per_target * weights, axis=1) / tf.maximum(
            tf.reduce_sum(weights, axis=1), 1.0
        )
