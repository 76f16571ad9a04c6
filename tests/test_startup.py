"""Start-up: ``--help`` and a compose error import neither TensorFlow nor any plugin's factory
module, and building a plugin imports its own module only.

What a command imports is read from ``sys.modules`` when it exits, not timed: the start-up time is
machine-dependent and is reported, not asserted.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from mtbench import registry


def _references(group: str) -> dict[str, str]:
    """``<kind>.<name>`` -> module of the ``module:attr`` entry points of mtbench's groups."""
    return {
        e.name: e.value.partition(":")[0].strip()
        for e in metadata.entry_points(group=group)
        if "." in e.name and ":" in e.value
    }


FACTORY_MODULES = set(_references(registry.ENTRY_POINT_GROUP).values())
COMMANDS = {
    "help": ["--help"],
    "unknown_option": ["weighting=nope"],
    "mistyped_key": ["weighting.typo=1"],
}


#: ``python -m mtbench ARGS`` (runpy does what ``-m`` does) that writes, as it exits, the names of
#: the modules it imported to the file $MODULES_OUT.
MAIN = """
import atexit, json, os, runpy, sys
atexit.register(lambda: open(os.environ["MODULES_OUT"], "w").write(json.dumps(list(sys.modules))))
sys.argv = ["mtbench", *sys.argv[1:]]
runpy.run_module("mtbench", run_name="__main__", alter_sys=True)
"""


@functools.cache
def _run(command: str) -> tuple[subprocess.CompletedProcess[str], frozenset[str]]:
    """``python -m mtbench <command>`` and the modules it imported."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "modules.json"
        result = subprocess.run(
            [sys.executable, "-c", MAIN, *COMMANDS[command]],
            env={**os.environ, "MODULES_OUT": str(out), "TF_CPP_MIN_LOG_LEVEL": "2"},
            cwd=folder, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        modules = frozenset(json.loads(out.read_text()))
    return result, modules


def test_help_lists_the_plugin_groups_but_no_schemas():
    result, modules = _run("help")
    assert result.returncode == 0, result.stderr[-3000:]
    groups = dict(
        line.split(": ", 1) for line in result.stdout.split("== Config ==")[0].splitlines()
        if ": " in line
    )  # fmt: skip
    assert set(registry.CONFIG_KINDS) <= set(groups)
    assert {"ew", "static", "cagrad"} <= set(groups["weighting"].split(", "))
    assert not [group for group in groups if "schema" in group], groups


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_start_up_imports_no_plugin_factory(command):
    result, modules = _run(command)
    assert result.returncode == (0 if command == "help" else 1), result.stderr[-3000:]
    if command != "help":
        assert "nope" in result.stderr or "'typo'" in result.stderr
    # mtbench's own task kinds (mtbench.tasks.*) are core modules without TensorFlow
    imported = {m for m in modules & FACTORY_MODULES if not m.startswith("mtbench.")}
    assert not imported, f"'{command}' imported plugin modules {sorted(imported)}"
    assert "mtbench_plugins.weighting.options" in modules  # the options, typed at compose time


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_start_up_does_not_import_tensorflow(command):
    _, modules = _run(command)
    assert not {"tensorflow", "keras"} & modules


def test_building_a_plugin_imports_its_module_only():
    script = f"""
        import sys
        from mtbench import registry
        assert "mtbench.cli" not in sys.modules  # the registry does not import the command line
        from mtbench.cli import prepare
        prepare()
        factories = {sorted(FACTORY_MODULES)!r}
        before = [m for m in factories if m in sys.modules]
        registry.build("weighting", {{"name": "cagrad", "c": 0.5}})
        registry.build("backbone", {{"name": "resnet9"}})
        print([m for m in factories if m in sys.modules and m not in before])
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [
        "['mtbench_plugins.backbones.resnet9',",
        "'mtbench_plugins.weighting.cagrad']",
    ]
