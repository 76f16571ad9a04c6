"""The options of the ``qm9`` dataset, kept apart from the dataset (without TensorFlow) so that the
command line types them without importing any dataset."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .options import LOCATION


class EnergyUnit(StrEnum):
    """The unit of the energy targets (``homo``, ``lumo``, ``zpve``, ``U0``, ``U``, ``H``,
    ``G``): ``meV`` as the tables of Nash-MTL and FAMO report them, or ``eV`` as PyTorch
    Geometric stores them."""

    meV = "meV"
    eV = "eV"


class Energies(StrEnum):
    """What ``U0``, ``U``, ``H`` and ``G`` are: ``atomization`` energies (the molecule's energy
    less that of its free atoms, as Nash-MTL, FAMO and DimeNet train on, PyTorch Geometric's
    targets 12-15) or the ``total`` energies the dataset lists (PyTorch Geometric's targets
    7-10)."""

    atomization = "atomization"
    total = "total"


@dataclass
class Qm9Config:
    """Options of the ``qm9`` dataset.

    Attributes:
        root: Folder holding the CSV files of the ``qm9pack`` package (``qm9_part1.csv``,
            ``qm9_part2.csv``, ``qm9_part3.csv``) and/or the converted array file ``qm9.npz``,
            which the first load writes here so that later loads take seconds.
        download: When ``root`` holds neither, read the CSV files of the installed ``qm9pack``
            package (``pip install "mtbench[qm9]"``). Nothing is fetched from the network at
            run time: pip downloads the package. ``false``: use only what is in ``root``.
        val_size: Molecules held out for validation (model selection).
        test_size: Molecules held out for the test (final numbers).
        train_limit: Train on a random subset of this many of the remaining molecules
            (``null``: all, 110,831 with the default sizes). A smaller limit's molecules are a
            subset of a larger one's.
        split_seed: Seeds the random split (test first, then validation, then training, from one
            permutation of all molecules, as Nash-MTL splits PyTorch Geometric's QM9). Kept apart
            from the training seed so that every seed of a sweep is tested on the same molecules.
        energy_unit: ``meV`` or ``eV`` for the energy targets (see the README's units table).
        energies: ``atomization`` or ``total`` for ``U0``, ``U``, ``H`` and ``G``.
    """

    root: str = field(
        default="${oc.env:MTBENCH_DATA_DIR,'~/.cache/mtbench'}/qm9", metadata=LOCATION
    )
    download: bool = field(default=True, metadata=LOCATION)
    val_size: int = 10_000
    test_size: int = 10_000
    train_limit: int | None = None
    split_seed: int = 0
    energy_unit: EnergyUnit = EnergyUnit.meV
    energies: Energies = Energies.atomization
