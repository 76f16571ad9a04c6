"""Print the cost of every sharing architecture as a Markdown table of ratios to ``hard_sharing``.

One training step of the joint model per architecture (``seed_cnn`` backbone, ``dense`` heads for
CIFAR-100's fine and coarse tasks, the weighting method ``--method``, default ``ew``), built and
timed as :mod:`weighting_cost` does for weighting methods: compiled first, then ``--rounds``
rounds of ``--per-round`` steps of every architecture in turn, interleaved, and each ratio the
median over rounds of the architecture's time over ``hard_sharing``'s in the same round.

The expected cost of an architecture is set by how many backbones' worth of stages a step runs
(``copies``: ``num_experts`` for mmoe and dselect_k, the experts of each level for cgc and ple,
one copy per task for cross_stitch; for mtan one backbone plus, per task, the shared transform
``f_2``, a 3x3 convolution on 32x32 maps that costs as much as seed_cnn's main convolution, and
the attention modules' 1x1 convolutions and batch norms). A ratio far above ``copies``
(``OVER``: above ``copies x 1.5``) means the architecture spends its time somewhere
other than its backbone copies: the cross-stitch units once made a step 30x hard sharing's
through an einsum that TensorFlow runs slowly on CPU.

Usage:
    python tests/benchmarks/architecture_ratios.py [--rounds 8] [--per-round 3] [--method pcgrad]
    python tests/benchmarks/architecture_ratios.py --architectures cross_stitch mtan
"""

from __future__ import annotations

import argparse
import statistics

# name: (options, backbone copies a step runs, with the reference options on seed_cnn's 4 stages)
ARCHITECTURES = {
    "hard_sharing": ({}, 1.0),
    "mmoe": ({}, 4.0),  # 4 whole backbones
    "cgc": ({}, 4.0),  # 2 shared experts + 1 per task, whole backbones
    "ple": ({}, 4.0),  # 2 levels of 2 stages, 4 experts each
    "dselect_k": ({}, 4.0),  # 4 whole backbones
    "cross_stitch": ({}, 2.0),  # one backbone per task
    "mtan": ({}, 4.0),  # see above
}
TOLERANCE = 1.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--per-round", type=int, default=3)
    parser.add_argument("--method", default="ew", help="the weighting method of every model")
    parser.add_argument(
        "--architectures", nargs="*", help="names to time (default: all); hard_sharing always"
    )
    args = parser.parse_args()
    chosen = ["hard_sharing"] + [
        name for name in (args.architectures or ARCHITECTURES) if name != "hard_sharing"
    ]
    unknown = sorted(set(chosen) - set(ARCHITECTURES))
    if unknown:
        raise SystemExit(f"unknown architectures {unknown}: choose from {sorted(ARCHITECTURES)}")

    import weighting_cost as cost  # heavy: TensorFlow

    steps = {}
    for name in chosen:
        print(f"compiling {name} ...", flush=True)
        options, _ = ARCHITECTURES[name]
        steps[name] = cost.build_step({"name": args.method}, architecture={"name": name, **options})
    timings = cost.alternate(steps, args.rounds, args.per_round, report=True)
    print()
    print(
        "| architecture | ms per step (median) | ratio to hard_sharing (median) | ratio range "
        "| backbone copies | |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for name in chosen:
        seconds = timings.seconds[name]
        ratios = timings.ratios(name, baseline="hard_sharing")
        ratio, copies = statistics.median(ratios), ARCHITECTURES[name][1]
        verdict = "OVER" if ratio > copies * TOLERANCE else "ok"
        print(
            f"| {name} | {1000 * statistics.median(seconds):.1f} | {ratio:.2f} "
            f"| {min(ratios):.2f}-{max(ratios):.2f} | {copies:g} | {verdict} |"
        )
    print()
    print(
        cost.machine_note(
            args.rounds,
            args.per_round,
            ratio_of=f"architecture / hard_sharing, both with {args.method},",
        )
    )


if __name__ == "__main__":
    main()
