"""The ``multifashion`` and ``multimnist`` datasets: two overlapping items per image, one task per
item (Lin et al. 2019, "Pareto Multi-Task Learning", the MultiFashion and MultiMNIST benchmarks).

Each 36x36 image holds two Fashion-MNIST items (MNIST digits for ``multimnist``): task ``left``
classifies the item at the top left, task ``right`` the one at the bottom right (10 classes each).
Lin et al. describe the construction in one sentence and published 36x36 images (120000 training
and 20000 test pairs) but not the code that made them; this module builds the pairs from the
official files, deterministically, as follows.

- **Sources.** Training and validation pairs come from the official training set, test pairs from
  the official test set. Before any pair is drawn, ``N * val_size / (train_size + val_size)`` of
  the N training images (rounded) are held out, stratified by class and seeded by ``split_seed``;
  validation pairs are made of held-out images only and training pairs of the others, so no
  image appears in both splits and an image is used about as often in either.
- **Pairs.** Every image of a pool is the left item of ``count / N`` pairs (rounded up or down),
  in a random order; the right item is drawn uniformly from the pool's images of *another* class,
  as in the paper ("two images with different digits"). The two labels of a pair therefore never
  agree: the tasks are not independent, as in the paper's data.
- **Placement.** A 44x44 canvas is the 36x36 frame plus a 4-pixel margin. Each 28x28 item has a
  nominal place, the left one in the frame's top-left corner (rows and columns 4-31) and the
  right one in its bottom-right corner (12-39), so that they overlap on 20x20 pixels, and is moved
  by a random shift of -4..4 pixels along each axis, drawn independently per item and axis (the
  paper: "each digit can be moved up to 4 pixels on each direction", after Sabour et al. 2017).
  The right item is thus never above or left of the left one; the 1-in-6561 draws that would put
  both at the same place, where neither is "top-left", are drawn again.
- **Overlap.** Where the items overlap, each pixel is the brighter of the two (pixel-wise maximum,
  as in Sener and Koltun's MultiMNIST code, which Lin et al. build on; a sum would saturate).
- **Resize.** The canvas is shrunk to 36x36 by area averaging (``tf.image.resize``,
  ``method="area"``): each output pixel is the mean of the 11/9 x 11/9 input pixels it covers,
  rounded to the nearest uint8. The exact mean is a multiple of 1/121 and never a half-integer,
  and float32's round-off is far smaller than its distance to one, so the bytes are those of exact
  arithmetic on every machine (the tests check them against integer arithmetic). Sener and Koltun
  shrank a 36x36 canvas to 28x28 by nearest neighbour, which drops thin strokes; averaging keeps
  them.

The pairs are made afresh at each load rather than cached: the default 150000 take a few seconds
(3.4-6.4 s measured on 2 busy CPU cores; reading and checking the files takes under a second).
Inputs are uint8 ``[N, 36, 36, 1]`` scaled to [0, 1]; there is no augmentation: a flip or a crop
would move the items out of their corners.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from mtbench.data import DatasetError, DatasetSplits, Split, stratified_split, stratified_subset
from mtbench.inputs import ImageInputs
from mtbench.io import download
from mtbench.tasks import TaskSpec

from .idx_formats import FASHION_MNIST, IMAGE_SIDE, MNIST, IdxSource, RawIdx, locate, read_all
from .options import MultiFashionConfig, MultiMnistConfig

log = logging.getLogger(__name__)

#: The geometry (pixels): items of IMAGE_SIDE placed OFFSET apart on a frame of FRAME, each moved
#: up to MAX_SHIFT along each axis, on a canvas with a MAX_SHIFT margin, shrunk to FRAME.
MAX_SHIFT = 4
OFFSET = 8
FRAME = IMAGE_SIDE + OFFSET  # 36
CANVAS = FRAME + 2 * MAX_SHIFT  # 44
TASKS = ("left", "right")
_CHUNK = 8192  # pairs composed at once (16 MB of canvases, 42 MB of float32 means)


@dataclass(frozen=True)
class Pairs:
    """Which images form each pair, and where each item goes.

    Attributes:
        left, right: Indices of the items in their pool of images.
        shifts: ``[n, 4]`` shifts in pixels: left item's rows and columns, right item's rows and
            columns, each in ``-MAX_SHIFT..MAX_SHIFT``.
    """

    left: np.ndarray
    right: np.ndarray
    shifts: np.ndarray

    def __len__(self) -> int:
        return len(self.left)

    def take(self, indices: np.ndarray) -> Pairs:
        return Pairs(self.left[indices], self.right[indices], self.shifts[indices])


def draw_pairs(labels: np.ndarray, count: int, rng: np.random.Generator) -> Pairs:
    """Draw ``count`` pairs from a pool of images with ``labels`` (see the module docstring)."""
    labels = np.asarray(labels)
    n = len(labels)
    repeats = -(-count // n)
    left = np.concatenate([rng.permutation(n) for _ in range(repeats)])[:count]
    # the right item: uniform over the images of the other classes, found by drawing a position
    # among them in the pool sorted by class and skipping the left item's class block
    order = np.argsort(labels, kind="stable")
    classes, start, size = np.unique(labels[order], return_index=True, return_counts=True)
    block = np.searchsorted(classes, labels[left])
    position = rng.integers(0, n - size[block])
    position += np.where(position >= start[block], size[block], 0)
    right = order[position]
    shifts = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=(count, 4))
    while (same := _same_place(shifts)).any():
        shifts[same] = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=(int(same.sum()), 4))
    return Pairs(left, right, shifts)


def _same_place(shifts: np.ndarray) -> np.ndarray:
    return (OFFSET + shifts[:, 2] == shifts[:, 0]) & (OFFSET + shifts[:, 3] == shifts[:, 1])


def compose(images: np.ndarray, pairs: Pairs) -> np.ndarray:
    """Images ``[n, FRAME, FRAME, 1]`` uint8 of ``pairs`` of ``images`` ``[N, 28, 28]``: the two
    items placed as their shifts say, overlapping by maximum, the canvas shrunk by area averaging.
    """
    out = np.empty((len(pairs), FRAME, FRAME), np.uint8)
    places = [
        (pairs.left, MAX_SHIFT + pairs.shifts[:, 0], MAX_SHIFT + pairs.shifts[:, 1]),
        (
            pairs.right,
            MAX_SHIFT + OFFSET + pairs.shifts[:, 2],
            MAX_SHIFT + OFFSET + pairs.shifts[:, 3],
        ),
    ]
    for begin in range(0, len(pairs), _CHUNK):
        end = min(begin + _CHUNK, len(pairs))
        canvas = np.zeros((end - begin, CANVAS, CANVAS), np.uint8)
        for items, rows, cols in places:
            # the pairs that put this item at the same place, at once (81 places per item)
            place = rows[begin:end] * CANVAS + cols[begin:end]
            order = np.argsort(place, kind="stable")
            values, starts = np.unique(place[order], return_index=True)
            for value, group in zip(values, np.split(order, starts[1:]), strict=True):
                r, c = divmod(int(value), CANVAS)
                window = (group, slice(r, r + IMAGE_SIDE), slice(c, c + IMAGE_SIDE))
                canvas[window] = np.maximum(canvas[window], images[items[begin + group]])
        # TensorFlow's area resampling computes each mean in float32, whose round-off is far
        # below the distance from an exact mean (a multiple of 1/121) to a half-integer, so
        # rint() gives the exact mean rounded to nearest: the same bytes on every machine
        # (tests/test_multifashion.py checks them against exact integer arithmetic).
        with tf.device("/CPU:0"):
            means = tf.image.resize(canvas[..., None], (FRAME, FRAME), method="area").numpy()
        out[begin:end] = np.rint(means[..., 0], out=means[..., 0])
    return out[..., None]


class MultiFashion:
    """Pairs of overlapping Fashion-MNIST items, tasks ``left`` and ``right`` (10 classes each).

    Args:
        **options: The fields of :class:`~mtbench_plugins.datasets.options.MultiFashionConfig`.

    Example:
        >>> splits = MultiFashion(root="~/data/fashion_mnist", train_size=12000).load()
        >>> splits.train.x.shape, [t.name for t in splits.tasks]
        ((12000, 36, 36, 1), ['left', 'right'])
    """

    source: ClassVar[IdxSource] = FASHION_MNIST
    folder: ClassVar[str] = "fashion_mnist"
    config_class: ClassVar[type[MultiFashionConfig]] = MultiFashionConfig

    def __init__(self, **options: Any) -> None:
        config = self.config_class(**options)
        for name in ("train_size", "val_size", "test_size"):
            if getattr(config, name) < 1:
                raise DatasetError(
                    f"dataset.{name} must be at least 1 (got {getattr(config, name)}): every "
                    "split needs pairs (validation selects the best epoch, so that the test split "
                    "is never used for model selection)"
                )
        limit = config.train_limit
        if limit is not None and not 0 < limit <= config.train_size:
            raise DatasetError(
                f"dataset.train_limit={limit} is out of range: there are {config.train_size} "
                f"training pairs (dataset.train_size). Choose 1..{config.train_size} or null "
                "for all."
            )
        self.config = config
        self.root = Path(config.root).expanduser()

    def inputs(self) -> ImageInputs:
        """uint8 pixels scaled to [0, 1]; no augmentation (the items' corners are the labels)."""
        return ImageInputs(divisor=255.0)

    def load(self) -> DatasetSplits:
        config = self.config
        raw = self.read()
        sizes = (len(raw.y_train), len(raw.y_test))
        if sizes != (60_000, 10_000):
            log.warning(
                "%s holds %d training and %d test images, not the official 60000 and 10000",
                self.root,
                *sizes,
            )
        started = time.perf_counter()
        held_out, kept = stratified_split(raw.y_train, self._held_out(raw), config.split_seed)
        pools = {  # split -> the images its pairs are made of, their labels, the pairs' seed
            "train": (raw.x_train[kept], raw.y_train[kept], [config.split_seed, 1]),
            "val": (raw.x_train[held_out], raw.y_train[held_out], [config.split_seed, 2]),
            "test": (raw.x_test, raw.y_test, [config.test_seed, 3]),
        }
        for split, (_, labels, _) in pools.items():
            if len(np.unique(labels)) < 2:
                raise DatasetError(
                    f"the {len(labels)} images the {split} pairs are made from span fewer than "
                    "two classes, and a pair needs two. The files hold too few images, or "
                    "dataset.val_size and dataset.train_size are too far apart."
                )
        made = {}
        for split, (images, labels, seed) in pools.items():
            size = getattr(config, f"{split}_size")
            pairs = draw_pairs(labels, size, np.random.default_rng(seed))
            if split == "train" and config.train_limit is not None:
                keep = stratified_subset(labels[pairs.left], config.train_limit, seed[0] + 1)
                pairs = pairs.take(keep)
            made[split] = _split(images, labels, pairs)
        classes = self.source.class_names
        splits = DatasetSplits(
            **made,
            tasks=tuple(TaskSpec(task, len(classes), classes) for task in TASKS),
            inputs=self.inputs(),
        )
        log.info(
            "%s: %d training, %d validation and %d test pairs made in %.1f s",
            type(self).__name__,
            len(splits.train),
            len(splits.val),
            len(splits.test),
            time.perf_counter() - started,
        )
        return splits

    def _held_out(self, raw: RawIdx) -> int:
        """Training images held out for validation pairs: the share val_size has of all the
        pairs made from the training set (rounded half up), at least one and one fewer than all."""
        n, config = len(raw.y_train), self.config
        total = config.train_size + config.val_size
        return min(max((2 * n * config.val_size + total) // (2 * total), 1), n - 1)

    def read(self) -> RawIdx:
        """The official files under ``root`` (downloading missing archives if allowed), checked."""
        config, source = self.config, self.source
        missing = [spec for spec in source.files.values() if locate(self.root, spec) is None]
        if missing and not config.download:
            raise DatasetError(
                f"no {source.title} {', '.join(spec.archive for spec in missing)} (or the same "
                f"files uncompressed) in {self.root}, and dataset.download=false. "
                f"{self._offline_help()}"
            )
        for spec in missing:
            url = config.url.rstrip("/") + "/" + spec.archive
            log.info("downloading %s from %s to %s", source.title, url, self.root)
            try:
                md5 = spec.archive_md5 if config.verify else None
                download(url, self.root / spec.archive, md5=md5)
            except DatasetError as exc:
                raise DatasetError(f"{exc} {self._offline_help()}") from exc
        return read_all(self.root, source, verify=config.verify)

    def _offline_help(self) -> str:
        names = ", ".join(spec.archive for spec in self.source.files.values())
        return (
            f"Offline: put {self.source.title}'s four files ({names}, from "
            f"{self.config.url}, or the same files uncompressed) in {self.root}, or point "
            f"dataset.root (or $MTBENCH_DATA_DIR, whose {self.folder}/ subfolder is the default "
            "root) at the folder that holds them, and add dataset.download=false."
        )


class MultiMnist(MultiFashion):
    """Pairs of overlapping MNIST digits, tasks ``left`` and ``right``: the construction of
    :class:`MultiFashion` on MNIST's four files (Lin et al.'s MultiMNIST)."""

    source: ClassVar[IdxSource] = MNIST
    folder: ClassVar[str] = "mnist"
    config_class: ClassVar[type[MultiFashionConfig]] = MultiMnistConfig


def _split(images: np.ndarray, labels: np.ndarray, pairs: Pairs) -> Split:
    x = compose(images, pairs)
    return Split(x, {"left": labels[pairs.left], "right": labels[pairs.right]})
