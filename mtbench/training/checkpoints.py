"""A fit's checkpoints in its directory: ``last.npz``, where training stands (every variable and
the progress, to resume from), and ``best.npz``, the best epoch's model weights. The file format
is :mod:`mtbench.checkpoint`'s."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mtbench import checkpoint
from mtbench.model import MultiTaskModel
from mtbench.training.records import FitResult, fit_result_from_dict, fit_result_to_dict


class FitCheckpoints:
    """Saves and restores a fit's state (nothing at all when ``directory`` is ``None``).

    Args:
        directory: Where ``last.npz`` and ``best.npz`` go.
        model: The model trained.
        state: Returns every variable a resumed fit needs, by group (model, optimizer,
            weighting, counters), once the optimizer is built.
    """

    def __init__(
        self,
        directory: Path | None,
        model: MultiTaskModel,
        state: Callable[[], dict[str, list[Any]]],
    ) -> None:
        self.directory = directory
        self.model = model
        self.state = state

    def save_last(
        self,
        result: FitResult,
        epoch: int,
        batch: int,
        best: float,
        partial_seconds: float = 0.0,
    ) -> None:
        """Save where training stands: at ``epoch``, ``batch``, with ``partial_seconds`` of
        training time spent in that epoch and ``best`` the best selection score so far."""
        if self.directory is None:
            return
        progress = {
            "epoch": epoch,
            "batch": batch,
            "partial_seconds": partial_seconds,
            "best_score": best if np.isfinite(best) else None,
            "result": fit_result_to_dict(result),
        }
        checkpoint.save(self.directory / "last.npz", self.state(), progress)

    def save_best(self, epoch: int, val: dict[str, dict[str, float]]) -> None:
        if self.directory is None:
            return
        checkpoint.save(
            self.directory / "best.npz",
            {"model": list(self.model.variables)},
            {"epoch": epoch, "val": val},
        )

    def best_weights(self) -> list[np.ndarray] | None:
        """The model weights in ``best.npz``, if there is one."""
        path = (self.directory or Path()) / "best.npz"
        if self.directory is None or not path.is_file():
            return None
        groups, _ = checkpoint.load(path)
        return groups["model"]

    def restore(self, result: FitResult) -> dict[str, Any]:
        """Assign ``last.npz``'s variables, fill ``result`` with its record and return its
        progress (``best_score`` ``-inf`` when no epoch was selected yet)."""
        assert self.directory is not None
        path = self.directory / "last.npz"
        groups, progress = checkpoint.load(path)
        for name, variables in self.state().items():
            checkpoint.restore(variables, groups.get(name, []), name, path)
        fit_result_from_dict(progress["result"], result)
        if progress["best_score"] is None:
            progress["best_score"] = -np.inf
        return progress
