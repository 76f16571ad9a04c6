"""The ``qm9`` dataset: eleven quantum-chemical properties of 130,831 small organic molecules.

Ramakrishnan et al. 2014, "Quantum chemistry structures and properties of 134 kilo molecules",
in the multitask setup of Nash-MTL (Navon et al. 2022) and FAMO (Liu et al. 2023): eleven
regression tasks on one molecule, each scored by its MAE in its physical unit (lower is better),
targets standardised for training. The data come from the CSV files of the ``qm9pack`` package
(see :mod:`.qm9_formats`), converted once into ``qm9.npz``.
"""

from __future__ import annotations

import logging
from enum import Enum
from importlib import metadata
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mtbench.data import DatasetError, DatasetSplits, Split
from mtbench.inputs import Inputs
from mtbench.tasks import TaskSpec

from .qm9_formats import (
    CACHE,
    CSV_FILES,
    MAX_ATOMS,
    NUM_MOLECULES,
    TARGETS,
    RawQm9,
    StaleCache,
    fingerprint,
    read_cache,
    read_csv,
    unit_of,
    write_cache,
)
from .qm9_options import Energies, EnergyUnit, Qm9Config

log = logging.getLogger(__name__)

PACKAGE = "qm9pack"


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class MoleculePreprocessing(keras.layers.Layer):
    """A padded molecule ``{"z", "r", "mask"}`` -> the same keys as float32, whatever the dtype
    policy: coordinates stay float32 under mixed precision (bfloat16 would round a coordinate of
    4 Angstrom to 0.03 Angstrom), atomic numbers are exact in float32.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)

    def call(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {key: tf.cast(value, tf.float32) for key, value in inputs.items()}

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("autocast", None)
        return config


class MoleculeInputs(Inputs):
    """Padded molecules: ``z`` atomic numbers (0: padding) [N, A], ``r`` coordinates in Angstrom
    [N, A, 3], ``mask`` which slots hold an atom [N, A]; no augmentation, one view."""

    def layer(self, train_x: Any) -> keras.layers.Layer:
        return MoleculePreprocessing(name="preprocessing")

    def describe(self) -> dict[str, Any]:
        return {
            "type": "MoleculeInputs",
            "keys": {
                "z": "atomic number (0: padding)",
                "r": "coordinates, Angstrom",
                "mask": "atom present",
            },
            "max_atoms": MAX_ATOMS,
            "dtype": "float32",
        }


def package_folder() -> Path | None:
    """The data folder of the installed ``qm9pack`` package, found without importing it (its
    ``__init__`` imports ``pkg_resources``, which recent setuptools no longer ship)."""
    try:
        distribution = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        return None
    folder = Path(str(distribution.locate_file(f"{PACKAGE}/data")))
    return folder if folder.is_dir() else None


def _choice(key: str, value: Any, choices: type[Enum]) -> str:
    """``value`` (a member of ``choices`` or its value) as a plain string, or a clear error."""
    try:
        return choices(getattr(value, "value", value)).value
    except ValueError:
        allowed = ", ".join(repr(c.value) for c in choices)
        raise ValueError(f"dataset.{key}={value!r}; choose one of {allowed}") from None


class Qm9:
    """QM9 with tasks ``mu, alpha, homo, lumo, r2, zpve, U0, U, H, G, Cv`` (regression).

    Inputs are padded molecules (:class:`MoleculeInputs`). The split follows Nash-MTL: one seeded
    permutation of all molecules gives the test molecules, then the validation molecules, and the
    rest train. Units and conversions: the README's QM9 section and :mod:`.qm9_formats`.

    Example:
        >>> splits = Qm9(root="~/data/qm9").load()
        >>> [t.name for t in splits.tasks][:3], len(splits.train)
        (['mu', 'alpha', 'homo'], 110831)
    """

    def __init__(self, **options: Any) -> None:
        config = Qm9Config(**options)
        config.energy_unit = _choice("energy_unit", config.energy_unit, EnergyUnit)
        config.energies = _choice("energies", config.energies, Energies)
        self.config = config
        self.root = Path(config.root).expanduser()

    def tasks(self) -> tuple[TaskSpec, ...]:
        unit = str(self.config.energy_unit)
        return tuple(
            TaskSpec(t.name, kind="regression", options={"units": [unit_of(t, unit)]})
            for t in TARGETS
        )

    def load(self) -> DatasetSplits:
        raw = self.read()
        if len(raw) != NUM_MOLECULES:
            log.warning(
                "QM9 in %s holds %d molecules, not the %d of the full set", self.root, len(raw),
                NUM_MOLECULES,
            )  # fmt: skip
        targets = raw.targets(str(self.config.energy_unit), str(self.config.energies))
        everything = Split({"z": raw.z, "r": raw.r, "mask": raw.mask}, targets)
        test, val, train = self.split(len(raw))
        return DatasetSplits(
            train=everything.take(train),
            val=everything.take(val),
            test=everything.take(test),
            tasks=self.tasks(),
            inputs=MoleculeInputs(),
        )

    def split(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sorted indices of the test, validation and training molecules."""
        config = self.config
        if config.test_size < 1 or config.val_size < 1:
            raise DatasetError(
                f"dataset.test_size={config.test_size} and dataset.val_size={config.val_size} "
                "must both be at least 1: the validation molecules select the best epoch, the "
                "test molecules give the final numbers"
            )
        held_out = config.test_size + config.val_size
        if held_out >= n:
            raise DatasetError(
                f"dataset.test_size={config.test_size} and dataset.val_size={config.val_size} "
                f"leave no training molecule of the {n} in {self.root}: choose sizes whose sum "
                f"is below {n}"
            )
        order = np.random.default_rng(config.split_seed).permutation(n)
        test, val = order[: config.test_size], order[config.test_size : held_out]
        train = order[held_out:]
        if config.train_limit is not None:
            if not 0 < config.train_limit <= len(train):
                raise DatasetError(
                    f"dataset.train_limit={config.train_limit} is out of range: "
                    f"{len(train)} molecules remain for training. Choose 1..{len(train)} or "
                    "null for all."
                )
            train = train[: config.train_limit]
        return np.sort(test), np.sort(val), np.sort(train)

    # ------------------------------------------------------------------------------- reading
    def _help(self) -> str:
        return (
            f'Install the qm9pack package (pip install "mtbench[qm9]", or pip install qm9pack) '
            f"and keep dataset.download=true, or put its CSV files ({', '.join(CSV_FILES)}) or "
            f"a {CACHE} converted from them in {self.root} (or point dataset.root, or "
            "$MTBENCH_DATA_DIR whose qm9/ subfolder is the default root, at the folder that "
            "holds them)."
        )

    def sources(self) -> list[Path] | None:
        """The CSV files to read: those in ``root``, else (with ``download``) the installed
        package's; ``None`` when neither is there."""
        present = [name for name in CSV_FILES if (self.root / name).is_file()]
        if present:
            missing = sorted(set(CSV_FILES) - set(present))
            if missing:
                raise DatasetError(
                    f"{self.root} holds {present} but not {missing}: QM9 is split over the three "
                    f"files {', '.join(CSV_FILES)}. Copy all three, or remove them to use the "
                    "installed qm9pack package."
                )
            return [self.root / name for name in CSV_FILES]
        if not self.config.download:
            return None
        folder = package_folder()
        if folder is None:
            return None
        paths = [folder / name for name in CSV_FILES]
        absent = [str(p) for p in paths if not p.is_file()]
        if absent:
            raise DatasetError(
                f"the installed qm9pack package lacks {absent}: reinstall it "
                f"(pip install --force-reinstall qm9pack). {self._help()}"
            )
        return paths

    def read(self) -> RawQm9:
        """The cached array file if it is current, else the CSV files (converted and cached)."""
        sources = self.sources()
        cache = self.root / CACHE
        if cache.is_file():
            try:
                raw = read_cache(cache)
            except StaleCache as exc:
                if sources is None:
                    raise DatasetError(
                        f"{cache} cannot be used: {exc}, and no CSV files to convert again are "
                        f"found. {self._help()}"
                    ) from None
                log.warning("%s is stale (%s): converting the CSV files again", cache, exc)
            else:
                if sources is None:
                    return raw  # nothing to compare it with: the file is the data
                if raw.source == fingerprint(sources):
                    return raw
                log.warning(
                    "%s was converted from other CSV files than %s (sizes or times differ): "
                    "converting them again",
                    cache,
                    sources[0].parent,
                )
        if sources is None:
            raise DatasetError(
                f"no QM9 found in {self.root} (looked for {CACHE} and {', '.join(CSV_FILES)})"
                + ("" if self.config.download else " and dataset.download=false")
                + f". {self._help()}"
            )
        log.info("converting QM9 from %s (once; later loads read %s)", sources[0].parent, cache)
        raw = read_csv(sources)
        raw.validate()
        try:
            write_cache(cache, raw)
        except OSError as exc:
            log.warning("cannot write %s (%s): the CSV files are read again next time", cache, exc)
        return raw
