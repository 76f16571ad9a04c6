"""Ways to compute each task's gradient of the shared parameters, timed side by side.

What the gradient-level step pays for besides ``ew``'s single backward pass: one backward pass
through the backbone per task. This script times, on the reference model (``seed_cnn`` + ``dense``
heads for fine and coarse, batch 128, mixed bfloat16, no XLA), compiled functions that each return
the per-task shared gradients ``[T, P]`` (float32) and the heads' gradients, against ``ew``'s one
backward pass:

- ``tape``: a persistent tape, one ``tape.gradient`` per task (what the trainer does);
- ``features_vjp``: each task's gradient of the features (through its head only), then one
  vector-Jacobian product through the backbone per task;
- ``jacobian_pfor``: ``tape.jacobian`` of the stacked losses with ``pfor`` (vectorised);
- ``features_vjp_pfor``: the per-task VJPs of the features vectorised with ``tf.vectorized_map``.

Each round times ``--steps`` calls of every variant, interleaved; the report gives the median time
and the median per-round ratio to ``ew_backward``.

Usage:
    python tests/benchmarks/per_task_gradients.py --rounds 10 --steps 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtbench.inputs import ImagePreprocessing  # noqa: E402
from mtbench.model import MultiTaskModel, build_model  # noqa: E402
from mtbench.tasks import TaskSpec  # noqa: E402

TASKS = (TaskSpec("fine", 100), TaskSpec("coarse", 20))


def _model(precision: str) -> MultiTaskModel:
    return build_model(
        {"name": "seed_cnn"}, {"name": "dense"}, TASKS, np.zeros([1, 32, 32, 3], np.uint8),
        precision=precision, preprocessing=ImagePreprocessing(255.0),
    )  # fmt: skip


def _vector(grad, variable) -> tf.Tensor:
    if grad is None:
        return tf.zeros([int(np.prod(variable.shape))])
    return tf.reshape(tf.cast(grad, tf.float32), [-1])


def _flatten(grads, like) -> tf.Tensor:
    return tf.concat(
        [
            tf.zeros([int(np.prod(v.shape))])
            if g is None
            else tf.reshape(tf.cast(g, tf.float32), [-1])
            for g, v in zip(grads, like, strict=True)
        ],
        axis=0,
    )


def variants(model: MultiTaskModel) -> dict[str, tf.types.experimental.GenericFunction]:
    shared, heads = model.shared_variables, model.task_variables

    def losses_of(logits, labels):
        return [
            tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels[t.name], logits[t.name])
            )
            for t in TASKS
        ]

    @tf.function
    def ew_backward(images, labels):
        with tf.GradientTape() as tape:
            total = tf.add_n(losses_of(model(images, training=True), labels))
        grads = tape.gradient(total, shared + heads)
        return _flatten(grads[: len(shared)], shared), grads[len(shared) :]

    @tf.function
    def tape_per_task(images, labels):
        with tf.GradientTape(persistent=True) as tape:
            losses = losses_of(model(images, training=True), labels)
            total = tf.add_n(losses)
        head_grads = tape.gradient(total, heads)
        per_task = tf.stack([_flatten(tape.gradient(loss, shared), shared) for loss in losses])
        return per_task, head_grads

    @tf.function
    def features_vjp(images, labels):
        with tf.GradientTape(persistent=True) as tape:
            features = model.features(images, training=True)
            losses = losses_of(model.predict_heads(features, training=True), labels)
            total = tf.add_n(losses)
        head_grads = tape.gradient(total, heads)
        upstream = [tape.gradient(loss, features) for loss in losses]
        per_task = tf.stack(
            [
                _flatten(tape.gradient(features, shared, output_gradients=u), shared)
                for u in upstream
            ]
        )
        return per_task, head_grads

    @tf.function
    def jacobian_pfor(images, labels):
        with tf.GradientTape(persistent=True) as tape:
            losses = losses_of(model(images, training=True), labels)
            stacked = tf.stack(losses)
            total = tf.add_n(losses)
        head_grads = tape.gradient(total, heads)
        jacobian = tape.jacobian(stacked, shared, experimental_use_pfor=True)
        per_task = tf.concat(
            [tf.reshape(tf.cast(j, tf.float32), [len(TASKS), -1]) for j in jacobian], axis=1
        )
        return per_task, head_grads

    @tf.function
    def features_vjp_pfor(images, labels):
        with tf.GradientTape(persistent=True) as tape:
            features = model.features(images, training=True)
            losses = losses_of(model.predict_heads(features, training=True), labels)
            total = tf.add_n(losses)
        head_grads = tape.gradient(total, heads)
        upstream = tf.stack([tape.gradient(loss, features) for loss in losses])
        per_task = tf.vectorized_map(
            lambda u: _flatten(tape.gradient(features, shared, output_gradients=u), shared),
            upstream,
        )
        return per_task, head_grads

    return {
        "ew_backward": ew_backward,
        "tape": tape_per_task,
        "features_vjp": features_vjp,
        "jacobian_pfor": jacobian_pfor,
        "features_vjp_pfor": features_vjp_pfor,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--precision", default="mixed_bfloat16")
    args = parser.parse_args()

    model = _model(args.precision)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (args.batch_size, 32, 32, 3), dtype=np.uint8))
    labels = {t.name: tf.constant(rng.integers(0, t.num_classes, args.batch_size)) for t in TASKS}
    functions = variants(model)
    reference = functions["tape"](images, labels)[0].numpy()
    for name, function in functions.items():
        for _ in range(3):
            out = function(images, labels)
        if name != "ew_backward":  # every way gives the same per-task gradients
            error = np.linalg.norm(out[0].numpy() - reference) / np.linalg.norm(reference)
            assert error < 1e-2, (name, error)
    seconds = {name: [] for name in functions}
    names = list(functions)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            for _ in range(args.steps):
                functions[name](images, labels)[0].numpy()
            seconds[name].append((time.perf_counter() - start) / args.steps)
    base = seconds["ew_backward"]
    print("| variant | ms per call (median) | ratio to ew_backward (median) | range |")
    print("|---|---:|---:|---:|")
    for name in names:
        ratios = [s / b for s, b in zip(seconds[name], base, strict=True)]
        print(
            f"| {name} | {1000 * statistics.median(seconds[name]):.1f} "
            f"| {statistics.median(ratios):.2f} | {min(ratios):.2f}-{max(ratios):.2f} |"
        )
    print(
        f"\nbatch {args.batch_size}, {args.precision}, TensorFlow {tf.__version__}, "
        f"{os.cpu_count()} cores visible; {args.rounds} rounds x {args.steps} calls, interleaved."
    )


if __name__ == "__main__":
    main()
