"""Rows: the complete runs of one configuration, one per seed, ranked by mean delta_m."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mtbench import records
from mtbench.leaderboard import identities
from mtbench.leaderboard.quantities import Quantity
from mtbench.leaderboard.runs import FailedRun, Run
from mtbench.leaderboard.stats import Stat, summarize


@dataclass
class Row:
    """One configuration: its complete runs (one per seed) and what was left out of them.

    ``rank`` is ``None`` for a row that is not ranked, and ``not_ranked`` says why (fewer than two
    seeds of delta_m: its mean alone says nothing about how it compares).
    """

    identity: dict[str, Any]
    runs: list[Run]
    duplicates: list[Run] = field(default_factory=list)  # same seed again; not counted
    failed: list[FailedRun] = field(default_factory=list)
    rank: int | None = None
    not_ranked: str | None = None

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.runs]

    def stat(self, quantity: Quantity) -> Stat:
        return summarize([v for r in self.runs if (v := quantity.value(r)) is not None])

    @property
    def load_flagged(self) -> list[Run]:
        """Its counted runs with a training run whose machine load was flagged."""
        return [r for r in self.runs if r.load_flags]


def row_of(identity: Mapping[str, Any] | None, rows: Sequence[Row]) -> int | None:
    """The index of the row a failed run belongs to: the row of its identity. A run that failed
    before recording the precision and machine it resolved (no ``device_class``: only its Hydra
    config was read) belongs to the one row equal to it apart from those keys, if only one is."""
    if identity is None:
        return None
    keys = [identities.key(row.identity) for row in rows]
    if identities.key(identity) in keys:
        return keys.index(identities.key(identity))
    if records.RESOLVED_IDENTITY["device_class"] in identity:
        return None

    def unresolved(other: Mapping[str, Any]) -> str:
        return identities.key(
            {k: v for k, v in other.items() if k not in records.RESOLVED_IDENTITY.values()}
        )

    matches = [i for i, row in enumerate(rows) if unresolved(row.identity) == unresolved(identity)]
    return matches[0] if len(matches) == 1 else None


def group(runs: list[Run]) -> list[Row]:
    """One row per identity, ranked rows first (highest mean delta_m first), ranks set."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(identities.key(run.identity), []).append(run)
    rows = [_row(same) for same in groups.values()]
    rows.sort(key=_rank_key)
    ranked = [row for row in rows if row.not_ranked is None]
    for rank, row in enumerate(ranked, start=1):
        row.rank = rank
    return rows


def _row(runs: list[Run]) -> Row:
    """One run per seed: of duplicates, the most recently finished counts."""
    newest: dict[int | None, Run] = {}
    for run in sorted(runs, key=lambda r: (r.finished, str(r.path))):
        newest[run.seed] = run
    kept = sorted(newest.values(), key=lambda r: (r.seed is None, r.seed or 0, str(r.path)))
    duplicates = [r for r in runs if r not in kept]
    row = Row(dict(runs[0].identity), kept, duplicates)
    seeds_with_delta_m = summarize([r.delta_m for r in kept if r.delta_m is not None]).n
    if len(kept) < 2:
        row.not_ranked = "1 seed: not ranked"
    elif seeds_with_delta_m < 2:
        row.not_ranked = f"delta_m of {seeds_with_delta_m} seed(s): not ranked"
    return row


def _rank_key(row: Row) -> tuple[bool, bool, float, str]:
    mean = summarize([r.delta_m for r in row.runs if r.delta_m is not None]).mean
    return (row.not_ranked is not None, mean is None, -(mean or 0.0), identities.key(row.identity))
