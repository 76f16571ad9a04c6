"""A separate package with a ``mtbench.plugins`` entry point works after ``pip install``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import run_mtbench

PLUGIN = '''
"""A third-party weighting: a share of the objective for the last task, the rest for the others."""
from dataclasses import dataclass

import tensorflow as tf

from mtbench import register
from mtbench.weighting import LossWeighting


@dataclass
class ShareConfig:
    last_share: float = 0.5


@register("weighting", "third_party_share", config=ShareConfig)
class Share(LossWeighting):
    def __init__(self, last_share: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.last_share = last_share

    def loss_weights(self, losses):
        n = self.num_tasks
        rest = (1.0 - self.last_share) / max(n - 1, 1)
        return tf.constant([rest] * (n - 1) + [self.last_share], tf.float32)
'''


@pytest.fixture(scope="module")
def installed_site(tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("third_party")
    (project / "mtbench_share.py").write_text(PLUGIN)
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "mtbench-share"
            version = "0.1.0"

            [tool.setuptools]
            py-modules = ["mtbench_share"]

            [project.entry-points."mtbench.plugins"]
            share = "mtbench_share"
            """
        )
    )
    site = project / "site"
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
            "--no-build-isolation", "--target", str(site), str(project),
        ],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return site


def test_pip_installed_plugin_is_usable_by_name(installed_site, npz_root, tmp_path):
    result = run_mtbench(
        [
            "+experiment=cifar100_mtl",
            "weighting=third_party_share",
            "weighting.last_share=0.8",
            f"dataset.root={npz_root}",
            "dataset.val_size=100",
            "trainer.epochs=1",
            "trainer.batch_size=128",
            "benchmark.single_task=false",
            f"hydra.run.dir={tmp_path}/run",
        ],
        cwd=tmp_path,
        env={
            "PYTHONPATH": os.pathsep.join([str(installed_site), os.environ.get("PYTHONPATH", "")])
        },
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["config"]["weighting"] == {"name": "third_party_share", "last_share": 0.8}
    (joint,) = results["runs"]
    assert joint["weighting"] == "third_party_share"
    assert joint["history"][0]["loss_weights"] == pytest.approx({"fine": 0.2, "coarse": 0.8})


def test_third_party_config_is_typed_at_compose_time(installed_site, tmp_path):
    result = run_mtbench(
        ["weighting=third_party_share", "weighting.last_shar=0.8", f"hydra.run.dir={tmp_path}"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(installed_site)},
        timeout=120,
    )
    assert result.returncode != 0 and "Key 'last_shar' not in 'ShareConfig'" in result.stderr
