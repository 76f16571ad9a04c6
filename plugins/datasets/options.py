"""The options of the reference datasets, kept apart from the datasets (without TensorFlow) so
that the command line types them without importing any dataset."""

from __future__ import annotations

from dataclasses import dataclass, field

from .cifar100_formats import MD5, URL
from .idx_formats import FASHION_MNIST, MNIST


@dataclass
class AugmentOptions:
    """Label-preserving augmentation of training batches (:class:`mtbench.inputs.Augmentation`).

    Attributes:
        crop_padding: Random crop after zero-padding each side by this many pixels (0: off).
        horizontal_flip: Flip left-right with probability 1/2.
        cutout: Side of a random square set to zero (0: off).
    """

    crop_padding: int = 0
    horizontal_flip: bool = False
    cutout: int = 0


#: Marks options that say where data is, not what it is: they do not change results.
LOCATION = {"mtbench": "location"}


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
        normalize: Standardise each channel with the training split's mean and deviation
            (after scaling pixels to [0, 1]).
        augment: Augmentation of training batches.
        eval_flip: Predict with the mean outputs of each image and its left-right mirror.
    """

    root: str = field(
        default="${oc.env:MTBENCH_DATA_DIR,'~/.cache/mtbench'}/cifar100", metadata=LOCATION
    )
    download: bool = field(default=True, metadata=LOCATION)
    url: str = field(default=URL, metadata=LOCATION)
    md5: str | None = MD5
    val_size: int = 5000
    train_limit: int | None = None
    split_seed: int = 0
    normalize: bool = False
    augment: AugmentOptions = field(default_factory=AugmentOptions)
    eval_flip: bool = False


@dataclass
class Cifar100TasksConfig(Cifar100Config):
    """Options of the ``cifar100_tasks`` dataset: the same files, options and defaults as
    ``cifar100`` (its ``root`` is the same folder), 20 five-way tasks instead of two."""


@dataclass
class MultiFashionConfig:
    """Options of the ``multifashion`` dataset (pairs of overlapping Fashion-MNIST items).

    Attributes:
        root: Folder holding Fashion-MNIST's four official files (``*-idx*-ubyte.gz``, or the
            same files uncompressed). Missing archives are downloaded here.
        download: Download the official archives that are not found under ``root``.
        url: The folder the archives are downloaded from.
        verify: Check every file against the official md5 of its archive or of its decompressed
            content (``false``: for deliberately different data in the same format).
        train_size: Training pairs, made from the official training images not held out.
        val_size: Validation pairs, made from training images held out for them: as large a share
            of the official training images as val_size is of train_size + val_size, stratified
            by class, so that no image appears in both splits.
        test_size: Test pairs, made from the official test images.
        train_limit: Train on a subset of this many training pairs, stratified by the ``left``
            class (``null``: all).
        split_seed: Seeds which images are held out, the training and validation pairs, and the
            subset. It is kept apart from the training seed so that every seed of a sweep is
            validated and tested on the same pairs.
        test_seed: Seeds the test pairs (kept apart from split_seed, so that the test pairs stay
            the same when the validation split changes).
    """

    root: str = field(
        default="${oc.env:MTBENCH_DATA_DIR,'~/.cache/mtbench'}/fashion_mnist", metadata=LOCATION
    )
    download: bool = field(default=True, metadata=LOCATION)
    url: str = field(default=FASHION_MNIST.url, metadata=LOCATION)
    verify: bool = True
    train_size: int = 120_000
    val_size: int = 10_000
    test_size: int = 20_000
    train_limit: int | None = None
    split_seed: int = 0
    test_seed: int = 0


@dataclass
class MultiMnistConfig(MultiFashionConfig):
    """Options of the ``multimnist`` dataset: those of ``multifashion``, for MNIST's four files
    (``root`` defaults to the ``mnist`` folder, ``url`` to a mirror of the official archives)."""

    root: str = field(
        default="${oc.env:MTBENCH_DATA_DIR,'~/.cache/mtbench'}/mnist", metadata=LOCATION
    )
    url: str = field(default=MNIST.url, metadata=LOCATION)
