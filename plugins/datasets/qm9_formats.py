"""Reading QM9 from the CSV files of the ``qm9pack`` package, and the array file they convert to.

``qm9pack`` (PyPI, MIT licence, by R. Ramakrishnan, the dataset's first author) ships
``qm9_part1.csv``, ``qm9_part2.csv`` and ``qm9_part3.csv``: one row per molecule, 130,831 in
all. These are the 133,885 molecules of QM9 less the 3,054 that the dataset's
``uncharacterized.txt`` lists (their B3LYP geometry no longer matches their SMILES), the same
molecules as PyTorch Geometric's ``QM9``. The columns read here: ``Index`` (the molecule's number,
1..133885), ``N_atoms``, ``Elements`` (``"['C','H','H','H','H']"``), ``XYZ_Ang`` (``"[[x,y,z],
...]"`` in Angstrom) and the eleven properties, in the units their names say: atomic units
(Hartree for energies, bohr for lengths), Debye, cal/(mol K).

The array file ``qm9.npz`` holds what the CSV files hold, in their units, padded to
:data:`MAX_ATOMS` atoms (``z`` uint8 [N, 29], 0 for padding; ``r`` float32 [N, 29, 3];
``properties`` float64 [N, 11]; ``index`` int32 [N]), with the version of this layout and the
size and modification time of the CSV files it was made from, so that a stale file is detected.
Unit conversion happens on loading (:meth:`RawQm9.targets`), so one file serves every unit option.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtbench.data import DatasetError
from mtbench.io import atomic_save_npz

CSV_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
CACHE = "qm9.npz"
#: The version of the array file's layout; a file of another version is converted again.
CACHE_VERSION = 1
#: Atoms of the largest QM9 molecule; every molecule is padded to this many.
MAX_ATOMS = 29
#: Molecules in the full set (133,885 less the 3,054 uncharacterized).
NUM_MOLECULES = 130_831
#: Hartree in eV, the factor PyTorch Geometric's QM9 uses (CODATA 2018).
HARTREE_TO_EV = 27.211386246
ELEMENTS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
#: The energies of the free atoms (Hartree, B3LYP/6-31G(2df,p), the dataset's ``atomref.txt``):
#: U0, U, H and G; an atomization energy is a molecule's energy less its atoms'.
ATOMREF = {
    1: (-0.500273, -0.498857, -0.497912, -0.510927),
    6: (-37.846772, -37.845355, -37.844411, -37.861317),
    7: (-54.583861, -54.582445, -54.581501, -54.598897),
    8: (-75.064579, -75.063163, -75.062219, -75.079532),
    9: (-99.718730, -99.717314, -99.716370, -99.733544),
}


@dataclass(frozen=True)
class Target:
    """One task of the dataset.

    Args:
        name: The task's name (Nash-MTL's).
        column: The CSV column it is read from.
        unit: The unit it is reported in; ``None`` for an energy (Hartree in the CSV file,
            reported in the dataset's ``energy_unit``).
        atomref: For ``U0``, ``U``, ``H`` and ``G``: which column of :data:`ATOMREF` gives the
            atoms' energies subtracted for the atomization energy.
    """

    name: str
    column: str
    unit: str | None = None
    atomref: int | None = None


#: The eleven tasks of the multitask QM9 benchmark (Nash-MTL's targets; the HOMO-LUMO gap, which
#: is ``lumo - homo``, is left out), in its order.
TARGETS = (
    Target("mu", "Dipole_debye", "D"),
    Target("alpha", "Polarizability_bohr3", "a0^3"),
    Target("homo", "HOMO_au"),
    Target("lumo", "LUMO_au"),
    Target("r2", "R2_bohr2", "a0^2"),
    Target("zpve", "ZPVE_au"),
    Target("U0", "InternalEnergy_0K_au", atomref=0),
    Target("U", "InternalEnergy_298K_au", atomref=1),
    Target("H", "Enthalphy_298K_au", atomref=2),  # the column's spelling
    Target("G", "GibbsFreeEnergy_298K_au", atomref=3),
    Target("Cv", "Heatcapacity_Cv_cal_mol_K", "cal/(mol K)"),
)
ENERGY_FACTORS = {"eV": HARTREE_TO_EV, "meV": 1000.0 * HARTREE_TO_EV}


def unit_of(target: Target, energy_unit: str) -> str:
    return target.unit or energy_unit


@dataclass
class RawQm9:
    """QM9 as its files hold it (CSV units), molecules padded to :data:`MAX_ATOMS` atoms.

    Args:
        index: The molecules' numbers in QM9 (1..133885), int32 [N].
        z: Atomic numbers, 0 for padding, uint8 [N, MAX_ATOMS].
        r: Coordinates in Angstrom, 0 for padding, float32 [N, MAX_ATOMS, 3].
        properties: The columns of :data:`TARGETS` in the CSV's units, float64 [N, 11].
        source: The fingerprint of the CSV files read (:func:`fingerprint`).
    """

    index: np.ndarray
    z: np.ndarray
    r: np.ndarray
    properties: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.index)

    @property
    def mask(self) -> np.ndarray:
        """Which atom slots hold an atom, bool [N, MAX_ATOMS]."""
        return self.z > 0

    def targets(self, energy_unit: str, energies: str) -> dict[str, np.ndarray]:
        """Each task's targets (float64 [N]) in its reported unit.

        Args:
            energy_unit: ``meV`` or ``eV`` for the energies.
            energies: ``atomization`` or ``total`` for ``U0``, ``U``, ``H`` and ``G``.
        """
        factor = ENERGY_FACTORS[energy_unit]
        counts = {element: (self.z == element).sum(axis=1) for element in ATOMREF}
        out = {}
        for column, target in enumerate(TARGETS):
            values = self.properties[:, column].copy()
            if target.atomref is not None and energies == "atomization":
                values -= sum(counts[e] * ATOMREF[e][target.atomref] for e in ATOMREF)
            out[target.name] = values if target.unit else values * factor
        return out

    def validate(self) -> None:
        n = len(self.index)
        shapes = {
            "z": (self.z.shape, (n, MAX_ATOMS)),
            "r": (self.r.shape, (n, MAX_ATOMS, 3)),
            "properties": (self.properties.shape, (n, len(TARGETS))),
        }
        for name, (actual, expected) in shapes.items():
            if actual != expected:
                raise DatasetError(f"QM9 {name} has shape {actual}, expected {expected}")
        if n == 0:
            raise DatasetError("QM9 holds no molecule")
        if len(np.unique(self.index)) != n:
            raise DatasetError("QM9 lists a molecule twice (its Index column repeats)")
        if not np.isfinite(self.properties).all():
            raise DatasetError("QM9 properties hold NaN or infinite values")
        unknown = sorted(set(np.unique(self.z).tolist()) - {0, *ELEMENTS.values()})
        if unknown:
            raise DatasetError(f"QM9 holds atomic numbers {unknown}, not only H, C, N, O, F")


def fingerprint(paths: Sequence[Path]) -> str:
    """The name, size and modification time of each file, as JSON: the cache's key."""
    entries = []
    for path in paths:
        stat = path.stat()
        entries.append({"name": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return json.dumps(entries, sort_keys=True)


def _numbers(text: str) -> np.ndarray:
    cleaned = text.replace("[", " ").replace("]", " ").replace(",", " ")
    return np.array(cleaned.split(), dtype=np.float64)


def read_csv(paths: Sequence[Path]) -> RawQm9:
    """Read ``qm9pack``'s CSV files (all rows of all files, in order)."""
    columns = ["Index", "N_atoms", "Elements", "XYZ_Ang", *(t.column for t in TARGETS)]
    index: list[int] = []
    z_rows: list[np.ndarray] = []
    r_rows: list[np.ndarray] = []
    props: list[list[float]] = []
    for path in paths:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None) or []
            missing = [c for c in columns if c not in header]
            if missing:
                raise DatasetError(
                    f"{path} lacks the columns {missing} of qm9pack's CSV files (it has "
                    f"{header[:8]}...): is it one of qm9pack's qm9_part*.csv?"
                )
            at = [header.index(c) for c in columns]
            for line, row in enumerate(reader, start=2):
                try:
                    n = int(row[at[1]])
                    symbols = [s.strip(" '\"") for s in row[at[2]].strip("[] ").split(",")]
                    xyz = _numbers(row[at[3]])
                    z = np.array([ELEMENTS[s] for s in symbols], np.uint8)
                    if not len(z) == n == len(xyz) // 3 or len(xyz) % 3:
                        raise ValueError(
                            f"N_atoms={n}, {len(z)} elements and {len(xyz)} coordinates"
                        )
                    if n > MAX_ATOMS:
                        raise ValueError(f"{n} atoms, more than QM9's {MAX_ATOMS}")
                    padded_z = np.zeros(MAX_ATOMS, np.uint8)
                    padded_z[:n] = z
                    padded_r = np.zeros((MAX_ATOMS, 3), np.float32)
                    padded_r[:n] = xyz.reshape(n, 3)
                    values = [float(row[i]) for i in at[4:]]
                    index.append(int(row[at[0]]))
                except (KeyError, ValueError, IndexError) as exc:
                    detail = f"unknown element {exc}" if isinstance(exc, KeyError) else exc
                    raise DatasetError(f"{path}, line {line}: cannot read it: {detail}") from None
                z_rows.append(padded_z)
                r_rows.append(padded_r)
                props.append(values)
    return RawQm9(
        index=np.array(index, np.int32),
        z=np.array(z_rows, np.uint8).reshape(-1, MAX_ATOMS),
        r=np.array(r_rows, np.float32).reshape(-1, MAX_ATOMS, 3),
        properties=np.array(props, np.float64).reshape(-1, len(TARGETS)),
        source=fingerprint(paths),
    )


def write_cache(path: Path, raw: RawQm9) -> None:
    atomic_save_npz(
        path,
        {
            "version": np.array(CACHE_VERSION),
            "source": np.array(raw.source),
            "columns": np.array([t.column for t in TARGETS]),
            "index": raw.index,
            "z": raw.z,
            "r": raw.r,
            "properties": raw.properties,
        },
    )


class StaleCache(Exception):
    """The array file cannot be used: another layout version, or unreadable or inconsistent
    arrays (convert the CSV files again)."""


def read_cache(path: Path) -> RawQm9:
    """Read the array file.

    Raises:
        StaleCache: it was written by another version of this module, or is damaged.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            version = int(data["version"]) if "version" in data else None
            if version != CACHE_VERSION:
                raise StaleCache(f"layout version {version}, this mtbench reads {CACHE_VERSION}")
            columns = data["columns"].tolist()
            if columns != [t.column for t in TARGETS]:
                raise StaleCache(f"its properties are {columns}")
            raw = RawQm9(
                index=data["index"],
                z=data["z"],
                r=data["r"],
                properties=data["properties"],
                source=str(data["source"]),
            )
    except (KeyError, ValueError, OSError) as exc:  # truncated, or not an npz at all
        raise StaleCache(f"it cannot be read ({exc})") from None
    try:
        raw.validate()
    except DatasetError as exc:
        raise StaleCache(f"its arrays are inconsistent ({exc})") from None
    return raw
