"""Helpers for tests: running the CLI in a subprocess, finding the real data."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def real_data_root() -> Path | None:
    """The folder holding the real ``cifar100.npz`` ($MTBENCH_REAL_DATA or ../shared), if any."""
    candidates = [os.environ.get("MTBENCH_REAL_DATA"), REPO.parent / "shared/data/cifar100"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "cifar100.npz").is_file():
            return Path(candidate)
    return None


def run_mtbench(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600):
    """Run ``python -m mtbench`` in a subprocess; return the CompletedProcess."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "mtbench", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_benchmark(root: Path, tmp_path: Path, *overrides: str, timeout: int = 600) -> dict:
    """Run the reference experiment on the data in ``root`` in ``tmp_path/run`` (a subprocess);
    check that it succeeded and return its ``results.json``."""
    import json

    result = run_mtbench(
        [
            "+experiment=cifar100_mtl",
            f"dataset.root={root}",
            "dataset.download=false",
            "trainer.progress=false",
            *overrides,
            f"hydra.run.dir={tmp_path}/run",
        ],
        cwd=tmp_path,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / "run" / "results.json").read_text())


def reference_model(precision: str = "float32", backbone: str = "seed_cnn", head: str = "dense"):
    """The reference fine/coarse model, built from seed 0 under ``precision``."""
    from mtbench.data import TaskSpec
    from mtbench.model import build_model

    tasks = [TaskSpec("fine", 100), TaskSpec("coarse", 20)]
    return build_model({"name": backbone}, {"name": head}, tasks, precision=precision)


def fake_distribution(site: Path, dist: str, module: str, body: str, entry: str) -> None:
    """A distribution on disk as pip would install it: a module and its .dist-info declaring
    ``module`` in the ``mtbench.plugins`` entry-point group. Put ``site`` on PYTHONPATH."""
    (site / f"{module}.py").write_text(textwrap.dedent(body))
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[mtbench.plugins]\n{entry} = {module}\n")
