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
