"""The task losses a training step optimises: each task's mean loss over the batch's labelled
examples."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from mtbench.tasks import TaskKind


def masked_task_losses(
    kinds: Mapping[str, TaskKind],
    labels: Mapping[str, tuple[Any, Any]],
    outputs: Mapping[str, Any],
) -> list[tf.Tensor]:
    """Each task's loss on a batch: the mean of its kind's per-example loss over the examples with
    at least one present label element. A task without a labelled example in the batch gets
    exactly zero loss and gradient, and the outputs of unlabelled examples get zero gradient.

    Called in a replica context (the default one outside any ``tf.distribute`` strategy). Under a
    strategy with several replicas, each replica passes its slice of the global batch and gets its
    share of the mean over the global batch's labelled examples: the replicas' values sum to it.

    Args:
        kinds: The tasks' kinds by task name, in the order of the losses returned.
        labels: Per task, the encoded labels and the ``present`` mask of their elements (as
            :class:`mtbench.pipeline.EpochBatches` yields them).
        outputs: Per task, the head's outputs for the batch.

    Returns:
        One float32 scalar per task of ``kinds``.
    """
    context = tf.distribute.get_replica_context()
    per_example, counts = [], []
    for t, kind in kinds.items():
        y, present = labels[t]
        labelled = tf.reduce_any(tf.reshape(present, [tf.shape(present)[0], -1]), axis=1)
        loss = kind.loss(y, outputs[t], present)
        per_example.append(tf.where(labelled, loss, tf.zeros_like(loss)))
        counts.append(tf.reduce_sum(tf.cast(labelled, tf.float32)))
    totals = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stack(counts))
    return [tf.reduce_sum(loss) / tf.maximum(totals[i], 1.0) for i, loss in enumerate(per_example)]
