"""The training input pipeline: seeded batches of uint8 images, augmented on the fly.

The data stay in memory as uint8; each epoch draws a permutation from
``numpy.random.default_rng([seed, epoch])``, gathers batches with ``tf.data`` and augments them
with stateless random operations seeded by ``(seed, epoch, batch)``. So the batches of any epoch
can be rebuilt exactly, from any batch on: what resuming a run in the middle of an epoch needs.
Augmentation runs in the pipeline's worker threads, off the training step's critical path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from mtbench.data import Split

#: Threads that gather and augment batches, and batches prepared ahead of the training step.
PARALLEL_CALLS = max(2, min(8, os.cpu_count() or 2))
PREFETCH_BATCHES = 4


@dataclass(frozen=True)
class Augmentation:
    """Label-preserving image augmentation on uint8 batches.

    Args:
        crop_padding: Random crop of the original size after zero-padding every side by this many
            pixels (0: off).
        horizontal_flip: Flip each image left-right with probability 1/2.
        cutout: Side of a square (clipped at the borders) set to zero at a random position
            (0: off), DeVries and Taylor 2017.
    """

    crop_padding: int = 0
    horizontal_flip: bool = False
    cutout: int = 0

    @property
    def enabled(self) -> bool:
        return bool(self.crop_padding or self.horizontal_flip or self.cutout)

    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Augment a batch ``[B, H, W, C]``; ``seed`` is a shape-[2] int tensor."""
        seeds = tf.random.experimental.stateless_split(seed, 3)
        if self.crop_padding:
            images = _random_crop(images, self.crop_padding, seeds[0])
        if self.horizontal_flip:
            flip = tf.random.stateless_uniform([tf.shape(images)[0]], seeds[1]) < 0.5
            images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
        if self.cutout:
            images = _cutout(images, self.cutout, seeds[2])
        return images


def _random_crop(images: tf.Tensor, padding: int, seed: tf.Tensor) -> tf.Tensor:
    batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    offsets = tf.random.stateless_uniform(
        [batch, 2], seed, minval=0, maxval=2 * padding + 1, dtype=tf.int32
    )
    rows = offsets[:, :1] + tf.range(height)[None, :]  # [B, H]
    cols = offsets[:, 1:] + tf.range(width)[None, :]  # [B, W]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, cols, axis=2, batch_dims=1)


def _cutout(images: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
    batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    centers = tf.random.stateless_uniform([batch, 2], seed, minval=0, maxval=1)
    cy = tf.cast(centers[:, 0] * tf.cast(height, tf.float32), tf.int32)[:, None]
    cx = tf.cast(centers[:, 1] * tf.cast(width, tf.float32), tf.int32)[:, None]
    y = tf.range(height)[None, :]
    x = tf.range(width)[None, :]
    in_rows = (y >= cy - size // 2) & (y < cy - size // 2 + size)  # [B, H]
    in_cols = (x >= cx - size // 2) & (x < cx - size // 2 + size)  # [B, W]
    mask = in_rows[:, :, None] & in_cols[:, None, :]
    return tf.where(mask[..., None], tf.zeros_like(images), images)


def channel_statistics(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images, in [0, 1] units."""
    pixels = images.reshape(-1, images.shape[-1])
    mean = np.zeros(pixels.shape[1])
    square = np.zeros(pixels.shape[1])
    for start in range(0, len(pixels), 1 << 22):  # in chunks: no float copy of the whole set
        chunk = pixels[start : start + (1 << 22)].astype(np.float64) / 255.0
        mean += chunk.sum(axis=0)
        square += (chunk**2).sum(axis=0)
    mean /= len(pixels)
    std = np.sqrt(np.maximum(square / len(pixels) - mean**2, 1e-12))
    return mean.tolist(), std.tolist()


class EpochBatches:
    """Builds each epoch's batches of a split, for a fixed seed, batch size and task list."""

    def __init__(
        self,
        split: Split,
        tasks: tuple[str, ...],
        batch_size: int,
        seed: int,
        augmentation: Augmentation | None = None,
    ) -> None:
        self.size = len(split)
        self.tasks = tasks
        self.batch_size = batch_size
        self.seed = seed
        self.augmentation = augmentation if augmentation and augmentation.enabled else None
        self._images = tf.constant(split.x)
        self._labels = {t: tf.constant(split.y[t].astype(np.int64)) for t in tasks}

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.size // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def dataset(self, epoch: int, first_batch: int = 0) -> tf.data.Dataset:
        """The batches of ``epoch`` from batch ``first_batch`` on: ``(images, {task: labels})``."""
        order = self.order(epoch)[first_batch * self.batch_size :]
        starts = np.arange(first_batch, self.steps_per_epoch, dtype=np.int64)
        indices = tf.data.Dataset.from_tensor_slices(order).batch(self.batch_size)
        batches = tf.data.Dataset.zip((indices, tf.data.Dataset.from_tensor_slices(starts)))
        images, labels, augmentation = self._images, self._labels, self.augmentation
        seed = self.seed

        def gather(idx: tf.Tensor, batch: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
            x = tf.gather(images, idx)
            if augmentation is not None:
                # one stateless seed per (seed, epoch, batch): the same batch is always augmented
                # the same way, also after a resume
                mixed = tf.stack([tf.constant(seed, tf.int64) * 1_000_003 + epoch, batch])
                x = augmentation(x, mixed)
            return x, {t: tf.gather(labels[t], idx) for t in labels}

        batches = batches.map(gather, num_parallel_calls=PARALLEL_CALLS, deterministic=True)
        options = tf.data.Options()
        # tf.data's autotuner gives each iterator a thread that sleeps up to about 10 s between
        # optimisations, and deleting the iterator at the end of an epoch waits for it: 10-17 s
        # of idle wall clock after most epochs on 2 cores. Fixed parallelism avoids that.
        options.autotune.enabled = False
        return batches.prefetch(PREFETCH_BATCHES).with_options(options)
