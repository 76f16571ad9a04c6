"""The ``cifar100`` dataset: two tasks on one image, the fine label and its superclass."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mtbench import register
from mtbench.data import DatasetError, DatasetSplits, Split, TaskHierarchy, TaskSpec, holdout_splits
from mtbench.io import download, md5sum

from .cifar100_formats import (
    ARCHIVE,
    FINE_TO_COARSE,
    FOLDER,
    MD5,
    NPZ,
    NUM_COARSE,
    NUM_FINE,
    TEST_SIZE,
    TRAIN_SIZE,
    URL,
    RawCifar100,
    extract_archive,
    read_folder,
    read_npz,
)

log = logging.getLogger(__name__)


@dataclass
class Cifar100Config:
    """Options of the ``cifar100`` dataset.

    Attributes:
        root: Folder holding ``cifar100.npz``, ``cifar-100-python/`` or ``cifar-100-python.tar.gz``
            (looked for in that order). The archive is downloaded here when none is present.
        download: Download the official archive when nothing is found under ``root``.
        url: Where to download the archive from.
        md5: The archive's expected md5 (``null`` skips the check, for a deliberately different
            archive).
        val_size: Training images held out for validation (stratified by fine class).
        train_limit: Train on a stratified subset of this many images (``null``: all).
        split_seed: Seeds the validation split and the subset. It is kept apart from the
            training seed so that every seed of a sweep is validated and tested on the same images.
    """

    root: str = "${oc.env:MTBENCH_DATA_DIR,'~/.cache/mtbench'}/cifar100"
    download: bool = True
    url: str = URL
    md5: str | None = MD5
    val_size: int = 5000
    train_limit: int | None = None
    split_seed: int = 0


@register("dataset", "cifar100", config=Cifar100Config)
class Cifar100:
    """CIFAR-100 with tasks ``fine`` (100 classes) and ``coarse`` (20 superclasses).

    Both labels are read from the dataset itself; the hierarchy ``fine -> coarse`` is exposed so
    that heads and metrics can use it.

    Example:
        >>> splits = Cifar100(root="~/data/cifar100", val_size=5000).load()
        >>> [t.name for t in splits.tasks]
        ['fine', 'coarse']
    """

    def __init__(
        self,
        root: str = "~/.cache/mtbench/cifar100",
        download: bool = True,
        url: str = URL,
        md5: str | None = MD5,
        val_size: int = 5000,
        train_limit: int | None = None,
        split_seed: int = 0,
    ) -> None:
        self.root = Path(root).expanduser()
        self.download = download
        self.url = url
        self.md5 = md5
        self.val_size = val_size
        self.train_limit = train_limit
        self.split_seed = split_seed

    def load(self) -> DatasetSplits:
        raw = self.read()
        raw.validate()
        if not raw.has_official_sizes:
            log.warning(
                "%s holds %d train and %d test images, not the official %d and %d",
                raw.source,
                len(raw.x_train),
                len(raw.x_test),
                TRAIN_SIZE,
                TEST_SIZE,
            )
        tasks = (
            TaskSpec("fine", NUM_FINE, raw.fine_names),
            TaskSpec("coarse", NUM_COARSE, raw.coarse_names),
        )
        train = Split(raw.x_train, {"fine": raw.y_train_fine, "coarse": raw.y_train_coarse})
        test = Split(raw.x_test, {"fine": raw.y_test_fine, "coarse": raw.y_test_coarse})
        return holdout_splits(
            train,
            test,
            tasks=tasks,
            stratify_by="fine",
            val_size=self.val_size,
            train_limit=self.train_limit,
            seed=self.split_seed,
            hierarchy=TaskHierarchy("fine", "coarse", FINE_TO_COARSE.copy()),
        )

    def _offline_help(self) -> str:
        return (
            f"Offline: put the official archive ({self.url}) or its extracted "
            f"{FOLDER}/ folder, or a {NPZ} (np.savez arrays x_train uint8 [50000,32,32,3], "
            "y_train_fine, y_train_coarse, x_test, y_test_fine, y_test_coarse, fine_label_names, "
            f"coarse_label_names; see the README's 'Data, offline') in {self.root}, or point "
            "dataset.root (or $MTBENCH_DATA_DIR, whose cifar100/ subfolder is the default root) "
            "at the folder that holds one, and add dataset.download=false."
        )

    def read(self) -> RawCifar100:
        """Read the first format found under ``root``, downloading the archive if allowed."""
        if (self.root / NPZ).is_file():
            return read_npz(self.root / NPZ)
        if (self.root / FOLDER).is_dir():
            return read_folder(self.root / FOLDER)
        archive = self.root / ARCHIVE
        if archive.is_file():
            if self.md5 is not None and (actual := md5sum(archive)) != self.md5:
                raise DatasetError(
                    f"{archive} has md5 {actual}, not the official {self.md5}: it is truncated "
                    "or corrupt. Delete it and run again to download it, or set dataset.md5=null "
                    "if it is deliberately a different archive."
                )
        elif self.download:
            log.info("downloading CIFAR-100 from %s to %s", self.url, archive)
            try:
                download(self.url, archive, md5=self.md5)
            except DatasetError as exc:
                raise DatasetError(f"{exc} {self._offline_help()}") from exc
        else:
            raise DatasetError(
                f"no CIFAR-100 found in {self.root} (looked for {NPZ}, {FOLDER}/ and {ARCHIVE}) "
                f"and dataset.download=false. {self._offline_help()}"
            )
        log.info("extracting %s", archive)
        return read_folder(extract_archive(archive, self.root))
