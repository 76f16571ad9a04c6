"""A separate package's plugins work after ``pip install``: one declared the current way (entry
points naming its factory and its options, imported only when used) and one of the older form (an
entry point naming a module whose import registers it, imported at start-up)."""

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


LAZY_OPTIONS = """
from dataclasses import dataclass


@dataclass
class LazyShareConfig:
    last_share: float = 0.5
"""

LAZY_PLUGIN = '''
"""The same weighting, declared through entry points: this module is imported only when a run
builds it; its options live in a module that does not import TensorFlow."""
import tensorflow as tf

from mtbench.weighting import LossWeighting


class LazyShare(LossWeighting):
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
    (project / "mtbench_lazy_share.py").write_text(LAZY_PLUGIN)
    (project / "mtbench_lazy_share_options.py").write_text(LAZY_OPTIONS)
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
            py-modules = ["mtbench_share", "mtbench_lazy_share", "mtbench_lazy_share_options"]

            [project.entry-points."mtbench.plugins"]
            share = "mtbench_share"
            "weighting.third_party_lazy_share" = "mtbench_lazy_share:LazyShare"

            [project.entry-points."mtbench.configs"]
            "weighting.third_party_lazy_share" = "mtbench_lazy_share_options:LazyShareConfig"
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


PLUGINS = [("third_party_share", "ShareConfig"), ("third_party_lazy_share", "LazyShareConfig")]


@pytest.mark.parametrize(("name", "config"), PLUGINS, ids=["older_form", "declared"])
def test_pip_installed_plugin_is_usable_by_name(name, config, installed_site, npz_root, tmp_path):
    result = run_mtbench(
        [
            "+experiment=cifar100_mtl",
            f"weighting={name}",
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
    assert results["config"]["weighting"] == {"name": name, "last_share": 0.8}
    (joint,) = results["runs"]
    assert joint["weighting"] == name
    assert joint["history"][0]["loss_weights"] == pytest.approx({"fine": 0.2, "coarse": 0.8})


@pytest.mark.parametrize(("name", "config"), PLUGINS, ids=["older_form", "declared"])
def test_third_party_config_is_typed_at_compose_time(name, config, installed_site, tmp_path):
    result = run_mtbench(
        [f"weighting={name}", "weighting.last_shar=0.8", f"hydra.run.dir={tmp_path}"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(installed_site)},
        timeout=120,
    )
    assert result.returncode != 0 and f"Key 'last_shar' not in '{config}'" in result.stderr
    assert "its keys are: last_share, name" in result.stderr  # mtbench's hint lists them


def test_only_the_older_form_is_imported_at_start_up(installed_site):
    script = """
        import sys
        from mtbench import registry
        from mtbench.cli import prepare
        prepare()  # what every command does before Hydra composes
        print(sorted(m for m in sys.modules if m.startswith("mtbench_") and "share" in m))
        registry.build("weighting", {"name": "third_party_lazy_share", "last_share": 0.8})
        print("mtbench_lazy_share" in sys.modules)
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env={**os.environ, "PYTHONPATH": str(installed_site), "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == [
        "['mtbench_lazy_share_options', 'mtbench_share']",
        "True",
    ]
