"""Composition: every experiment composes, overrides apply, and mistakes fail at compose time."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_mtbench
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from mtbench.cli import config_dir, prepare
from mtbench.protocol import Benchmark

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


@pytest.fixture(scope="module", autouse=True)
def _store():
    prepare()


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("debug", [[], ["+debug=quick"]])
def test_every_experiment_composes_and_resolves(experiment, debug):
    cfg = _compose([f"+experiment={experiment}", *debug])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for group in ("dataset", "backbone", "head", "weighting"):
        assert resolved[group]["name"], group


def test_reference_experiment_and_the_documented_overrides(tmp_path):
    cfg = _compose(
        [
            "+experiment=cifar100_mtl",
            f"dataset.root={tmp_path}",
            "dataset.download=false",
            "dataset.train_limit=2000",
            "dataset.val_size=500",
            "trainer.epochs=3",
            "trainer.batch_size=64",
            "trainer.precision=float32",
            "seed=7",
            "backbone=seed_cnn",
            "weighting=static",
            "+weighting.weights.coarse=0.5",
        ]
    )
    assert cfg.dataset.name == "cifar100" and cfg.dataset.root == str(tmp_path)
    assert cfg.dataset.download is False and cfg.dataset.train_limit == 2000
    assert cfg.dataset.val_size == 500
    assert (cfg.trainer.epochs, cfg.trainer.batch_size, cfg.seed) == (3, 64, 7)
    assert cfg.trainer.precision.value == "float32"
    assert cfg.weighting.name == "static" and cfg.weighting.weights.coarse == 0.5
    assert list(cfg.benchmark.tasks) == ["fine", "coarse"]


def test_default_data_root_is_a_cache_folder_overridable_by_environment(monkeypatch, tmp_path):
    assert _compose([]).dataset.root == str(Path("~/.cache/mtbench/cifar100"))
    monkeypatch.setenv("MTBENCH_DATA_DIR", str(tmp_path))
    assert _compose([]).dataset.root == f"{tmp_path}/cifar100"


def test_unknown_plugin_name_lists_the_choices():
    with pytest.raises(MissingConfigException) as info:
        _compose(["+experiment=cifar100_mtl", "weighting=nosuch"])
    message = str(info.value)
    assert "weighting/nosuch" in message and "\tew" in message and "\tstatic" in message


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("trainer.epoch=3", "epoch"),
        ("dataset.val_sise=10", "val_sise"),
        ("weighting.wieghts=1", "wieghts"),
    ],
)
def test_mistyped_key_fails_at_compose_time(override, names):
    with pytest.raises(ConfigCompositionException) as info:
        _compose(["+experiment=cifar100_mtl", override])
    cause = info.value.__cause__
    assert isinstance(cause, ConfigAttributeError | ConfigKeyError)
    assert f"Key '{names}' not in" in str(cause)


@pytest.mark.parametrize(
    ("override", "key"),
    [("+trainer.epoch=3", "trainer.epoch"), ("+dataset.val_sise=3", "dataset.val_sise")],
)
def test_an_appended_unknown_key_is_refused_before_any_work(override, key, tmp_path):
    # Hydra lets '+' add keys even to typed nodes; mtbench refuses them before reading data.
    cfg = _compose(["+experiment=cifar100_mtl", override])
    with pytest.raises(ValueError, match=f"unknown config key '{key}'"):
        Benchmark(cfg, tmp_path)
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize(
    "override",
    ["trainer.epochs=ten", "trainer.precision=float64", "dataset.download=maybe", "seed=x"],
)
def test_wrongly_typed_value_fails_at_compose_time(override):
    with pytest.raises(ConfigCompositionException) as info:
        _compose(["+experiment=cifar100_mtl", override])
    assert isinstance(info.value.__cause__, ValidationError)


WEIGHTING_FILES = sorted(p.stem for p in (config_dir() / "weighting").glob("*.yaml"))


def test_every_reference_weighting_has_its_config_file():
    from mtbench import list_plugins

    reference = [n for n in list_plugins("weighting") if n in set(WEIGHTING_FILES)]
    assert WEIGHTING_FILES == reference == sorted(reference)
    assert {"ew", "static", "uw", "pcgrad", "mgda", "nashmtl", "upgrad"} <= set(WEIGHTING_FILES)


@pytest.mark.parametrize("name", WEIGHTING_FILES)
def test_weighting_config_file_holds_the_plugin_defaults_and_stays_typed(name, recwarn):
    """conf/weighting/<name>.yaml extends the plugin's dataclass: it composes to exactly the
    dataclass's defaults (the file cannot drift from the code), without Hydra's deprecated
    automatic schema matching, and the options stay typed."""
    import dataclasses

    from mtbench import registry

    cfg = _compose(["+experiment=cifar100_mtl", f"weighting={name}"])
    plugin = registry.get("weighting", name)
    expected = OmegaConf.to_container(OmegaConf.structured(plugin.schema))
    assert OmegaConf.to_container(cfg.weighting) == expected
    assert not [w for w in recwarn if "schema" in str(w.message).lower()]
    with pytest.raises(ConfigCompositionException):
        _compose(["+experiment=cifar100_mtl", f"weighting={name}", "weighting.no_such_option=1"])
    fields = [f for f in dataclasses.fields(plugin.config) if f.type in (float, "float")]
    if fields:
        with pytest.raises(ConfigCompositionException) as info:
            _compose(
                ["+experiment=cifar100_mtl", f"weighting={name}", f"weighting.{fields[0].name}=x"]
            )
        assert isinstance(info.value.__cause__, ValidationError)


def test_cli_rejects_unknown_plugin_before_training(tmp_path):
    result = run_mtbench(
        ["+experiment=cifar100_mtl", "weighting=nosuch", f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode != 0
    assert "Could not find 'weighting/nosuch'" in result.stderr
    assert "ew" in result.stderr and "static" in result.stderr
    assert not (tmp_path / "run" / "results.json").exists()


# ------------------------------------------------------------------------ choices are Enums
#: Every option of the reference plugins that is a choice: (kind, plugin, option) -> the values
#: users type. Each is an Enum field, so a wrong value fails when Hydra composes.
CHOICES = {
    ("weighting", "aligned_mtl", "scale_mode"): ["min", "median", "rmse"],
    ("weighting", "famo", "update"): ["same_batch", "next_batch"],
    ("weighting", "graddrop", "gradient_of"): ["features", "shared_parameters"],
    ("weighting", "mgda", "normalization"): ["none", "l2", "loss", "loss+"],
    ("weighting", "mgda_log", "normalization"): ["none", "l2", "loss", "loss+"],
    ("weighting", "pcgrad", "reduction"): ["sum", "mean"],
    ("weighting", "rlw", "distribution"): ["normal", "uniform", "dirichlet"],
    ("weighting", "uw", "form"): ["classification", "regression"],
    ("backbone", "resnet9", "global_pool"): ["max", "avg"],
    ("backbone", "schnet", "readout"): ["sum", "mean", "sum_mean"],
    ("dataset", "qm9", "energy_unit"): ["meV", "eV"],
    ("dataset", "qm9", "energies"): ["atomization", "total"],
}
VALID_CHOICES = [(*key, value) for key, values in CHOICES.items() for value in values]


def _enum_options() -> dict[tuple[str, str, str], type]:
    """(kind, plugin, option) -> its Enum, for every Enum field of the reference plugins."""
    import dataclasses
    import typing
    from enum import Enum

    from mtbench import registry

    found = {}
    for kind in registry.CONFIG_KINDS:
        for name in registry.names(kind):
            config = registry.get(kind, name).config
            if not config.__module__.startswith("mtbench_plugins."):
                continue  # a third party's plugin
            hints = typing.get_type_hints(config)
            for field in dataclasses.fields(config):
                if isinstance(hints[field.name], type) and issubclass(hints[field.name], Enum):
                    found[(kind, name, field.name)] = hints[field.name]
    return found


def test_every_choice_of_the_reference_plugins_is_an_enum_named_as_users_type_it():
    found = _enum_options()
    assert sorted(found) == sorted(CHOICES)
    for key, enum in found.items():
        assert [m.name for m in enum] == [m.value for m in enum] == CHOICES[key], key


@pytest.mark.parametrize(("kind", "name", "option"), sorted(CHOICES))
def test_a_wrong_choice_fails_at_compose_time_listing_the_choices(kind, name, option):
    with pytest.raises(ConfigCompositionException) as info:
        _compose(["+experiment=cifar100_mtl", f"{kind}={name}", f"{kind}.{option}=nope"])
    cause = info.value.__cause__
    assert isinstance(cause, ValidationError)
    expected = f"Invalid value 'nope', expected one of [{', '.join(CHOICES[kind, name, option])}]"
    assert expected in str(cause)
    assert f"full_key: {kind}.{option}" in str(cause)


@pytest.mark.parametrize(("kind", "name", "option"), sorted(CHOICES))
def test_a_wrong_choice_from_python_is_refused_naming_the_key_and_the_choices(kind, name, option):
    from mtbench import registry

    choices = ", ".join(repr(value) for value in CHOICES[kind, name, option])
    with pytest.raises(ValueError) as info:
        registry.build(kind, {"name": name, option: "nope"})
    assert str(info.value) == f"{kind}.{option}='nope'; choose one of {choices}"


def _held_option(plugin, option):
    """The option as a built plugin holds it and as its ``get_config`` returns it (a dataset is
    not a Keras object: it holds its options in ``config``)."""
    if not hasattr(plugin, "get_config"):
        held = getattr(plugin.config, option)
        return held, held
    return getattr(plugin, option), plugin.get_config()[option]


@pytest.mark.parametrize(("kind", "name", "option", "value"), VALID_CHOICES)
def test_each_valid_choice_composes_builds_and_stays_a_plain_string(kind, name, option, value):
    import json

    from mtbench import registry

    cfg = _compose(["+experiment=cifar100_mtl", f"{kind}={name}", f"{kind}.{option}={value}"])
    composed = cfg[kind][option]
    assert composed.name == composed.value == value  # typed: an Enum member
    # results.json and run identities read the config with enum_to_str: the same string as before
    container = OmegaConf.to_container(cfg[kind], resolve=True, enum_to_str=True)
    assert json.loads(json.dumps(container))[option] == value
    built = registry.build(kind, cfg[kind])
    for held in _held_option(built, option):
        assert type(held) is str and held == value
    if kind == "dataset":  # not a Keras object: no serialisation to round-trip
        return
    clone = type(built).from_config(built.get_config())  # Keras serialisation round-trips
    assert _held_option(clone, option) == (value, value)
    # Python callers may pass the Enum member or its value
    for given in (composed, value):
        assert _held_option(registry.build(kind, {"name": name, option: given}), option) == (
            value,
            value,
        )


@pytest.mark.parametrize(("kind", "name", "option"), sorted(CHOICES))
def test_the_default_choice_composes_and_builds(kind, name, option):
    import dataclasses

    from mtbench import registry

    config = registry.get(kind, name).config
    default = {f.name: f.default for f in dataclasses.fields(config)}[option]
    assert default.value in CHOICES[kind, name, option]
    cfg = _compose(["+experiment=cifar100_mtl", f"{kind}={name}"])
    assert cfg[kind][option] is default
    assert _held_option(registry.build(kind, cfg[kind]), option) == (default.value,) * 2
    assert _held_option(registry.build(kind, {"name": name}), option) == (default.value,) * 2


def test_cli_refuses_a_wrong_choice_before_any_work_and_lists_the_choices(tmp_path):
    result = run_mtbench(
        [
            "+experiment=cifar100_mtl",
            "weighting=mgda",
            "weighting.normalization=nope",
            f"hydra.run.dir={tmp_path}/run",
        ],
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode != 0
    assert "Invalid value 'nope', expected one of [none, l2, loss, loss+]" in result.stderr
    assert "full_key: weighting.normalization" in result.stderr
    assert not (tmp_path / "run").exists()
