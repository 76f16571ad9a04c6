"""The training input pipeline: seeded batches, augmented on the fly where the dataset says so.

The data stay in memory as the dataset gave them; each epoch draws a permutation from
``numpy.random.default_rng([seed, epoch])``, gathers batches with ``tf.data`` and augments them
with the dataset's stateless augmentation (:mod:`mtbench.inputs`) seeded by
``(seed, epoch, batch)``. So the batches of any epoch
can be rebuilt exactly, from any batch on: what resuming a run in the middle of an epoch needs.
Augmentation runs in the pipeline's worker threads, off the training step's critical path.

With ``meta_batches`` (for a weighting method with ``needs_meta_batch``) every batch comes with a
*meta batch* of the same size from a second pass over the same training split in its own order,
``numpy.random.default_rng([seed, epoch, 1])``, augmented with its own seeds: as the
Auto-Lambda reference code draws its "validation" batches, from a second, independently
shuffled loader of the training set. The validation split is never touched, so it stays clean
for choosing the best epoch. Meta batches are rebuilt exactly on resume too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from mtbench.data import Split
from mtbench.inputs import Inputs
from mtbench.tasks import TaskKind

#: Threads that gather and augment batches, and batches prepared ahead of the training step.
PARALLEL_CALLS = max(2, min(8, os.cpu_count() or 2))
PREFETCH_BATCHES = 4
#: Added to a meta batch's index in its augmentation seed, apart from every training batch's.
META_SEED_OFFSET = 1 << 40


class EpochBatches:
    """Builds each epoch's batches of a split, for a fixed seed, batch size and task list.

    A batch is ``(x, {task: (labels, present)})``: ``x`` the inputs (an array or a dict of
    arrays), ``labels`` as the task's kind encodes them for the loss and ``present`` which label
    elements exist (missing labels: ``False``). With ``meta_batches`` each element is
    ``(batch, meta batch)``, both shaped so.
    """

    def __init__(
        self,
        split: Split,
        kinds: Mapping[str, TaskKind],
        batch_size: int,
        seed: int,
        inputs: Inputs | None = None,
        meta_batches: bool = False,
    ) -> None:
        self.size = len(split)
        self.meta_batches = meta_batches
        self.tasks = tuple(kinds)
        self.batch_size = batch_size
        self.seed = seed
        self.inputs = inputs if inputs is not None and inputs.augments else None
        self._x = tf.nest.map_structure(tf.constant, split.x)
        self._labels = {
            t: (
                tf.constant(kind.encode(split.y[t])),
                tf.constant(kind.element_labelled(split.y[t])),
            )
            for t, kind in kinds.items()
        }

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.size // self.batch_size)

    def order(self, epoch: int, meta: bool = False) -> np.ndarray:
        """The examples' order in ``epoch`` (with ``meta``: the meta batches' order)."""
        key = [self.seed, epoch, 1] if meta else [self.seed, epoch]
        return np.random.default_rng(key).permutation(self.size)

    def dataset(self, epoch: int, first_batch: int = 0) -> tf.data.Dataset:
        """The batches of ``epoch`` from batch ``first_batch`` on (with their meta batches)."""
        batches = self._batches(epoch, first_batch, meta=False)
        if self.meta_batches:
            meta = self._batches(epoch, first_batch, meta=True)
            batches = tf.data.Dataset.zip((batches, meta))
        options = tf.data.Options()
        # tf.data's autotuner gives each iterator a thread that sleeps up to about 10 s between
        # optimisations, and deleting the iterator at the end of an epoch waits for it: 10-17 s
        # of idle wall clock after most epochs on 2 cores. Fixed parallelism avoids that.
        options.autotune.enabled = False
        return batches.prefetch(PREFETCH_BATCHES).with_options(options)

    def _batches(self, epoch: int, first_batch: int, meta: bool) -> tf.data.Dataset:
        order = self.order(epoch, meta)[first_batch * self.batch_size :]
        starts = np.arange(first_batch, self.steps_per_epoch, dtype=np.int64)
        if meta:
            starts += META_SEED_OFFSET
        indices = tf.data.Dataset.from_tensor_slices(order).batch(self.batch_size)
        batches = tf.data.Dataset.zip((indices, tf.data.Dataset.from_tensor_slices(starts)))
        inputs, labels, augmenting = self._x, self._labels, self.inputs
        seed = self.seed

        def gather(idx: tf.Tensor, batch: tf.Tensor) -> tuple[Any, dict[str, Any]]:
            x = tf.nest.map_structure(lambda a: tf.gather(a, idx), inputs)
            if augmenting is not None:
                # one stateless seed per (seed, epoch, batch): the same batch is always augmented
                # the same way, also after a resume
                mixed = tf.stack([tf.constant(seed, tf.int64) * 1_000_003 + epoch, batch])
                x = augmenting.augment(x, mixed)
            return x, {
                t: (tf.gather(y, idx), tf.gather(present, idx))
                for t, (y, present) in labels.items()
            }

        return batches.map(gather, num_parallel_calls=PARALLEL_CALLS, deterministic=True)
