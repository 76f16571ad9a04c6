"""Where FAMO's extra cost goes: its step against ``ew``'s and against one forward pass.

FAMO (the paper's variant, ``update=same_batch``) learns its task logits from each task's loss
on the same batch after the optimizer step, so every step runs the model forward once more, in
inference mode, at the new parameters. This script times side by side, on the reference model
(``seed_cnn`` + ``dense`` heads for fine and coarse, batch 128, mixed bfloat16, Adam, no XLA; see
:mod:`weighting_cost`):

- ``ew``: one training step (forward, backward, update);
- ``famo``: one FAMO step (the same, plus the forward pass at the new parameters and the logits'
  update);
- ``famo:update=next_batch``: the logits learn from the next batch's losses instead (no pass);
- ``forward``: the model's forward pass and task losses on the batch in inference mode, alone, as
  a compiled function: what the extra pass costs by itself.

If FAMO's overhead is its extra forward pass, ``famo - ew`` is about ``forward``; the pass cannot
reuse the step's activations, which were computed at the parameters before the update.

Usage:
    python tests/benchmarks/famo_cost.py --rounds 10 --per-round 3
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import tensorflow as tf
import weighting_cost as cost

from mtbench.tasks import task_kinds
from mtbench.training.losses import masked_task_losses


def forward_step(tasks: int = 2):
    """The forward pass and task losses on a fixed batch, inference mode, compiled."""
    specs = cost.task_specs(tasks)
    model = cost._model(specs)
    kinds = dict(zip([s.name for s in specs], task_kinds(specs), strict=True))
    batch = cost._batch(specs)
    images = tf.constant(batch.x)
    labels = {
        t: (tf.constant(np.maximum(y, 0), tf.int64), tf.constant(y >= 0))
        for t, y in batch.y.items()
    }

    @tf.function
    def run() -> tf.Tensor:
        return tf.stack(masked_task_losses(kinds, labels, model(images, training=False)))

    def step() -> None:
        run().numpy()

    for _ in range(3):
        step()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=3)
    args = parser.parse_args()
    steps = {
        "ew": cost.build_step({"name": "ew"}),
        "famo": cost.build_step({"name": "famo"}),
        "famo:update=next_batch": cost.build_step({"name": "famo", "update": "next_batch"}),
        "forward": forward_step(),
    }
    timings = cost.alternate(steps, args.rounds, args.per_round, report=True)
    print()
    print("| what | ms (median) | ratio to ew (median) | range |")
    print("|---|---:|---:|---:|")
    for label in steps:
        ratios = timings.ratios(label)
        print(
            f"| {label} | {1000 * statistics.median(timings.seconds[label]):.1f} "
            f"| {statistics.median(ratios):.2f} | {min(ratios):.2f}-{max(ratios):.2f} |"
        )
    extra = [f - e for f, e in zip(timings.seconds["famo"], timings.seconds["ew"], strict=True)]
    share = [x / f for x, f in zip(extra, timings.seconds["forward"], strict=True)]
    print(
        f"\nfamo - ew: {1000 * statistics.median(extra):.1f} ms per step (median); "
        f"(famo - ew) / forward: {statistics.median(share):.2f} (median over rounds)"
    )
    print(cost.machine_note(args.rounds, args.per_round))


if __name__ == "__main__":
    main()
