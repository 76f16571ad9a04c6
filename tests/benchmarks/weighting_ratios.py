"""Print the cost of every weighting method as a Markdown table of ratios to ``ew``.

Measures one training step of the joint model per method, interleaved (see
:mod:`weighting_cost`), or reads the ratios that ``test_weighting_cost.py`` stored in a
pytest-benchmark JSON file.

Usage:
    python tests/benchmarks/weighting_ratios.py [--rounds 10] [--per-round 3] [--methods pcgrad]
    python tests/benchmarks/weighting_ratios.py --tasks 20     # cifar100_tasks' 20 tasks
    python -m pytest tests/benchmarks --benchmark-only --benchmark-json cost.json
    python tests/benchmarks/weighting_ratios.py --from-json cost.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def from_json(path: Path) -> str:
    """The table from a pytest-benchmark JSON file written by ``test_weighting_cost.py``."""
    rows = [
        b["extra_info"]
        for b in json.loads(path.read_text())["benchmarks"]
        if "ratio_to_ew" in b.get("extra_info", {})
    ]
    lines = [
        "| method | level | ms per step (median) | ratio to ew (median) | target |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['level']} | {row['median_ms']:.1f} "
            f"| {row['ratio_to_ew']:.2f} | <= {row['target']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=3)
    parser.add_argument("--methods", nargs="*", help="labels to time (default: all); ew always")
    parser.add_argument("--from-json", type=Path, help="a pytest-benchmark JSON file instead")
    parser.add_argument(
        "--tasks", type=int, default=2, help="2 (fine, coarse) or 20 (cifar100_tasks)"
    )
    args = parser.parse_args()
    if args.from_json:
        print(from_json(args.from_json))
        return

    import weighting_cost as cost  # heavy: TensorFlow

    found = cost.methods(args.methods)
    steps = {}
    for method in found:
        print(f"compiling {method.label} ...", flush=True)
        steps[method.label] = cost.build_step(method.config, tasks=args.tasks)
    timings = cost.alternate(steps, args.rounds, args.per_round, report=True)
    print()
    print(cost.ratio_table(found, timings, args.rounds, args.per_round, args.tasks))
    worst = max(statistics.median(timings.ratios(m.label)) / m.target for m in found[1:])
    print(f"\nworst ratio / target: {worst:.2f}")


if __name__ == "__main__":
    main()
