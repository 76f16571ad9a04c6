"""The ``qm9`` dataset on small CSV files in qm9pack's format: parsing and units, the cached array
file (made once, reused, made again when stale), where the data are looked for, the seeded split,
the conformance suite, and the ``qm9_mtl`` experiment end to end. One opt-in test reads the real
data of the installed qm9pack package (``pytest -m realdata``).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from mtbench import records, registry
from mtbench.cli import config_dir
from mtbench.config import store_schema
from mtbench.data import DatasetError, validate
from mtbench.protocol import Benchmark
from mtbench.testing import DatasetSuite
from mtbench_plugins.backbones.options import SchNetConfig
from mtbench_plugins.backbones.schnet import SchNet
from mtbench_plugins.datasets import qm9 as qm9_module
from mtbench_plugins.datasets.qm9 import MoleculeInputs, Qm9, package_folder
from mtbench_plugins.datasets.qm9_formats import (
    ATOMREF,
    CACHE,
    CSV_FILES,
    HARTREE_TO_EV,
    MAX_ATOMS,
    NUM_MOLECULES,
    TARGETS,
)
from mtbench_plugins.datasets.qm9_options import Qm9Config

HEADER = (
    "XYZ_file,Index,SMILES,InChi,N_atoms,Stoichiometry,Elements,XYZ_Ang,Mulliken_pop,"
    "Harmonic_Freq_cmi,RotA_GHz,RotB_GHz,RotC_GHz,Dipole_debye,Polarizability_bohr3,HOMO_au,"
    "LUMO_au,HOMO_LUMO_gap_au,R2_bohr2,ZPVE_au,InternalEnergy_0K_au,InternalEnergy_298K_au,"
    "Enthalphy_298K_au,GibbsFreeEnergy_298K_au,Heatcapacity_Cv_cal_mol_K"
)
# The first and third rows of qm9pack's qm9_part1.csv, verbatim.
METHANE_ROW = (
    '"dsgdb9nsd_000001.xyz",1,"C","InChI=1S/CH4/h1H4",5,"[4,1,0,0,0]","[\'C\',\'H\',\'H\',\'H\','
    "'H']\",\"[[-0.0126981359,1.0858041578,0.0080009958],[0.002150416,-0.0060313176,0.0019761204],"
    "[1.0117308433,1.4637511618,0.0002765748],[-0.540815069,1.4475266138,-0.8766437152],"
    '[-0.5238136345,1.4379326443,0.9063972942]]","[-0.535689,0.133921,0.133922,0.133923,0.133923]'
    '","[1341.307,1341.3284,1341.365,1562.6731,1562.7453,3038.3205,3151.6034,3151.6788,3151.7078]",'
    "157.7118,157.70997,157.70699,0.,13.21,-0.3877,0.1171,0.5048,35.3641,0.044749,-40.47893,"
    "-40.476062,-40.475117,-40.498597,6.469"
)
WATER_ROW = (
    '"dsgdb9nsd_000003.xyz",3,"O","InChI=1S/H2O/h1H2",3,"[2,0,0,1,0]","[\'O\',\'H\',\'H\']",'
    '"[[-0.0343604951,0.9775395708,0.0076015923],[0.0647664923,0.0205721989,0.0015346341],'
    '[0.8717903737,1.3007924048,0.0006931336]]","[-0.589706,0.294853,0.294853]","[1671.4222,'
    '3803.6305,3907.698]",799.58812,437.90386,282.94545,1.8511,6.31,-0.2928,0.0687,0.3615,19.0002,'
    "0.021375,-76.404702,-76.401867,-76.400922,-76.422349,6.002"
)
SYMBOLS = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F"}


def _random_row(rng: np.random.Generator, index: int, atoms: int | None = None) -> list:
    """A made-up molecule in qm9pack's columns, properties plausible for its composition."""
    atoms = atoms or int(rng.integers(3, 14))
    z = rng.choice([1, 1, 6, 6, 7, 8, 9], atoms)
    r = np.cumsum(rng.normal(scale=0.9, size=(atoms, 3)), axis=0)  # distinct positions
    heavy = int((z > 1).sum())
    u0 = sum(ATOMREF[int(e)][0] for e in z) - 0.12 * heavy - 0.03 * atoms + rng.normal(0, 0.01)
    homo, lumo = -0.25 + rng.normal(0, 0.02), 0.01 + rng.normal(0, 0.03)
    counts = [int((z == e).sum()) for e in (1, 6, 7, 8, 9)]
    xyz = "[" + ",".join("[" + ",".join(f"{c:.10f}" for c in p) + "]" for p in r) + "]"
    return [
        f"dsgdb9nsd_{index:06d}.xyz", index, "C", "InChI=1S/made-up", atoms,
        str(counts).replace(" ", ""), str([SYMBOLS[int(e)] for e in z]).replace(" ", ""), xyz,
        "[" + ",".join(["0.1"] * atoms) + "]", "[1000.0,2000.0]", 10.0, 5.0, 4.0,
        abs(rng.normal(2.5, 1.2)), 8.0 * heavy + rng.normal(0, 2), homo, lumo, lumo - homo,
        120.0 * heavy + rng.normal(0, 20), 0.012 * atoms + rng.normal(0, 0.002),
        u0, u0 + 0.004, u0 + 0.005, u0 - 0.03, 2.5 * atoms + rng.normal(0, 1),
    ]  # fmt: skip


def write_qm9pack(folder: Path, size: int = 40, seed: int = 0, extra: list | None = None) -> None:
    """qm9pack's three CSV files: methane, water and ``size`` made-up molecules (indices with
    gaps, as QM9's numbering has where uncharacterized molecules are left out)."""
    rng = np.random.default_rng(seed)
    rows = [_random_row(rng, 10 + 2 * i) for i in range(size)] + (extra or [])
    folder.mkdir(parents=True, exist_ok=True)
    thirds = np.array_split(np.arange(len(rows)), 3)
    for part, (name, members) in enumerate(zip(CSV_FILES, thirds, strict=True)):
        with open(folder / name, "w", newline="") as f:
            f.write(HEADER + "\n")
            if part == 0:
                f.write(METHANE_ROW + "\n" + WATER_ROW + "\n")
            writer = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
            for i in members:
                writer.writerow(rows[i])


@pytest.fixture
def root(tmp_path) -> Path:
    write_qm9pack(tmp_path / "qm9")
    return tmp_path / "qm9"


def _load(root: Path, **options):
    defaults = {"root": str(root), "download": False, "val_size": 8, "test_size": 8}
    return Qm9(**(defaults | options)).load()


def _all(data) -> dict[str, np.ndarray]:
    """Every molecule of the three splits by its coordinates' bytes: the inputs and targets."""
    out = {}
    for split in (data.train, data.val, data.test):
        for i in range(len(split)):
            key = split.x["r"][i].tobytes()
            out[key] = {t: split.y[t][i] for t in split.y} | {"z": split.x["z"][i]}
    return out


# --------------------------------------------------------------------------- parsing and units
def test_reads_atoms_coordinates_and_properties_in_their_units(root):
    raw = Qm9(root=str(root), download=False).read()
    assert len(raw) == 42 and raw.index[:2].tolist() == [1, 3]
    assert raw.z.shape == (42, MAX_ATOMS) and raw.r.shape == (42, MAX_ATOMS, 3)
    assert raw.z[0, :6].tolist() == [6, 1, 1, 1, 1, 0] and raw.mask[0].sum() == 5
    np.testing.assert_allclose(raw.r[0, 1], [0.002150416, -0.0060313176, 0.0019761204], rtol=1e-6)
    assert not raw.r[0, 5:].any()

    targets = raw.targets("meV", "atomization")
    methane = {name: values[0] for name, values in targets.items()}
    assert methane["mu"] == 0.0 and methane["alpha"] == 13.21 and methane["r2"] == 35.3641
    assert methane["Cv"] == 6.469
    assert methane["homo"] == pytest.approx(-0.3877 * HARTREE_TO_EV * 1000)  # -10549.85 meV
    assert methane["zpve"] == pytest.approx(0.044749 * HARTREE_TO_EV * 1000)
    # U0 less the free atoms' (atomref.txt): PyTorch Geometric's U0_ATOM of the first molecule is
    # -395.999594 kcal/mol = -17172.2 meV (its factor 0.04336414 eV per kcal/mol)
    atoms_u0 = -37.846772 + 4 * -0.500273
    assert methane["U0"] == pytest.approx((-40.47893 - atoms_u0) * HARTREE_TO_EV * 1000)
    assert methane["U0"] == pytest.approx(-395.999594 * 43.36414, abs=0.1)
    assert methane["G"] == pytest.approx((-40.498597 - (-37.861317 + 4 * -0.510927)) * 27211.386)

    total = {name: values[0] for name, values in raw.targets("eV", "total").items()}
    assert total["U0"] == pytest.approx(-40.47893 * HARTREE_TO_EV)  # PyG's target 7: -1101.49 eV
    assert total["homo"] == pytest.approx(-10.549854, abs=1e-6)
    assert total["mu"] == 0.0 and total["Cv"] == 6.469  # not energies: not converted


@pytest.mark.parametrize(("energy_unit", "energy"), [("meV", "meV"), ("eV", "eV")])
def test_each_task_is_a_regression_in_its_unit(root, energy_unit, energy):
    data = _load(root, energy_unit=energy_unit)
    units = {t.name: t.options["units"] for t in data.tasks}
    assert list(units) == ["mu", "alpha", "homo", "lumo", "r2", "zpve", "U0", "U", "H", "G", "Cv"]
    assert {t.kind for t in data.tasks} == {"regression"}
    assert all(t.label_shape == () for t in data.tasks)
    assert units["mu"] == ["D"] and units["alpha"] == ["a0^3"] and units["r2"] == ["a0^2"]
    assert units["Cv"] == ["cal/(mol K)"]
    assert all(units[t] == [energy] for t in ("homo", "lumo", "zpve", "U0", "U", "H", "G"))
    kinds = validate(data, "qm9")
    assert kinds["homo"].unit == energy and kinds["mu"].metrics[0].higher_is_better is False


def test_inputs_are_padded_molecules(root):
    data = _load(root)
    x = data.train.x
    assert set(x) == {"z", "r", "mask"}
    assert x["z"].dtype == np.uint8 and x["r"].dtype == np.float32 and x["mask"].dtype == bool
    assert x["z"].shape[1:] == (MAX_ATOMS,) and x["r"].shape[1:] == (MAX_ATOMS, 3)
    np.testing.assert_array_equal(x["mask"], x["z"] > 0)
    assert isinstance(data.inputs, MoleculeInputs)


def test_the_preprocessing_layer_keeps_float32_coordinates_under_mixed_precision(root):
    import keras
    import tensorflow as tf

    from mtbench.model import dtype_policy

    data = _load(root)
    with dtype_policy("mixed_bfloat16"):
        layer = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(data.inputs.layer(data.train.x))
        )
        out = layer({k: tf.constant(v[:3]) for k, v in data.train.x.items()})
    assert {k: v.dtype for k, v in out.items()} == dict.fromkeys(("z", "r", "mask"), tf.float32)
    np.testing.assert_array_equal(out["r"].numpy(), data.train.x["r"][:3])


# ---------------------------------------------------------------------------- the cached file
def test_the_first_load_converts_and_later_loads_read_the_cache(root, monkeypatch):
    first = _load(root)
    assert (root / CACHE).is_file()

    def no_csv(paths):
        raise AssertionError("the CSV files were read again")

    monkeypatch.setattr(qm9_module, "read_csv", no_csv)
    second = _load(root)
    for name in ("train", "val", "test"):
        a, b = getattr(first, name), getattr(second, name)
        for key in ("z", "r", "mask"):
            np.testing.assert_array_equal(a.x[key], b.x[key])
        for task in a.y:
            np.testing.assert_array_equal(a.y[task], b.y[task])


def test_a_cache_made_from_other_files_is_made_again(root, caplog):
    _load(root)
    write_qm9pack(root, size=46, seed=1)  # the CSV files change: sizes and times differ
    with caplog.at_level(logging.WARNING):
        raw = Qm9(root=str(root), download=False).read()
    assert len(raw) == 48
    assert "converted from other CSV files" in caplog.text
    assert Qm9(root=str(root), download=False).read().source == raw.source  # cached again


def test_a_cache_of_another_layout_is_made_again_or_refused_without_csv_files(root, caplog):
    np.savez(root / CACHE, version=np.array(0), z=np.zeros((1, 29), np.uint8))
    with caplog.at_level(logging.WARNING):
        assert len(Qm9(root=str(root), download=False).read()) == 42
    assert "layout version 0" in caplog.text
    alone = root.parent / "alone"
    alone.mkdir()
    np.savez(alone / CACHE, version=np.array(0))
    with pytest.raises(DatasetError, match=r"cannot be used: layout version 0.*mtbench\[qm9\]"):
        Qm9(root=str(alone), download=False).read()


def test_a_damaged_cache_is_made_again(root, caplog):
    _load(root)
    with np.load(root / CACHE) as data:
        arrays = dict(data)
    arrays["z"] = arrays["z"][:-1]  # one molecule short
    np.savez(root / CACHE, **arrays)
    with caplog.at_level(logging.WARNING):
        assert len(Qm9(root=str(root), download=False).read()) == 42
    assert "inconsistent" in caplog.text


def test_the_cache_alone_is_enough(root, tmp_path):
    expected = _load(root)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(root / CACHE, alone / CACHE)
    data = _load(alone)
    np.testing.assert_array_equal(data.test.x["r"], expected.test.x["r"])


def test_an_unwritable_root_still_loads(root, monkeypatch, caplog):
    def refuse(path, raw):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(qm9_module, "write_cache", refuse)
    with caplog.at_level(logging.WARNING):
        assert len(_load(root).train) == 26
    assert "cannot write" in caplog.text


# ------------------------------------------------------------------------ where data are found
def test_the_installed_package_is_read_when_root_has_no_data(root, tmp_path, monkeypatch):
    monkeypatch.setattr(qm9_module, "package_folder", lambda: root)
    empty = tmp_path / "empty"
    data = _load(empty, download=True)
    assert len(data.train) + len(data.val) + len(data.test) == 42
    assert (empty / CACHE).is_file()  # converted into root, not into the package


def test_without_data_the_error_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(qm9_module, "package_folder", lambda: None)
    for download in (False, True):
        with pytest.raises(DatasetError, match=r'no QM9 found in .*pip install "mtbench\[qm9\]"'):
            _load(tmp_path / "nothing", download=download)
    with pytest.raises(DatasetError, match="dataset.download=false"):
        _load(tmp_path / "nothing", download=False)


def test_download_false_ignores_the_installed_package(tmp_path, root, monkeypatch):
    monkeypatch.setattr(qm9_module, "package_folder", lambda: root)
    with pytest.raises(DatasetError, match="no QM9 found"):
        _load(tmp_path / "empty", download=False)


def test_some_csv_files_but_not_all_are_refused(root):
    (root / CSV_FILES[2]).unlink()
    with pytest.raises(DatasetError, match=r"but not \['qm9_part3.csv'\]"):
        _load(root)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda row: row.replace("'C','H'", "'S','H'"), r"line 2: .*unknown element 'S'"),
        (lambda row: row.replace(',5,"[4,1', ',6,"[4,1'), r"line 2: .*N_atoms=6, 5 elements"),
        (lambda row: row.replace(",-0.3877,", ",oops,"), r"line 2: .*could not convert"),
    ],
)
def test_malformed_rows_are_refused_with_file_and_line(root, edit, message):
    path = root / CSV_FILES[0]
    lines = path.read_text().split("\n")
    lines[1] = edit(lines[1])
    path.write_text("\n".join(lines))
    with pytest.raises(DatasetError, match=message):
        _load(root)


def test_a_molecule_larger_than_qm9s_largest_is_refused(tmp_path):
    big = _random_row(np.random.default_rng(5), 9999, atoms=MAX_ATOMS + 1)
    write_qm9pack(tmp_path, size=3, extra=[big])
    with pytest.raises(DatasetError, match="30 atoms, more than QM9's 29"):
        _load(tmp_path)


def test_other_csv_files_are_refused_by_their_columns(tmp_path):
    for name in CSV_FILES:
        (tmp_path / name).write_text("smiles,homo\nC,-0.3\n")
    with pytest.raises(DatasetError, match="lacks the columns .*qm9_part"):
        _load(tmp_path)


def test_a_count_other_than_qm9s_is_logged(root, caplog):
    with caplog.at_level(logging.WARNING):
        _load(root)
    assert f"holds 42 molecules, not the {NUM_MOLECULES}" in caplog.text


# ----------------------------------------------------------------------------------- the split
def test_the_split_is_seeded_disjoint_and_sized(root):
    data = _load(root, val_size=6, test_size=9)
    assert (len(data.train), len(data.val), len(data.test)) == (27, 6, 9)
    again = _load(root, val_size=6, test_size=9)
    np.testing.assert_array_equal(data.val.x["r"], again.val.x["r"])
    other = _load(root, val_size=6, test_size=9, split_seed=1)
    assert not np.array_equal(data.test.x["r"], other.test.x["r"])
    assert len(_all(data)) == 42  # every molecule once


def test_the_test_molecules_do_not_depend_on_the_validation_size_or_the_limit(root):
    base = _load(root, val_size=5, test_size=7)
    other = _load(root, val_size=12, test_size=7, train_limit=4)
    np.testing.assert_array_equal(base.test.x["r"], other.test.x["r"])


def test_a_smaller_train_limit_takes_a_subset_of_a_larger_ones(root):
    small, large = _load(root, train_limit=5), _load(root, train_limit=15)
    assert len(small.train) == 5 and len(large.train) == 15
    assert set(_all(small).keys()) <= set(_all(_load(root)).keys())
    small_keys = {small.train.x["r"][i].tobytes() for i in range(5)}
    large_keys = {large.train.x["r"][i].tobytes() for i in range(15)}
    assert small_keys <= large_keys


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"val_size": 0}, r"dataset.val_size=0 must both be at least 1"),
        ({"test_size": 30, "val_size": 12}, r"leave no training molecule of the 42"),
        ({"train_limit": 27}, r"dataset.train_limit=27 is out of range: 26 molecules remain"),
        ({"train_limit": 0}, r"dataset.train_limit=0 is out of range"),
    ],
)
def test_impossible_sizes_are_refused_with_the_option_named(root, options, message):
    with pytest.raises(DatasetError, match=message):
        _load(root, **options)


def test_options_are_typed_without_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys; from mtbench_plugins.datasets.qm9_options import Qm9Config; "
        "c = Qm9Config(); print(c.val_size, c.test_size, c.energy_unit, c.energies); "
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["10000", "10000", "meV", "atomization", "False"]
    assert Qm9Config().train_limit is None and Qm9Config().download is True


# ------------------------------------------------------------------------------ conformance
@pytest.fixture(scope="module")
def qm9_plugins():
    """The plugins registered as their entry points will declare them, their options stored."""
    with registry.isolated():
        registry.register("dataset", "qm9", config=Qm9Config)(Qm9)
        registry.register("backbone", "schnet", config=SchNetConfig)(SchNet)
        registry.store_schemas(config_dir())
        store_schema()
        yield


class TestQm9(DatasetSuite):
    @pytest.fixture
    def dataset_config(self, qm9_plugins, root):
        return {"name": "qm9", "root": str(root), "download": False, "val_size": 8, "test_size": 8}


def _tiny_experiment(root) -> list[str]:
    """``+experiment=qm9_mtl`` on the small files of ``root``, two tasks, a small SchNet."""
    return [
        "+experiment=qm9_mtl", f"dataset.root={root}", "dataset.download=false",
        "dataset.val_size=8", "dataset.test_size=8", "dataset.train_limit=null",
        "benchmark.tasks=[homo,U0]", "backbone.hidden=8", "backbone.filters=8",
        "trainer.batch_size=13", "trainer.progress=false", "trainer.checkpoint_every=0",
        "benchmark.cost_rounds=0",
    ]  # fmt: skip


def test_the_experiment_runs_end_to_end(qm9_plugins, root, tmp_path):
    """``+experiment=qm9_mtl`` on the small files: single-task runs and the joint run train on the
    molecules and report each task's MAE in its unit."""
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                *_tiny_experiment(root), "trainer.epochs=2",
            ],
        )  # fmt: skip
    assert cfg.dataset.name == "qm9" and cfg.backbone.name == "schnet"
    Benchmark(cfg, tmp_path / "run").run()
    results = records.load(tmp_path / "run" / "results.json")
    assert results["status"] == "complete", results["error"]
    assert [r["name"] for r in results["runs"]] == ["single:homo", "single:U0", "joint"]
    assert results["tasks"]["homo"]["metrics"]["mae"]["unit"] == "meV"
    assert results["inputs"]["type"] == "MoleculeInputs"
    joint = {r["name"]: r for r in results["runs"]}["joint"]
    for task in ("homo", "U0"):
        mae = joint["test"][task]["mae"]
        assert np.isfinite(mae) and mae > 0
    assert np.isfinite(results["comparison"]["delta_m_percent"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "architecture",
    [["architecture=mmoe", "architecture.num_experts=2", "architecture.expert_stages=2"],
     ["architecture=mtan"]],
    ids=["mmoe", "mtan"],
)  # fmt: skip
def test_the_experiment_runs_with_a_sharing_architecture(qm9_plugins, root, tmp_path, architecture):
    """SchNet cut into stages by an architecture, through the protocol: the joint run completes
    and records its architecture and parameters."""
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                *_tiny_experiment(root), "backbone.interactions=2", "trainer.epochs=1",
                "benchmark.single_task=false", *architecture,
            ],
        )  # fmt: skip
    Benchmark(cfg, tmp_path / "run").run()
    results = records.load(tmp_path / "run" / "results.json")
    assert results["status"] == "complete", results["error"]
    (joint,) = results["runs"]
    assert joint["architecture"] == architecture[0].split("=")[1]
    counts = joint["parameter_counts"]
    assert counts["shared"] > 0 and all(n > 0 for n in counts["per_task"].values())
    assert all(np.isfinite(joint["test"][t]["mae"]) for t in ("homo", "U0"))


def test_every_target_has_a_unit_or_is_an_energy():
    for target in TARGETS:
        assert target.unit in ("D", "a0^3", "a0^2", "cal/(mol K)", None), target
    energies = [t.name for t in TARGETS if t.unit is None]
    assert energies == ["homo", "lumo", "zpve", "U0", "U", "H", "G"]
    assert [t.name for t in TARGETS if t.atomref is not None] == ["U0", "U", "H", "G"]


# ------------------------------------------------------------------------------ the real data
@pytest.mark.realdata
def test_the_real_qm9pack_data(tmp_path):
    """The installed qm9pack package: 130,831 molecules (QM9 less the 3,054 uncharacterized),
    the first one methane, converted in seconds and reloaded from the cache in well under one."""
    if package_folder() is None:
        pytest.skip('qm9pack is not installed (pip install "mtbench[qm9]")')
    dataset = Qm9(root=str(tmp_path), download=True)
    start = time.perf_counter()
    raw = dataset.read()
    converted = time.perf_counter() - start
    start = time.perf_counter()
    data = dataset.load()
    cached = time.perf_counter() - start
    print(f"\nconversion {converted:.1f} s, cached load and split {cached:.2f} s (wall clock)")
    assert len(raw) == NUM_MOLECULES == 130_831
    assert (len(data.train), len(data.val), len(data.test)) == (110_831, 10_000, 10_000)
    assert raw.index.min() == 1 and raw.index.max() == 133_885
    assert 58 not in set(raw.index.tolist())  # the first uncharacterized molecule
    assert int(raw.mask.sum(axis=1).max()) == MAX_ATOMS
    assert set(np.unique(raw.z).tolist()) == {0, 1, 6, 7, 8, 9}
    assert raw.z[0, :5].tolist() == [6, 1, 1, 1, 1] and raw.mask[0].sum() == 5  # methane
    targets = raw.targets("meV", "atomization")
    assert targets["homo"][0] == pytest.approx(-10549.85, abs=0.01)
    assert targets["U0"][0] == pytest.approx(-17172.2, abs=0.1)  # PyG: -395.999594 kcal/mol
    # the whole set's statistics: atomization energies spread over about 10 eV, total energies
    # over about 1,000 eV (what standardised training would have to resolve at the meV level)
    assert np.mean(targets["U0"]) == pytest.approx(-76_116.0, abs=1.0)
    assert np.std(targets["U0"]) == pytest.approx(10_323.7, abs=1.0)
    assert np.std(raw.targets("eV", "total")["U0"]) == pytest.approx(1085.6, abs=0.1)
    assert np.std(targets["homo"]) == pytest.approx(597.7, abs=0.1)
    assert converted < 120 and cached < 10
    source = json.loads(raw.source)
    assert [s["name"] for s in source] == list(CSV_FILES)
    assert os.path.getsize(tmp_path / CACHE) < 100e6
