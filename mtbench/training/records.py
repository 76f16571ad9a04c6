"""What a fit produced: one :class:`EpochRecord` per epoch and the :class:`FitResult` around them,
and their plain-dict form (saved inside ``last.npz`` so that a resumed fit continues the record).

Timing rules (the same for every run):

- ``trace_seconds``: tracing and optimising the training function (a call that runs zero steps)
  and tracing the prediction function, before the clock starts.
- ``epoch_seconds[e]``: from the epoch's first touch of training data to the end of its last
  training step (results are read back, so no queued work is left uncounted).
- ``train_seconds``: the sum of ``epoch_seconds``; ``images_per_second``: training images
  processed divided by ``train_seconds``.
- ``eval_seconds``: validation after each epoch, measured apart from training.
- ``seconds_per_epoch``: ``train_seconds / steps * steps_per_epoch``, a rate, so that an epoch cut
  short by a time budget or a target is not averaged in as if it were whole.

Wall-clock seconds depend on what else the machine runs. Each epoch also records the process's
CPU seconds, the part of the machine other processes used meanwhile, its share (see
:func:`mtbench.hardware.machine_share`) and the load average, so that a run whose time was
inflated by other processes can be recognised (:mod:`mtbench.protocol` flags it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class EpochRecord:
    epoch: int
    train_loss: dict[str, float]
    weights: dict[str, float]
    val: dict[str, dict[str, float]]
    seconds: float
    steps: int
    train_seconds_so_far: float
    learning_rate: float
    skipped_steps: int = 0
    #: how much of the machine the epoch's training got (see :func:`hardware.machine_share`)
    cpu_seconds: float | None = None
    others_utilisation: float | None = None
    share: float | None = None
    cpu_utilisation: float | None = None
    load_average: float | None = None
    gpu_utilisation: float | None = None


@dataclass
class FitResult:
    """What training produced: per-epoch history, the selected epoch and the timings."""

    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_val: dict[str, dict[str, float]] = field(default_factory=dict)
    best_score: float | None = None  #: the selection score of the best epoch
    trace_seconds: float = 0.0
    eval_seconds: float = 0.0
    images_seen: int = 0
    stopped_by: str = "epochs"
    time_to_target: dict[str, Any] | None = None
    skipped_steps: int = 0
    resumed_from: dict[str, Any] | None = None
    steps_per_epoch: int = 0

    @property
    def epoch_seconds(self) -> list[float]:
        return [record.seconds for record in self.history]

    @property
    def steps(self) -> int:
        return int(sum(record.steps for record in self.history))

    @property
    def seconds_per_epoch(self) -> float | None:
        """Training seconds per full epoch: the step rate times the steps of an epoch."""
        if not self.steps or not self.steps_per_epoch:
            return None
        return self.train_seconds / self.steps * self.steps_per_epoch

    @property
    def train_seconds(self) -> float:
        return float(sum(self.epoch_seconds))

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.train_seconds if self.train_seconds > 0 else 0.0


def fit_result_to_dict(result: FitResult) -> dict[str, Any]:
    """``result`` as plain data (JSON-able when its values are)."""
    data = asdict(result)
    data["history"] = [asdict(r) for r in result.history]
    return data


def fit_result_from_dict(data: Mapping[str, Any], result: FitResult) -> None:
    """Set ``result``'s fields from :func:`fit_result_to_dict`'s ``data``."""
    for key, value in data.items():
        if key == "history":
            result.history = [EpochRecord(**r) for r in value]
        else:
            setattr(result, key, value)
