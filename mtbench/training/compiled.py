"""The compiled functions of a run: the training call, which runs many steps per call on the
device, and the prediction function.

The training call stops early once a step failed (a non-finite loss or update that is not
skipped); the update of a step that is not finite on every replica is not applied.

For a method with ``needs_meta_batch`` the iterator yields ``(batch, meta batch)`` pairs
(:class:`~mtbench.pipeline.EpochBatches` with ``meta_batches``); each step first runs the
method's :meth:`~mtbench.weighting.Weighting.meta_update` on both, then the usual step on the
training batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from mtbench.data import Split
from mtbench.inputs import Inputs
from mtbench.model import MultiTaskModel
from mtbench.training.counters import EpochCounters
from mtbench.training.step import ReplicaStep, Step
from mtbench.weighting import GradientWeighting


def train_function(
    replica_step: ReplicaStep,
    counters: EpochCounters,
    strategy: tf.distribute.Strategy,
    skip_nonfinite: bool,
) -> Callable[[Any, tf.Tensor], None]:
    """``train_call(iterator, steps)``: run ``steps`` updates from ``iterator`` (a tensor, so
    that every count shares one trace), tallying them in ``counters``."""
    weighting = replica_step.weighting
    if weighting.level == "loss":
        body = replica_step.loss_level
    else:
        body = replica_step.combined_gradients

    def step_with(compute: Callable[..., Step], images: tf.Tensor, labels: dict) -> None:
        step = strategy.run(compute, args=(images, labels))
        # every replica holds the same global values; read the first replica's
        first = _first_replica(strategy, step)

        def apply() -> None:
            strategy.run(replica_step.apply, args=(step.grads, images, labels, step.losses))

        tf.cond(first.finite, apply, lambda: None)
        counters.loss_sum.assign_add(tf.where(first.finite, first.losses, 0.0))
        counters.weight_sum.assign_add(tf.where(first.finite, first.weights, 0.0))
        counters.steps.assign_add(1)
        if not first.finite:
            counters.skipped.assign_add(1)
            if not skip_nonfinite:
                counters.failed.assign(True)
                counters.bad_losses.assign(first.bad_losses)
                counters.bad_grads.assign(first.bad_task_grads)

    def one_step(images: tf.Tensor, labels: dict[str, tf.Tensor], meta: tuple = ()) -> None:
        if meta:
            strategy.run(replica_step.meta_update, args=(images, labels, *meta))
        if isinstance(weighting, GradientWeighting) and weighting.skips_gradients:
            # decided across replicas, so that each branch may all-reduce inside
            needed = _first_replica(strategy, strategy.run(weighting.gradients_needed))
            tf.cond(
                needed,
                lambda: step_with(replica_step.combined_gradients, images, labels),
                lambda: step_with(replica_step.fixed_weights_now, images, labels),
            )
        else:
            step_with(body, images, labels)

    samples = replica_step.samples

    def train_call(iterator: Any, steps: tf.Tensor) -> None:
        for _ in tf.range(steps):
            if counters.failed:
                break
            if weighting.needs_meta_batch:
                (images, labels), meta = next(iterator)
                one_step(images, labels, meta)
            elif samples == 1:
                images, labels = next(iterator)
                one_step(images, labels)
            else:  # several independent batches for one update
                drawn = [next(iterator) for _ in range(samples)]
                step_with(
                    replica_step.sampled_gradients,
                    tuple(d[0] for d in drawn),
                    tuple(d[1] for d in drawn),
                )

    return tf.function(train_call, reduce_retracing=True)


def predict_function(model: MultiTaskModel, inputs: Inputs, example: Split) -> Any:
    """Outputs for a batch: the mean over the dataset's evaluation views (one by default;
    e.g. an image and its mirror with flip averaging). Compiled for batches shaped like
    ``example``'s inputs."""
    spec = tf.nest.map_structure(
        lambda a: tf.TensorSpec([None, *np.shape(a)[1:]], tf.as_dtype(np.asarray(a).dtype)),
        example.x,
    )

    def predict(x: Any) -> dict[str, tf.Tensor]:
        views = inputs.views(x)
        outputs = model(views[0], training=False)
        for view in views[1:]:
            more = model(view, training=False)
            outputs = {t: outputs[t] + more[t] for t in outputs}
        if len(views) == 1:
            return outputs
        return {t: v / len(views) for t, v in outputs.items()}

    return tf.function(predict, input_signature=[spec])


def _first_replica(strategy: tf.distribute.Strategy, values: Any) -> Any:
    return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], values)
