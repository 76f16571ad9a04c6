"""The registry: registration, lookup, wildcards, duplicates, and real entry-point discovery."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import fake_distribution, run_mtbench
from hydra.plugins.config_source import ConfigLoadError

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


def test_store_schemas_makes_registered_plugins_hydra_options(tmp_path):
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    (tmp_path / "head").mkdir()
    (tmp_path / "head" / "test_with_file.yaml").write_text("defaults: []\n")
    with registry.isolated():
        registry.register("head", "test_option", config=ScaleConfig)(lambda **kw: kw)
        registry.register("head", "test_with_file", config=ScaleConfig)(lambda **kw: kw)
        registry.register("task", "test_task_kind", config=ScaleConfig)(lambda **kw: kw)
        with pytest.raises(ConfigLoadError):  # registering stores nothing: store_schemas does
            store.load("head/test_option.yaml")
        registry.store_schemas(tmp_path)
        node = store.load("head/test_option.yaml").node
        assert node.name == "test_option" and node.factor == 2.0
        # a YAML option file extends the schema stored at the root, which --help does not list
        assert store.load(f"{registry.schema_name('head', 'test_with_file')}.yaml").node.factor
        with pytest.raises(ConfigLoadError):
            store.load("head/test_with_file.yaml")
        # task kinds are chosen by datasets, not on the command line: no config group
        assert "task" in registry.KINDS and "task" not in registry.CONFIG_KINDS
        root = store.list("")
        assert "task" not in root and "task_test_task_kind_schema.yaml" not in root
    with pytest.raises(ConfigLoadError):  # isolated() restores the ConfigStore too
        store.load("head/test_option.yaml")


def test_options_hydra_cannot_type_lose_that_plugin_only(caplog):
    from typing import Literal

    from hydra.core.config_store import ConfigStore

    @dataclass
    class Untypable:
        mode: Literal["a", "b"] = "a"  # OmegaConf 2.3 has no Literal: an Enum is the way

    with registry.isolated():
        registry.register("weighting", "test_untypable", config=Untypable)(lambda **kw: kw)
        registry.register("weighting", "test_typable", config=ScaleConfig)(lambda **kw: kw)
        with caplog.at_level(logging.WARNING, logger="mtbench.registry"):
            registry.store_schemas()
        (failure,) = [f for f in registry.load_failures() if "test_untypable" in f.entry_point]
        assert "Untypable" in failure.error and "Enum" in failure.error
        assert "test_untypable" in caplog.text
        assert ConfigStore.instance().load("weighting/test_typable.yaml").node.factor == 2.0


def test_factory_and_options_are_imported_only_when_used(tmp_path, monkeypatch):
    (tmp_path / "lazy_method.py").write_text(
        "class Method:\n    def __init__(self, factor):\n        self.factor = factor\n"
    )
    (tmp_path / "lazy_options.py").write_text(
        "from dataclasses import dataclass\n\n"
        "@dataclass\nclass LazyConfig:\n    factor: float = 2.0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin = registry.Plugin(
        "weighting", "lazy", "lazy_method:Method", "lazy_options:LazyConfig", "a test"
    )
    assert "lazy_method" not in sys.modules and "lazy_options" not in sys.modules
    assert [f.name for f in dataclasses.fields(plugin.schema)] == ["factor", "name"]
    assert "lazy_options" in sys.modules and "lazy_method" not in sys.modules
    assert plugin.factory(factor=3.0).factor == 3.0 and "lazy_method" in sys.modules


@pytest.mark.parametrize(
    ("factory", "config", "match"),
    [
        (
            "no_such_module_xyz:Thing",
            None,
            "its factory no_such_module_xyz:Thing .*a test.*could not be loaded.*No module named",
        ),
        (
            "dataclasses:no_such_attribute",
            None,
            "its factory dataclasses:no_such_attribute .*could not be loaded",
        ),
        ("dataclasses:MISSING", None, "not a class or function"),
        ("dataclasses:dataclass", "dataclasses:field", "must be a dataclass"),
    ],
)
def test_a_factory_or_options_that_cannot_be_loaded_say_which_and_where(factory, config, match):
    plugin = registry.Plugin("weighting", "broken", factory, config, "a test")
    with pytest.raises(registry.PluginError, match=match):
        _ = plugin.config if config else plugin.factory


def test_schemas_pickle_by_reference_for_process_launchers():
    import pickle

    schema = registry.get("weighting", "cagrad").schema
    assert pickle.loads(pickle.dumps(schema)) is schema
    assert schema.__name__ == "CAGradConfig"  # what Hydra's messages show


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(registry.UnknownPluginError) as info:
        registry.get("weighting", "nosuch")
    message = str(info.value)
    assert "nosuch" in message and "ew" in message and "static" in message


def test_a_name_registered_twice_is_refused_alone_naming_both(caplog):
    with registry.isolated():
        registry.register("backbone", "test_dup")(type("First", (), {}))
        with caplog.at_level(logging.WARNING, logger="mtbench.registry"):
            registry.register("backbone", "test_dup")(type("Second", (), {}))
            registry.register("backbone", "test_dup")(type("Third", (), {}))
        with pytest.raises(registry.DuplicatePluginError) as info:
            registry.get("backbone", "test_dup")
        message = str(info.value)
        assert all(name in message for name in ("First", "Second", "Third", "Uninstall"))
        assert len([r for r in caplog.records if "test_dup" in r.getMessage()]) == 1
        assert "test_dup" in registry.names("backbone")
        assert registry.get("backbone", "resnet").name == "resnet"  # the others still work
    with pytest.raises(registry.UnknownPluginError):
        registry.get("backbone", "test_dup")


def test_the_same_factory_registered_again_is_not_a_clash():
    with registry.isolated():
        again = type("Again", (), {})
        registry.register("backbone", "test_again")(again)
        registry.register("backbone", "test_again")(again)  # e.g. its module imported twice
        assert registry.get("backbone", "test_again").factory is again


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


def _distribution(
    site: Path,
    dist: str,
    modules: dict[str, str],
    plugins: dict[str, str],
    configs: dict[str, str] | None = None,
) -> None:
    """A distribution on disk as pip would install it, with entry points of both groups."""
    for module, body in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(body))
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    groups = {registry.ENTRY_POINT_GROUP: plugins, registry.CONFIG_ENTRY_POINT_GROUP: configs or {}}
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in entries.items())
            for group, entries in groups.items()
        )
    )


TWIN = """
    from dataclasses import dataclass

    @dataclass
    class TwinConfig:
        size: int = 1

    class Twin:
        def __init__(self, size=1):
            self.size = size
"""


@pytest.fixture(scope="module")
def clashing_site(tmp_path_factory) -> Path:
    """Two distributions declaring ``weighting.twin``; a third, of the older form, registering
    ``static`` (which mtbench declares too); a fourth with entry points mtbench cannot read."""
    site = tmp_path_factory.mktemp("clashing")
    for dist in ("tp_a", "tp_b"):
        _distribution(
            site,
            dist,
            {f"{dist}_twin": TWIN},
            {"weighting.twin": f"{dist}_twin:Twin"},
            {"weighting.twin": f"{dist}_twin:TwinConfig"},
        )
    fake_distribution(
        site,
        "tp_old",
        "tp_old_static",
        'from mtbench import register\nregister("weighting", "static")(dict)\n',
        "old",
    )
    _distribution(
        site,
        "tp_bad",
        {"tp_bad_module": "X = 1\n"},
        {"weighting.no_colon": "tp_bad_module", "model.x": "tp_bad_module:X"},
        {"weighting.orphan": "tp_bad_module:X"},
    )
    return site


def test_a_clash_makes_only_that_name_unusable_and_is_logged_once(clashing_site):
    result = _python(
        """
        import sys
        from mtbench import registry
        print("listed", "twin" in registry.names("weighting"))
        for name in ("twin", "static"):
            try:
                registry.get("weighting", name)
            except registry.DuplicatePluginError as exc:
                print("refused", exc)
        print("built", registry.build("weighting", {"name": "ew"}).__class__.__name__)
        print("imported", [m for m in ("tp_a_twin", "tp_b_twin") if m in sys.modules])
        for failure in registry.load_failures():
            print("failure", failure.describe())
        """,
        clashing_site,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "listed True" in out and "built EqualWeights" in out and "imported []" in out
    twin, static = (line for line in out.splitlines() if line.startswith("refused"))
    for message, sources in [(twin, ("'tp_a'", "'tp_b'")), (static, ("'tp_old'", "'mtbench'"))]:
        assert all(source in message for source in sources) and "Uninstall" in message
    assert result.stderr.count("'twin' is registered more than once") == 1
    assert result.stderr.count("'static' is registered more than once") == 1
    failures = [line for line in out.splitlines() if line.startswith("failure")]
    assert len(failures) == 3, out
    assert "name the factory as 'module:attr'" in out and "unknown plugin kind 'model'" in out
    assert "declares the plugin these options are for" in out


def test_the_command_line_refuses_a_clashing_name_in_one_line_and_runs_the_rest(
    clashing_site, tmp_path
):
    env = {"PYTHONPATH": str(clashing_site)}
    shown = run_mtbench(["--help"], cwd=tmp_path, env=env, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert "twin" in shown.stdout
    refused = run_mtbench(["weighting=twin", "hydra.run.dir=run"], cwd=tmp_path, env=env)
    assert refused.returncode == 2
    line = refused.stderr.splitlines()[-1]  # after the start-up warning about the clash
    assert line.startswith("mtbench: weighting 'twin' is registered more than once")
    assert "'tp_a'" in line and "'tp_b'" in line and "Uninstall" in line
    assert "Traceback" not in refused.stderr and not (tmp_path / "run").exists()
    # its options cannot be typed: a compose error says why rather than listing no keys
    with_option = run_mtbench(["weighting=twin", "weighting.size=2"], cwd=tmp_path, env=env)
    assert with_option.returncode == 1
    assert line in with_option.stderr.splitlines()
