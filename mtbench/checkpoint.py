"""Checkpoints of a run: every variable of the model, optimizer and weighting method, plus the
trainer's own progress, in one ``.npz`` file written atomically.

Variables are stored in order (Keras gives auto-generated names that differ between processes),
and checked by shape on restore. The file holds no pickled objects: the progress record is JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtbench.io import atomic_save_npz

FORMAT = "mtbench.checkpoint/1"


class CheckpointError(Exception):
    """A checkpoint cannot be read or does not fit the run."""


def save(path: Path, groups: Mapping[str, Sequence[Any]], progress: Mapping[str, Any]) -> None:
    """Write ``groups`` (name -> variables) and ``progress`` (JSON-able) to ``path`` atomically."""
    arrays = {
        f"{group}/{i:05d}": np.asarray(variable.numpy())
        for group, variables in groups.items()
        for i, variable in enumerate(variables)
    }
    meta = json.dumps({"format": FORMAT, "progress": progress}, allow_nan=False)
    atomic_save_npz(path, {"__meta__": np.array(meta), **arrays})


def load(path: Path) -> tuple[dict[str, list[np.ndarray]], dict[str, Any]]:
    """The arrays of each group, in order, and the progress record."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["__meta__"]))
            groups: dict[str, list[np.ndarray]] = {}
            for key in sorted(k for k in z.files if k != "__meta__"):
                group = key.rsplit("/", 1)[0]
                groups.setdefault(group, []).append(z[key])
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint")
    return groups, meta["progress"]


def restore(variables: Sequence[Any], arrays: Sequence[np.ndarray], what: str, path: Path) -> None:
    """Assign ``arrays`` to ``variables`` in order, refusing a checkpoint of another model."""
    if len(variables) != len(arrays):
        raise CheckpointError(
            f"{path} holds {len(arrays)} {what} variables but this run has {len(variables)}: "
            "it was written by a different configuration"
        )
    for variable, value in zip(variables, arrays, strict=True):
        if tuple(variable.shape) != value.shape:
            raise CheckpointError(
                f"{path}: {what} variable {getattr(variable, 'path', variable.name)} has shape "
                f"{tuple(variable.shape)}, the checkpoint {value.shape}: a different configuration"
            )
    for variable, value in zip(variables, arrays, strict=True):
        variable.assign(value)
