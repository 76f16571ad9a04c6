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
3. **The step of an architecture against hard sharing's** (:func:`architecture_comparison`): when
   the joint run's architecture is not hard sharing, the probe also builds a hard-sharing joint
   model with the same backbone, heads, weighting, batch size, data and precision (it is never
   trained) and times its step in the same interleaved rounds, as :data:`HARD_SHARING_PROBE`:
   ``joint_over_hard_sharing`` is what the architecture's sharing costs per step.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mtbench.config import DEFAULT_ARCHITECTURE
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
    "train on fewer examples: those labelled for their task, or when the joint method is a "
    "sampling one); a step is one update: for a weighting method with samples_per_step > 1 one "
    "step reads that many batches and an epoch has that many times fewer steps"
)

#: What the probe calls the hard-sharing counterpart of a joint run of another architecture: a
#: model timed beside the runs, never trained, and not a run of ``results.json``.
HARD_SHARING_PROBE = f"joint ({DEFAULT_ARCHITECTURE})"

ARCHITECTURE_COST_METHOD = (
    "joint_over_hard_sharing = median seconds per training step of the joint model (architecture "
    "{architecture}) / median seconds per training step of a hard-sharing joint model built for "
    "the probe with the same backbone, heads, weighting method, batch size, data and precision "
    "(initialised from the same seed and never trained: its steps run from its initial weights), "
    "timed in the same {rounds} interleaved rounds of {steps} steps as the runs (listed in "
    "'timed'); above 1: a step of this architecture costs more than a step of hard sharing"
)
#: Why a hard-sharing joint run has no ``joint_over_hard_sharing``.
HARD_SHARING_ITSELF = (
    "the joint run is hard sharing: its step over hard sharing's is 1 by definition, so no "
    "second model is timed and no ratio is reported"
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


def not_measured(rounds: int, steps: int) -> str:
    """Why a benchmark has no cost record (``comparison.cost_undefined``) when the probe was
    switched off."""
    return (
        f"benchmark.cost_rounds={rounds} and benchmark.cost_steps={steps}: the cost probe is off "
        "(it runs when both are above 0), so no step was timed and no cost ratio "
        "(joint_over_singles, joint_over_hard_sharing) is measured"
    )


def cost_comparison(
    step_seconds: Mapping[str, float],
    tasks: Sequence[str],
    *,
    rounds: int,
    steps: int,
    steps_per_epoch: Mapping[str, int] | None = None,
    architecture: str = DEFAULT_ARCHITECTURE,
    hard_sharing_undefined: str | None = None,
) -> dict[str, Any] | None:
    """The load-robust cost record from :func:`interleaved_step_seconds` (``None`` without a
    joint run or a single-task run of every task). With each run's ``steps_per_epoch``, it also
    compares an epoch of the joint run with the single-task runs' epochs together.

    ``step_seconds`` may hold :data:`HARD_SHARING_PROBE` beside the runs: the joint step is then
    also compared with hard sharing's (see :func:`architecture_comparison`, which ``architecture``
    and ``hard_sharing_undefined`` are passed to). ``step_seconds`` of the record holds the runs
    only; ``timed`` lists everything timed, in the order of the first round."""
    joint = step_seconds.get(JOINT_RUN)
    singles = {t: step_seconds.get(single_run_name(t)) for t in tasks}
    if joint is None or any(v is None for v in singles.values()):
        return None
    record = {
        "method": COST_METHOD.format(rounds=rounds, steps=steps),
        "rounds": rounds,
        "steps": steps,
        "timed": list(step_seconds),
        "step_seconds": {k: v for k, v in step_seconds.items() if k != HARD_SHARING_PROBE},
        "joint_over_singles": joint / sum(singles.values()),  # type: ignore[arg-type]
        "joint_over_single": {t: joint / s for t, s in singles.items()},  # type: ignore[operator]
    }
    if steps_per_epoch:
        per_epoch = {name: step_seconds[name] * n for name, n in steps_per_epoch.items()}
        record["steps_per_epoch"] = dict(steps_per_epoch)
        record["joint_epoch_over_singles"] = per_epoch[JOINT_RUN] / sum(
            per_epoch[single_run_name(t)] for t in tasks
        )
    record |= architecture_comparison(
        joint,
        step_seconds.get(HARD_SHARING_PROBE),
        architecture,
        rounds=rounds,
        steps=steps,
        undefined=hard_sharing_undefined,
    )
    return record


def architecture_comparison(
    joint: float,
    hard_sharing: float | None,
    architecture: str,
    *,
    rounds: int,
    steps: int,
    undefined: str | None = None,
) -> dict[str, Any]:
    """The joint step against the step of its hard-sharing counterpart (:data:`HARD_SHARING_PROBE`,
    timed in the same rounds): ``joint_over_hard_sharing`` = ``joint / hard_sharing``, with its
    method (:data:`ARCHITECTURE_COST_METHOD`), or ``None`` (and no method) with the reason in
    ``joint_over_hard_sharing_undefined``: a hard-sharing
    joint run (1 by definition, not reported), or ``undefined`` (why the counterpart was not
    timed) where ``hard_sharing`` is ``None``."""
    if architecture == DEFAULT_ARCHITECTURE:
        why: str | None = HARD_SHARING_ITSELF
        hard_sharing = None
    elif hard_sharing is None:
        why = undefined or f"the step of {HARD_SHARING_PROBE} was not timed"
    else:
        why = None
    return {
        "joint_architecture": architecture,
        "hard_sharing_step_seconds": hard_sharing,
        "joint_over_hard_sharing": None if hard_sharing is None else joint / hard_sharing,
        "joint_over_hard_sharing_undefined": why,
        "joint_over_hard_sharing_method": None
        if hard_sharing is None
        else ARCHITECTURE_COST_METHOD.format(architecture=architecture, rounds=rounds, steps=steps),
    }
