"""The ``cifar100`` dataset: two tasks on one image, the fine label and its superclass."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mtbench.data import DatasetError, DatasetSplits, Split, TaskHierarchy, holdout_splits
from mtbench.inputs import Augmentation, ImageInputs
from mtbench.io import download, md5sum
from mtbench.tasks import TaskSpec

from .cifar100_formats import (
    ARCHIVE,
    FINE_TO_COARSE,
    FOLDER,
    NPZ,
    NUM_COARSE,
    NUM_FINE,
    TEST_SIZE,
    TRAIN_SIZE,
    RawCifar100,
    extract_archive,
    read_folder,
    read_npz,
)
from .options import AugmentOptions, Cifar100Config

log = logging.getLogger(__name__)


class Cifar100:
    """CIFAR-100 with tasks ``fine`` (100 classes) and ``coarse`` (20 superclasses).

    Both labels are read from the dataset itself; the hierarchy ``fine -> coarse`` is exposed so
    that heads and metrics can use it.

    Example:
        >>> splits = Cifar100(root="~/data/cifar100", val_size=5000).load()
        >>> [t.name for t in splits.tasks]
        ['fine', 'coarse']
    """

    config_class: type[Cifar100Config] = Cifar100Config

    def __init__(self, **options: Any) -> None:
        augment = options.pop("augment", None)
        if isinstance(augment, dict):
            augment = AugmentOptions(**augment)
        config = self.config_class(**options, augment=augment or AugmentOptions())
        self.config = config
        self.root = Path(config.root).expanduser()
        self.download = config.download
        self.url = config.url
        self.md5 = config.md5
        self.val_size = config.val_size
        self.train_limit = config.train_limit
        self.split_seed = config.split_seed

    def inputs(self) -> ImageInputs:
        """uint8 pixels scaled to [0, 1], with this config's normalisation, augmentation and
        flip averaging."""
        config = self.config
        return ImageInputs(
            divisor=255.0,
            normalize=config.normalize,
            augmentation=Augmentation(**asdict(config.augment)),
            eval_flip=config.eval_flip,
        )

    def _warn_unofficial_sizes(self, raw: RawCifar100) -> None:
        if not raw.has_official_sizes:
            log.warning(
                "%s holds %d train and %d test images, not the official %d and %d",
                raw.source,
                len(raw.x_train),
                len(raw.x_test),
                TRAIN_SIZE,
                TEST_SIZE,
            )

    def load(self) -> DatasetSplits:
        raw = self.read()
        raw.validate()
        self._warn_unofficial_sizes(raw)
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
            inputs=self.inputs(),
            option_prefix="dataset.",
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
