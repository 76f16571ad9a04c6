"""mtbench's trainer against plain Keras ``model.fit`` on the same model, side by side.

Three setups train the joint ``seed_cnn`` model (two dense heads, fine and coarse) on the same
images, in one process, one epoch each in turn for ``--rounds`` rounds (interleaved, so that load
from other processes hits all of them alike):

- ``mtbench``: :class:`mtbench.trainer.Trainer` with ``ew``, at ``--batch-size`` and
  ``--precision``, ``--steps-per-call`` steps per compiled call;
- ``keras_fit``: the best plain ``model.fit`` of the same model found here: the same batch size
  and precision, a cached ``tf.data`` pipeline of uint8 images, shuffled each epoch, with
  ``steps_per_execution`` equal to ``--steps-per-call``;
- ``notebook``: the original notebook's setup, ``model.fit`` on NumPy arrays at batch 32 in
  float32.

Each epoch is timed from its start to its end (tracing happens in a warm-up epoch first). The
report gives images/s per setup (median over rounds) and the median of the per-round ratios of
mtbench to each other setup.

Usage:
    python tests/benchmarks/fit_comparison.py --images 20000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtbench.config import TrainerConfig  # noqa: E402
from mtbench.data import Split  # noqa: E402
from mtbench.hardware import cpu_name  # noqa: E402
from mtbench.inputs import ImagePreprocessing  # noqa: E402
from mtbench.model import build_model, dtype_policy  # noqa: E402
from mtbench.tasks import TaskSpec, task_kinds  # noqa: E402
from mtbench.trainer import Trainer  # noqa: E402
from mtbench.weighting import EqualWeights  # noqa: E402

TASKS = [TaskSpec("fine", 100), TaskSpec("coarse", 20)]


def load_images(count: int) -> Split:
    """Real CIFAR-100 images when available (``MTBENCH_REAL_DATA`` or ../shared), else random."""
    root = os.environ.get("MTBENCH_REAL_DATA", "../shared/data/cifar100")
    path = os.path.join(root, "cifar100.npz")
    if os.path.isfile(path):
        with np.load(path) as z:
            x, fine, coarse = (
                z["x_train"][:count],
                z["y_train_fine"][:count],
                z["y_train_coarse"][:count],
            )
    else:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        fine = rng.integers(0, 100, count)
        coarse = rng.integers(0, 20, count)
    return Split(x, {"fine": fine.astype(np.int64), "coarse": coarse.astype(np.int64)})


def mtbench_setup(
    data: Split, batch_size: int, precision: str, steps_per_call: int
) -> Callable[[], None]:
    model = build_model(
        {"name": "seed_cnn"}, {"name": "dense"}, TASKS, data.x[:1], precision=precision,
        preprocessing=ImagePreprocessing(255.0),
    )  # fmt: skip
    config = TrainerConfig(
        batch_size=batch_size, epochs=1, progress=False, steps_per_call=steps_per_call,
        checkpoint_every=0,
    )  # fmt: skip
    trainer = Trainer(config, model, EqualWeights(), task_kinds(TASKS), precision=precision, seed=0)
    batches = trainer.prepare(data)
    epoch = iter(range(1, 10_000))

    def run_epoch() -> None:
        trainer.train_epoch(batches, next(epoch))

    return run_epoch


def keras_model(precision: str) -> keras.Model:
    keras.utils.set_random_seed(0)
    with dtype_policy(precision):
        inputs = keras.Input((32, 32, 3), dtype="uint8")
        x = keras.layers.Rescaling(1 / 255.0)(inputs)
        x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
        x = keras.layers.Conv2D(32, 3, padding="valid", activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(128, activation="relu")(x)
        x = keras.layers.Dense(64, activation="relu")(x)
        outputs = {
            "fine": keras.layers.Dense(100, dtype="float32", name="fine")(x),
            "coarse": keras.layers.Dense(20, dtype="float32", name="coarse")(x),
        }
        model = keras.Model(inputs, outputs)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return model, {"fine": loss, "coarse": loss}


def keras_fit_setup(
    data: Split, batch_size: int, precision: str, steps_per_call: int
) -> Callable[[], None]:
    model, loss = keras_model(precision)
    model.compile(keras.optimizers.Adam(1e-3), loss=loss, steps_per_execution=steps_per_call)
    dataset = (
        tf.data.Dataset.from_tensor_slices((data.x, data.y))
        .cache()
        .shuffle(len(data), seed=0, reshuffle_each_iteration=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    model.fit(dataset.take(steps_per_call * 2), epochs=1, verbose=0)  # trace
    return lambda: model.fit(dataset, epochs=1, verbose=0)


def notebook_setup(
    data: Split, batch_size: int, precision: str, steps_per_call: int
) -> Callable[[], None]:
    model, loss = keras_model("float32")
    model.compile(keras.optimizers.Adam(1e-3), loss=loss)
    x, y = data.x.astype(np.float32), data.y
    model.fit(x[:64], {k: v[:64] for k, v in y.items()}, batch_size=32, epochs=1, verbose=0)
    return lambda: model.fit(x, y, batch_size=32, epochs=1, verbose=0)


SETUPS = {"mtbench": mtbench_setup, "keras_fit": keras_fit_setup, "notebook": notebook_setup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--precision", default="mixed_bfloat16")
    parser.add_argument("--steps-per-call", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--setups", default=",".join(SETUPS))
    args = parser.parse_args()
    data = load_images(args.images)
    names = args.setups.split(",")
    runs = {
        name: SETUPS[name](data, args.batch_size, args.precision, args.steps_per_call)
        for name in names
    }
    rates: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name, run in runs.items():
            tick = time.perf_counter()
            run()
            rates[name].append(len(data) / (time.perf_counter() - tick))
    print(
        f"{len(data)} images, batch {args.batch_size}, {args.precision}, steps/call "
        f"{args.steps_per_call}, {args.rounds} rounds, {cpu_name()}, {os.cpu_count()} cores, "
        f"TensorFlow {tf.__version__}"
    )
    print("| setup | images/s (median) | range |")
    print("| --- | --- | --- |")
    for name in names:
        print(f"| {name} | {statistics.median(rates[name]):.0f} | "
              f"{min(rates[name]):.0f}-{max(rates[name]):.0f} |")  # fmt: skip
    for other in names[1:]:
        ratios = [a / b for a, b in zip(rates["mtbench"], rates[other], strict=True)]
        print(f"mtbench / {other}: {statistics.median(ratios):.2f}x (per-round median)")


if __name__ == "__main__":
    main()
