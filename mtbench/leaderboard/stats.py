"""Statistics over seeds: mean, sample standard deviation, Student-t confidence interval."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation and Student-t confidence interval of ``n`` values.

    ``std``, ``ci_low`` and ``ci_high`` are ``None`` when ``n < 2``: one value has no spread.
    """

    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Stat:
    """``mean ± t_{(1+confidence)/2, n-1} * std / sqrt(n)``, with ``std`` using ``n - 1``."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return Stat(0, None, None, None, None)
    mean = float(x.mean())
    if n < 2:
        return Stat(1, mean, None, None, None)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, df=n - 1)) * std / math.sqrt(n)
    return Stat(n, mean, std, mean - half, mean + half)
