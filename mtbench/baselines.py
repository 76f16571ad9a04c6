"""The baseline cache: single-task runs trained once and reused by every benchmark that would
train them identically (a sweep over weighting methods trains each baseline once)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtbench import records, registry
from mtbench.io import atomic_save_npz


def source_fingerprint(objects: Sequence[Any]) -> str:
    """A hash of the Python source of the top-level packages that define ``objects`` (every
    ``.py`` file below each package, or the module file itself)."""
    import importlib
    import inspect

    roots = set()
    for obj in objects:
        module = inspect.getmodule(obj)
        if module is None:
            continue
        top = importlib.import_module(module.__name__.partition(".")[0])
        path = Path(inspect.getfile(top)).resolve()
        roots.add(path.parent if path.name == "__init__.py" else path)
    digest = hashlib.sha256()
    for root in sorted(roots):
        files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
        for file in files:
            digest.update(str(file.relative_to(root.parent)).encode() + b"\0")
            digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


def predictions_path(folder: Path, run_name: str) -> Path:
    """Where a run's test predictions are kept, in a run directory or in the cache."""
    return folder / "checkpoints" / records.run_slug(run_name) / "test_predictions.npz"


def load_predictions(folder: Path, run_name: str) -> dict[str, np.ndarray]:
    path = predictions_path(folder, run_name)
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as z:
        return {task: z[task] for task in z.files}


@dataclass(frozen=True)
class BaselineCache:
    """Single-task runs kept under ``<cache>/<key>/``, where the key hashes everything a
    single-task run depends on: the config's baseline identity
    (:func:`mtbench.records.identity` with purpose ``baseline``: no weighting method, no
    location options, the resolved precision and device class), the versions of mtbench,
    TensorFlow, Keras and numpy, and the source code that trains it (:func:`source_fingerprint`
    of mtbench and of the packages of the run's dataset, backbone and head plugins). Editing any
    module of those packages, committed or not, starts a new key; editing tests or docs keeps
    the cached baselines."""

    folder: Path

    @classmethod
    def for_config(cls, root: str | None, results: dict[str, Any]) -> BaselineCache | None:
        if not root:
            return None
        from mtbench.model import MultiTaskModel

        config = records.identity(
            results["config"],
            "baseline",
            location=results["location_keys"],
            resolved=results.get("resolved"),
        )
        versions = results["environment"]["versions"]
        plugins = [
            registry.get(kind, str(results["config"][kind]["name"])).factory
            for kind in ("dataset", "backbone", "head")
        ]
        identity = {
            "config": config,
            "versions": {k: versions.get(k) for k in ("mtbench", "tensorflow", "keras", "numpy")},
            "source": source_fingerprint([MultiTaskModel, *plugins]),
        }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        return cls(Path(root).expanduser() / digest)

    def get(self, run_name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        path = self.folder / f"{records.run_slug(run_name)}.json"
        if not path.is_file():
            return None
        run = records.load_run(path) | {"reused_from": str(self.folder)}
        return run, load_predictions(self.folder, run_name)

    def put(self, run_name: str, run: dict[str, Any], predictions: dict[str, np.ndarray]) -> None:
        atomic_save_npz(predictions_path(self.folder, run_name), predictions)
        records.write_run(self.folder / f"{records.run_slug(run_name)}.json", run)
