"""Model selection: which epoch of a fit is the best (on validation; the test split chooses
nothing)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mtbench.tasks import TaskKind

#: How :func:`selection_score` chooses the best epoch (written into results).
SELECTION_RULE = (
    "best epoch = the highest validation score (the earliest on ties); score = the mean over the "
    "run's tasks of each task's primary metric, negated where lower is better, when all those "
    "metrics share unit and direction (e.g. accuracies); otherwise the mean over tasks of the "
    "signed relative change of the primary metric against the run's first epoch, "
    "s_k * (M_k - M_k,1) / |M_k,1| with s_k = -1 where lower is better. The test split "
    "chooses nothing."
)


def selection_score(
    val: Mapping[str, Mapping[str, float]],
    kinds: Mapping[str, TaskKind],
    reference: Mapping[str, Mapping[str, float]] | None,
) -> float:
    """The validation score the best epoch maximises (see :data:`SELECTION_RULE`)."""
    primaries = {t: kinds[t].primary for t in kinds}
    signs = {t: 1.0 if m.higher_is_better else -1.0 for t, m in primaries.items()}
    values = {t: float(val[t][m.name]) for t, m in primaries.items()}
    if any(np.isnan(v) for v in values.values()):
        return -np.inf
    if len({(m.unit, m.higher_is_better) for m in primaries.values()}) == 1:
        return float(np.mean([signs[t] * values[t] for t in kinds]))
    assert reference is not None
    changes = []
    for t, metric in primaries.items():
        base = float(reference[t][metric.name])
        scale = abs(base) if base and np.isfinite(base) else 1.0
        changes.append(signs[t] * (values[t] - base) / scale)
    return float(np.mean(changes))
