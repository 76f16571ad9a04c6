"""A separate package of plugins works after ``pip install``, with no change to mtbench.

``tests/third_party_package`` is such a package, ``mtbench-ordinal``: a task kind (``ordinal``),
a dataset, a backbone, a head and a weighting, declared in its own ``pyproject.toml`` through
the ``mtbench.plugins`` and ``mtbench.configs`` entry points, with its own tests built on
:mod:`mtbench.testing`. Here it is built from a copy of its source and installed into a
temporary folder; every check runs in a subprocess with that folder on ``PYTHONPATH``, as a user
who installed it would run mtbench. One benchmark run serves the checks of results.json and the
report.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import run_mtbench

PACKAGE = Path(__file__).resolve().parent / "third_party_package"
#: The package's plugins, by kind, as the command line selects them.
PLUGINS = {
    "dataset": "ordinal_toy",
    "backbone": "tiny_mlp",
    "head": "linear",
    "weighting": "half_half",
}
#: The package's test classes that subclass mtbench.testing's suites.
SUITE_CLASSES = ("TestOrdinal", "TestOrdinalToy", "TestTinyMLP", "TestLinearHeads", "TestHalfHalf")


@dataclass(frozen=True)
class Installed:
    """The package as pip installed it.

    Attributes:
        project: A copy of its source that pip built (pip builds in the source folder: the copy
            keeps build/ and *.egg-info out of the repository); its tests are run from here.
        site: The folder pip installed it into.
    """

    project: Path
    site: Path

    @property
    def env(self) -> dict[str, str]:
        paths = [str(self.site), *filter(None, [os.environ.get("PYTHONPATH")])]
        return {"PYTHONPATH": os.pathsep.join(paths)}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    root = tmp_path_factory.mktemp("third_party_package")
    project = root / "project"
    shutil.copytree(
        PACKAGE,
        project,
        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info", ".pytest_cache"),
    )
    site = root / "site"
    result = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
            "--no-build-isolation", "--target", str(site), str(project),
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return Installed(project, site)


def test_the_packages_own_conformance_tests_pass(installed, tmp_path):
    """``python -m pytest`` on the package's tests, with its own pytest settings, against the
    installed package (run from a folder that does not hold its source)."""
    report = tmp_path / "junit.xml"
    result = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            f"--junitxml={report}", str(installed.project / "tests"),
        ],
        cwd=tmp_path,
        env={**os.environ, **installed.env, "TF_CPP_MIN_LOG_LEVEL": "2",
             "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    suite = ElementTree.parse(report).getroot().find("testsuite")
    assert suite is not None, report.read_text()[:2000]
    assert int(suite.get("failures", 0)) == int(suite.get("errors", 0)) == 0
    passed = Counter()
    for case in suite.iter("testcase"):
        if case.find("skipped") is None:
            passed[case.get("classname", "").rpartition(".")[2]] += 1
    not_run = [name for name in SUITE_CLASSES if not passed[name]]
    assert not not_run, f"no test of {not_run} ran; passed per class: {dict(passed)}"
    assert passed["TestHalfHalf"] >= 10 and passed["TestOrdinal"] >= 10, dict(passed)


# ------------------------------------------------------------------------------- one benchmark
@pytest.fixture(scope="module")
def benchmark_run(installed, tmp_path_factory) -> Path:
    """The run directory of a whole benchmark (two single-task runs and the joint one) on the
    package's plugins only, started through the command line."""
    folder = tmp_path_factory.mktemp("ordinal_benchmark")
    result = run_mtbench(
        [
            *(f"{kind}={name}" for kind, name in PLUGINS.items()),
            "weighting.first_share=0.7",
            "trainer.epochs=2",
            "trainer.batch_size=64",
            "trainer.precision=float32",
            "trainer.progress=false",
            "trainer.checkpoint_every=0",
            "benchmark.cost_rounds=0",
            f"hydra.run.dir={folder}/run",
        ],
        cwd=folder,
        env=installed.env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "run"


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_the_ordinal_task_reports_its_kinds_metrics_with_their_directions(benchmark_run):
    results = _results(benchmark_run)
    assert (results["schema"], results["status"]) == ("mtbench.results/2", "complete")
    assert {k: results["config"][k]["name"] for k in PLUGINS} == PLUGINS
    grade = results["tasks"]["grade"]
    assert (grade["kind"], grade["primary"]) == ("ordinal", "mae")
    assert grade["metrics"]["mae"]["higher_is_better"] is False
    assert grade["metrics"]["mae"]["unit"] == "classes"
    assert grade["metrics"]["accuracy"]["higher_is_better"] is True
    assert results["tasks"]["score"]["kind"] == "regression"
    for task in ("grade", "score"):  # the dataset leaves some labels of each task missing
        assert 0 < results["tasks"][task]["labelled"]["train"] < 256
    runs = {run["name"]: run for run in results["runs"]}
    assert list(runs) == ["single:grade", "single:score", "joint"]
    for name in ("single:grade", "joint"):
        test = runs[name]["test"]["grade"]
        assert set(test) == {"mae", "accuracy"}
        assert 0.0 <= test["mae"] <= 4.0 and 0.0 <= test["accuracy"] <= 1.0, test
    # the weighting's option reached it: the first task (grade) gets 0.7 of the weight
    weights = runs["joint"]["history"][0]["loss_weights"]
    assert weights == pytest.approx({"grade": 0.7, "score": 0.3})


def test_delta_m_is_what_the_runs_test_metrics_give_by_hand(benchmark_run):
    results = _results(benchmark_run)
    runs = {run["name"]: run for run in results["runs"]}
    terms = []
    for task, record in results["tasks"].items():
        metric = record["primary"]
        sign = 1.0 if record["metrics"][metric]["higher_is_better"] else -1.0
        single = runs[f"single:{task}"]["test"][task][metric]
        joint = runs["joint"]["test"][task][metric]
        terms.append(sign * (joint - single) / abs(single))
    comparison = results["comparison"]
    assert comparison["delta_m_percent"] == pytest.approx(100.0 * sum(terms) / len(terms))
    entries = {(e["task"], e["metric"]): e for e in comparison["entries"]}
    assert entries[("grade", "mae")]["counted"] and not entries[("grade", "accuracy")]["counted"]
    assert entries[("grade", "mae")]["higher_is_better"] is False


def test_the_report_shows_the_ordinal_kinds_metrics(benchmark_run):
    report = (benchmark_run / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| grade")]
    assert any("ordinal" in row and "mae (classes) ↓" in row for row in rows), rows
    assert any("mae (classes), primary" in row and "↓ lower" in row for row in rows), rows
    assert any("accuracy (%)" in row and "↑ higher" in row for row in rows), rows
    assert "weighting `half_half`" in report


# ----------------------------------------------------------------------------- the command line
@pytest.mark.parametrize(
    ("override", "messages"),
    [
        (
            "weighting.first_shar=0.7",
            ["Key 'first_shar' not in 'HalfHalfConfig'", "its keys are: first_share, name"],
        ),
        (
            "dataset.train_size=many",
            ["Value 'many' of type 'str' could not be converted to Integer", "OrdinalToyConfig"],
        ),
    ],
    ids=["mistyped_key", "wrongly_typed_value"],
)
def test_the_packages_options_are_typed_at_compose_time(installed, tmp_path, override, messages):
    result = run_mtbench(
        [f"dataset={PLUGINS['dataset']}", f"weighting={PLUGINS['weighting']}", override,
         f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path, env=installed.env, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    for message in messages:
        assert message in result.stderr, result.stderr[-3000:]
    assert not (tmp_path / "run" / "results.json").exists()


def test_help_lists_the_packages_plugins(installed, tmp_path):
    result = run_mtbench(["--help"], cwd=tmp_path, env=installed.env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    section = result.stdout.partition("== Configuration groups ==")[2].partition("== Config ==")[0]
    groups = {
        match[1]: match[2].split(", ") for match in re.finditer(r"^(\w+): (.+)$", section, re.M)
    }
    for kind, name in PLUGINS.items():
        assert name in groups.get(kind, []), f"{kind}={name} missing from --help: {groups}"
