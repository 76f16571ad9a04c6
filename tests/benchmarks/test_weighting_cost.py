"""pytest-benchmark: one training step of the joint model per weighting method, against ``ew``.

Skipped in the ordinary run; ``python -m pytest tests/benchmarks --benchmark-only`` runs it. Each
round of a method's benchmark first runs one ``ew`` step (timed here, in pedantic mode's setup,
not by pytest-benchmark) and then one step of the method, so the two alternate and the ratio of
their median times is measured side by side; it is stored in ``extra_info`` (``ratio_to_ew``),
which ``weighting_ratios.py --from-json`` turns into a table. See :mod:`weighting_cost` for what
is timed. No assertion is made on the times.
"""

from __future__ import annotations

import statistics
import time

import pytest
import tensorflow as tf
import weighting_cost as cost

METHODS = cost.methods()
ROUNDS = 15
_steps: dict[str, object] = {}  # compiled once per process


def _step(method: cost.Method):
    if method.label not in _steps:
        _steps[method.label] = cost.build_step(method.config)
    return _steps[method.label]


@pytest.mark.parametrize("method", METHODS, ids=[m.label for m in METHODS])
def test_weighting_step_cost(benchmark, method):
    step, baseline = _step(method), _step(METHODS[0])
    baseline_seconds: list[float] = []

    def run_baseline() -> None:
        start = time.perf_counter()
        baseline()
        baseline_seconds.append(time.perf_counter() - start)

    benchmark.group = f"weighting step: seed_cnn, batch {cost.BATCH_SIZE}, {cost.PRECISION}"
    benchmark.pedantic(step, setup=run_baseline, rounds=ROUNDS, iterations=1, warmup_rounds=2)
    seconds = list(benchmark.stats.stats.data)
    ratios = [m / b for m, b in zip(seconds, baseline_seconds[-len(seconds) :], strict=True)]
    benchmark.extra_info.update(
        method=method.label,
        level=method.level,
        target=method.target,
        median_ms=1000 * statistics.median(seconds),
        ew_median_ms=1000 * statistics.median(baseline_seconds[-len(seconds) :]),
        ratio_to_ew=statistics.median(ratios),
        tensorflow=tf.__version__,
        devices=[d.device_type for d in tf.config.list_physical_devices()],
        precision=cost.PRECISION,
    )
