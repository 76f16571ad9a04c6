"""Training-step throughput of backbones, measured side by side.

Every model is the backbone plus ``dense`` heads for CIFAR-100's fine (100) and coarse (20) tasks,
trained with the sum of the two cross-entropies and SGD (Nesterov momentum 0.9) in one
``tf.function`` step (no XLA) on a fixed batch of random uint8 32x32x3 images held in memory, so
that only the model's forward and backward pass and the update are measured. Each round times
``--steps`` steps of every model in turn (interleaved, so that load from other processes hits all
of them alike); the report gives the median images/s over rounds, the range, and the median of
the per-round ratios to the first model (robust to load that changes between rounds).

Ablations (``--ablate``) measure what the backbones' speed choices are worth:
``keras_bn`` uses Keras's unfused BatchNormalization instead of the fused kernel;
``pool_last`` pools after BN-ReLU in ResNet-9's pooled blocks instead of before.

Usage:
    python tests/benchmarks/backbone_speed.py resnet9:width=32 resnet9:width=64 \\
        --batch-size 256 --precision mixed_bfloat16 --rounds 10 --steps 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import mtbench  # noqa: E402
from mtbench.hardware import cpu_name  # noqa: E402
from mtbench.inputs import ImagePreprocessing  # noqa: E402
from mtbench.model import MultiTaskModel  # noqa: E402
from mtbench.tasks import TaskSpec  # noqa: E402

TASKS = [TaskSpec("fine", 100), TaskSpec("coarse", 20)]


def parse_spec(spec: str) -> tuple[str, dict[str, object]]:
    """``name:key=value,key=value`` -> (name, options); values are parsed as Python literals."""
    import ast

    name, _, rest = spec.partition(":")
    options: dict[str, object] = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return name, options


@contextlib.contextmanager
def ablation(names: str | None) -> Iterator[None]:
    """Temporarily undo some of the backbones' speed choices (``+``-separated) while models are
    built and traced."""
    from mtbench_plugins.backbones import building_blocks, resnet9

    def pool_last(self, inputs, training=False):
        x = keras.ops.relu(self.bn(self.conv(inputs), training=training))
        return self.pool(x) if self.pool is not None else x

    patches = {
        "keras_bn": (building_blocks.FusedBatchNorm, "_fusable", lambda *args: False),
        "pool_last": (resnet9._ConvBlock, "call", pool_last),
    }
    chosen = names.split("+") if names else []
    unknown = sorted(set(chosen) - set(patches))
    if unknown:
        raise SystemExit(f"unknown ablations {unknown}; choose from {sorted(patches)}")
    originals = [(patches[n][0], patches[n][1], getattr(*patches[n][:2])) for n in chosen]
    for name in chosen:
        setattr(*patches[name])
    try:
        yield
    finally:
        for target, attribute, original in originals:
            setattr(target, attribute, original)


def make_step(spec: str, ablate: str | None, batch_size: int, precision: str, seed: int):
    """Build the model and return (a traced training step, its trainable parameter count)."""
    name, options = parse_spec(spec)
    keras.utils.set_random_seed(seed)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        with ablation(ablate):
            model = MultiTaskModel(
                mtbench.build_plugin("backbone", {"name": name, **options}),
                mtbench.build_plugin("head", {"name": "dense"}, tasks=TASKS),
                preprocessing=ImagePreprocessing(255.0),
            )
            model(tf.zeros([1, 32, 32, 3], tf.uint8))
            optimizer = keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True)
            optimizer.build(model.trainable_variables)
            rng = np.random.default_rng(seed)
            images = tf.constant(rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8))
            labels = {
                t.name: tf.constant(rng.integers(0, t.num_classes, batch_size)) for t in TASKS
            }

            @tf.function(jit_compile=False)
            def step() -> tf.Tensor:
                with tf.GradientTape() as tape:
                    logits = model(images, training=True)
                    loss = tf.add_n(
                        [
                            tf.reduce_mean(
                                tf.nn.sparse_softmax_cross_entropy_with_logits(
                                    labels[t.name], logits[t.name]
                                )
                            )
                            for t in TASKS
                        ]
                    )
                variables = model.trainable_variables
                optimizer.apply(tape.gradient(loss, variables), variables)
                return loss

            step.get_concrete_function()
    finally:
        keras.config.set_dtype_policy(previous)
    parameters = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    return step, parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="backbone specs, e.g. resnet9:width=32")
    parser.add_argument("--ablate", action="append", default=[], metavar="SPEC=ABLATION",
                        help="also time SPEC with an ablation (keras_bn, pool_last)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--precision", default="mixed_bfloat16")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per model per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--inter-op-threads", type=int, default=0, help="0: TensorFlow's default")
    args = parser.parse_args()
    if args.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)

    runs: list[tuple[str, str, str | None]] = [(spec, spec, None) for spec in args.models]
    for item in args.ablate:
        spec, _, name = item.rpartition("=")
        runs.append((f"{spec} [{name}]", spec, name))

    inter_op = tf.config.threading.get_inter_op_parallelism_threads()
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {cpu_name()}, "
        f"{os.cpu_count()} CPUs, inter-op threads {inter_op or 'default'}, "
        f"precision {args.precision}, batch {args.batch_size}, no XLA"
    )
    steps = {}
    for label, spec, ablate in runs:
        tick = time.perf_counter()
        steps[label], parameters = make_step(
            spec, ablate, args.batch_size, args.precision, args.seed
        )
        for _ in range(args.warmup):
            steps[label]().numpy()
        seconds = time.perf_counter() - tick
        print(f"built {label}: {parameters:,} trainable parameters ({seconds:.0f} s)")

    rates: dict[str, list[float]] = {label: [] for label in steps}
    cpu_rates: dict[str, list[float]] = {label: [] for label in steps}
    for round_index in range(args.rounds):
        for label, step in steps.items():
            tick, cpu_tick = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                loss = step()
            loss.numpy()  # wait for the queued work
            images = args.steps * args.batch_size
            rates[label].append(images / (time.perf_counter() - tick))
            cpu_rates[label].append(images / (time.process_time() - cpu_tick))
        print(
            f"round {round_index + 1}: "
            + ", ".join(f"{label} {rates[label][-1]:.0f}" for label in steps)
        )

    print(
        f"\ntraining step, median of {args.rounds} rounds of {args.steps} steps: images/s of wall "
        "time (range over rounds), images per CPU-second of this process (less sensitive to other "
        "processes' load), and the median of the per-round ratios to the first model"
    )
    print(f"  {'model':44s} {'images/s':>9s} {'range':>13s} {'ratio':>6s}  {'img/CPU-s':>9s} ratio")
    first = runs[0][0]
    for label in steps:
        wall, cpu = rates[label], cpu_rates[label]
        ratio = statistics.median(v / r for v, r in zip(wall, rates[first], strict=True))
        cpu_ratio = statistics.median(v / r for v, r in zip(cpu, cpu_rates[first], strict=True))
        print(
            f"  {label:44s} {statistics.median(wall):9.1f} "
            f"{f'{min(wall):.0f}-{max(wall):.0f}':>13s} x{ratio:5.2f}  "
            f"{statistics.median(cpu):9.1f} x{cpu_ratio:.2f}"
        )


if __name__ == "__main__":
    main()
