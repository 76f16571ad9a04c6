"""The registry: registration, lookup, wildcards, duplicates, and real entry-point discovery."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import fake_distribution

from mtbench import registry


@dataclass
class ScaleConfig:
    factor: float = 2.0


def test_register_get_and_build_pass_config_fields():
    with registry.isolated():

        @registry.register("weighting", "test_scale", config=ScaleConfig)
        class Scale:
            def __init__(self, factor: float):
                self.factor = factor

        plugin = registry.get("weighting", "test_scale")
        assert plugin.factory is Scale and plugin.config is ScaleConfig
        built = registry.build("weighting", {"name": "test_scale", "factor": 3.0})
        assert isinstance(built, Scale) and built.factor == 3.0
        assert "test_scale" in registry.names("weighting", "test_*")
        assert "ew" not in registry.names("weighting", "test_*")


def test_registered_schema_is_a_hydra_option_with_name():
    from hydra.core.config_store import ConfigStore

    with registry.isolated():
        registry.register("head", "test_option", config=ScaleConfig)(lambda **kw: kw)
        node = ConfigStore.instance().load("head/test_option.yaml").node
        assert node.name == "test_option" and node.factor == 2.0


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(registry.UnknownPluginError) as info:
        registry.get("weighting", "nosuch")
    message = str(info.value)
    assert "nosuch" in message and "ew" in message and "static" in message


def test_duplicate_name_is_an_error_naming_both_sources():
    with registry.isolated():
        registry.register("backbone", "test_dup")(type("First", (), {}))
        with pytest.raises(registry.DuplicatePluginError) as info:
            registry.register("backbone", "test_dup")(type("Second", (), {}))
        assert "First" in str(info.value) and "Second" in str(info.value)


def test_build_rejects_options_the_plugin_does_not_have():
    with registry.isolated():
        registry.register("weighting", "test_opts", config=ScaleConfig)(lambda **kw: kw)
        with pytest.raises(registry.PluginError, match="factr"):
            registry.build("weighting", {"name": "test_opts", "factr": 1.0})


@pytest.mark.parametrize(
    ("kind", "name", "config", "match"),
    [
        ("model", "x", None, "unknown plugin kind"),
        ("weighting", "bad name", None, "invalid plugin name"),
        ("weighting", "x", dict, "must be a dataclass"),
    ],
)
def test_invalid_registrations_are_refused(kind, name, config, match):
    with pytest.raises(registry.PluginError, match=match):
        registry.register(kind, name, config=config)


def test_name_field_is_reserved():
    @dataclass
    class Clash:
        name: str = "x"

    with pytest.raises(registry.PluginError, match="reserved"):
        registry.register("weighting", "test_clash", config=Clash)


# ------------------------------------------------------------------ entry points, out of process
def _python(code: str, site: Path) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "PYTHONPATH": str(site), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


GOOD_PLUGIN = """
    from mtbench import register
    from mtbench.weighting import LossWeighting
    import tensorflow as tf

    @register("weighting", "third_party_half")
    class Half(LossWeighting):
        def loss_weights(self, losses):
            return tf.fill(tf.shape(losses), 0.5)
"""


def test_entry_points_are_discovered_lazily_and_broken_ones_reported(tmp_path):
    fake_distribution(tmp_path, "tp_good", "tp_good_plugin", GOOD_PLUGIN, "half")
    fake_distribution(
        tmp_path, "tp_broken", "tp_broken_plugin", "import no_such_module_anywhere\n", "broken"
    )
    result = _python(
        """
        import sys
        import mtbench
        from mtbench import registry
        # importing mtbench loads no plugin and no TensorFlow
        assert "tp_good_plugin" not in sys.modules and "tensorflow" not in sys.modules
        print("weightings", mtbench.list_plugins("weighting"))
        print("failures", [f.module for f in registry.load_failures()])
        try:
            registry.get("weighting", "missing_one")
        except registry.UnknownPluginError as exc:
            print("message", exc)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "third_party_half" in out and "'ew'" in out and "'static'" in out
    assert "failures ['tp_broken_plugin']" in out
    # the failure is reported by module, entry point and distribution, and does not hide others
    assert "tp_broken_plugin" in result.stderr and "no_such_module_anywhere" in result.stderr
    assert "no_such_module_anywhere" in out.split("message", 1)[1]


def test_two_distributions_registering_the_same_name_fail_naming_both(tmp_path):
    clash = GOOD_PLUGIN.replace("third_party_half", "ew")
    fake_distribution(tmp_path, "tp_clash", "tp_clash_plugin", clash, "clash")
    result = _python("import mtbench; mtbench.list_plugins('weighting')", tmp_path)
    assert result.returncode != 0
    assert "DuplicatePluginError" in result.stderr
    assert "tp_clash_plugin" in result.stderr and "distribution 'mtbench'" in result.stderr
