"""Cost figures that survive a busy machine.

Wall-clock seconds per epoch measure the run *and* whatever else the machine did meanwhile: on a
shared machine the same computation can take twice as long in one run as in the next. mtbench
therefore reports two more things:

1. **How much of the machine each run got** (:func:`load_summary`, :func:`flag_load`). Every
   epoch records the process's CPU seconds and the fraction of the usable cores' capacity that
   other processes used meanwhile (``/proc/stat``, steal time included); a run's *share* is one
   minus that, averaged over its training time (1.0 on an idle machine whatever the workload,
   about 0.5 beside one busy process on two cores). A run is *flagged* when its share is below
   :data:`SHARE_THRESHOLD`, or differs from its siblings' (the other runs of the same benchmark)
   by more than :data:`SHARE_TOLERANCE`: its seconds are then not comparable with theirs.
2. **A load-robust cost ratio** (:func:`interleaved_step_seconds`): after training, the training
   step of every run (single-task and joint) is timed again in one process, in interleaved rounds
   (``single:a, single:b, joint, single:a, ...``), and the median seconds per step are compared.
   Load that comes and goes hits every run alike, so ``joint / sum of single-task steps`` stays put
   where seconds per epoch do not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mtbench.records import JOINT_RUN, single_run_name

#: A run whose threads got less than this fraction of the time they wanted a core is flagged.
SHARE_THRESHOLD = 0.8
#: A run whose share is this much below the largest of its siblings' is flagged.
SHARE_TOLERANCE = 0.15

COST_METHOD = (
    "median seconds per training step of each run's compiled step, timed in one process in "
    "{rounds} interleaved rounds of {steps} steps (after training, same batch size, data and "
    "precision); joint_over_singles = joint step / sum of the single-task steps; "
    "joint_epoch_over_singles = joint step x its steps per epoch / sum over tasks of single-task "
    "step x its steps per epoch (they differ from joint_over_singles when the single-task runs "
    "train on fewer examples: those labelled for their task)"
)


def load_summary(history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A run's use of the machine over its epochs: CPU seconds summed, the share of the machine
    left to it averaged over training time; ``share`` is ``None`` where not measured."""
    wall = sum(float(h.get("seconds") or 0.0) for h in history)
    cpu = [h["cpu_seconds"] for h in history if h.get("cpu_seconds") is not None]
    shares = [(h["share"], float(h.get("seconds") or 0.0)) for h in history
              if h.get("share") is not None]  # fmt: skip
    weight = sum(w for _, w in shares)
    loads = [h["load_average"] for h in history if h.get("load_average") is not None]
    gpu = [h["gpu_utilisation"] for h in history if h.get("gpu_utilisation") is not None]
    return {
        "wall_seconds": wall,
        "cpu_seconds": sum(cpu) if cpu else None,
        "share": sum(s * w for s, w in shares) / weight if shares and weight > 0 else None,
        "lowest_epoch_share": min((s for s, _ in shares), default=None),
        "load_average": sum(loads) / len(loads) if loads else None,
        "gpu_utilisation": sum(gpu) / len(gpu) if gpu else None,
        "flagged": False,
        "reasons": [],
    }


def flag_load(
    runs: Sequence[dict[str, Any]],
    threshold: float = SHARE_THRESHOLD,
    tolerance: float = SHARE_TOLERANCE,
) -> list[str]:
    """Set ``run["load"]["flagged"]`` and ``["reasons"]`` for every run with a load summary;
    return the names of the flagged runs. Runs reused from a cache were measured elsewhere and
    are compared only with each other's shares, never flagged against this machine's."""
    measured = [
        r for r in runs
        if r.get("load") and r["load"].get("share") is not None and not r.get("reused_from")
    ]  # fmt: skip
    flagged = []
    for run in measured:
        load = run["load"]
        reasons = []
        share = load["share"]
        if share < threshold:
            reasons.append(
                f"other processes used {1 - share:.0%} of the machine while it trained (it had "
                f"{share:.0%}, below {threshold:.0%})"
            )
        lowest = load.get("lowest_epoch_share")
        if lowest is not None and lowest < threshold <= share:
            reasons.append(f"in one epoch other processes used {1 - lowest:.0%} of the machine")
        best = max(r["load"]["share"] for r in measured)
        if best - share > tolerance:
            reasons.append(
                f"it had {share:.0%} of the machine against {best:.0%} for a sibling run: their "
                "seconds are not comparable"
            )
        load["flagged"], load["reasons"] = bool(reasons), reasons
        if reasons:
            flagged.append(run["name"])
    return flagged


def interleaved_step_seconds(
    steppers: Mapping[str, Callable[[int], None]], *, rounds: int, steps: int
) -> dict[str, float]:
    """Median seconds per step of each ``stepper(count)`` (which runs ``count`` steps and waits
    for them), timed in ``rounds`` interleaved rounds after one warm-up round; the order within a
    round rotates so that no run is always first."""
    names = list(steppers)
    for name in names:  # warm-up: caches, allocators, the first call's graph optimisation
        steppers[name](steps)
    timings: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            tick = time.perf_counter()
            steppers[name](steps)
            timings[name].append((time.perf_counter() - tick) / steps)
    return {name: statistics.median(values) for name, values in timings.items()}


def cost_comparison(
    step_seconds: Mapping[str, float],
    tasks: Sequence[str],
    *,
    rounds: int,
    steps: int,
    steps_per_epoch: Mapping[str, int] | None = None,
) -> dict[str, Any] | None:
    """The load-robust cost record from :func:`interleaved_step_seconds` (``None`` without a
    joint run or a single-task run of every task). With each run's ``steps_per_epoch``, it also
    compares an epoch of the joint run with the single-task runs' epochs together."""
    joint = step_seconds.get(JOINT_RUN)
    singles = {t: step_seconds.get(single_run_name(t)) for t in tasks}
    if joint is None or any(v is None for v in singles.values()):
        return None
    record = {
        "method": COST_METHOD.format(rounds=rounds, steps=steps),
        "step_seconds": dict(step_seconds),
        "joint_over_singles": joint / sum(singles.values()),  # type: ignore[arg-type]
        "joint_over_single": {t: joint / s for t, s in singles.items()},  # type: ignore[operator]
    }
    if steps_per_epoch:
        per_epoch = {name: step_seconds[name] * n for name, n in steps_per_epoch.items()}
        record["steps_per_epoch"] = dict(steps_per_epoch)
        record["joint_epoch_over_singles"] = per_epoch[JOINT_RUN] / sum(
            per_epoch[single_run_name(t)] for t in tasks
        )
    return record
