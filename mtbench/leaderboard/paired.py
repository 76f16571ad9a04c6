"""The paired comparison: each row against its reference row, seed by seed, as mean gains."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mtbench.leaderboard import identities
from mtbench.leaderboard.errors import LeaderboardError
from mtbench.leaderboard.quantities import Quantity
from mtbench.leaderboard.rows import Row
from mtbench.leaderboard.stats import Stat, summarize

#: The default reference row of the paired comparison: ``KEY=VALUE`` as on the command line.
DEFAULT_REFERENCE: tuple[str, ...] = ("weighting.name=ew",)


@dataclass(frozen=True)
class Reference:
    """Which row every row is compared with, seed by seed: the row whose config has ``values``
    (``KEY=VALUE`` as typed) and otherwise equals it, except for the keys that the choice frees.

    A key ending in ``.name`` picks a plugin and frees its options too (``weighting.name=ew``
    frees every ``weighting.*`` key); any other key frees only itself.
    """

    values: dict[str, str]

    @classmethod
    def parse(cls, specs: Sequence[str]) -> Reference:
        values = {}
        for spec in specs:
            key, sep, value = spec.partition("=")
            if not sep or not key.strip():
                raise LeaderboardError(f"--reference {spec!r}: expected KEY=VALUE")
            values[key.strip()] = value.strip()
        if not values:
            raise LeaderboardError("--reference: give at least one KEY=VALUE")
        return cls(values)

    def __str__(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items())

    def frees(self, key: str) -> bool:
        return any(
            key == k or (k.endswith(".name") and key.startswith(k[: -len("name")]))
            for k in self.values
        )

    def chosen_by(self, identity: Mapping[str, Any]) -> bool:
        """Whether ``identity`` has every reference value (typed text or the value it parses to)."""
        import yaml

        def same(value: Any, text: str) -> bool:
            try:
                parsed = yaml.safe_load(text)
            except yaml.YAMLError:
                parsed = text
            return value == parsed or identities.cell(value) == text

        return all(k in identity and same(identity[k], v) for k, v in self.values.items())

    def rest(self, identity: Mapping[str, Any]) -> str:
        """The identity without the keys the reference frees: equal for paired rows."""
        return identities.key({k: v for k, v in identity.items() if not self.frees(k)})


@dataclass(frozen=True)
class Paired:
    """A row against its reference row on the seeds both have (see :class:`Reference`).

    ``reference`` is the reference row's index, ``None`` when there is none (``why`` says so);
    ``gains`` maps a quantity's CSV column to the statistics of the row's gain over the
    reference over ``seeds`` (:meth:`Quantity.gain`: positive means the row is better). The row
    that is its own reference has ``why == "reference"``.
    """

    reference: int | None
    why: str
    seeds: tuple[int, ...] = ()
    gains: dict[str, Stat] = field(default_factory=dict)


def pair(
    rows: Sequence[Row], index: int, reference: Reference, quantities: Sequence[Quantity]
) -> Paired:
    """Row ``index`` of ``rows`` against its reference row, per seed both have: the gain in each
    of ``quantities``, summarized over the seeds (positive means the row is better)."""
    row = rows[index]
    if reference.chosen_by(row.identity):
        return Paired(index, "reference")
    rest = reference.rest(row.identity)
    candidates = [
        i
        for i, other in enumerate(rows)
        if reference.chosen_by(other.identity) and reference.rest(other.identity) == rest
    ]
    if not candidates:
        return Paired(None, "no reference row")
    if len(candidates) > 1:  # e.g. static rows with different weights: which one is unclear
        return Paired(None, f"{len(candidates)} reference rows")
    (ref,) = candidates
    mine = {r.seed: r for r in row.runs if r.seed is not None}
    theirs = {r.seed: r for r in rows[ref].runs if r.seed is not None}
    seeds = tuple(sorted(set(mine) & set(theirs)))
    gains = {}
    for quantity in quantities:
        pairs = [(quantity.value(mine[s]), quantity.value(theirs[s])) for s in seeds]
        gains[quantity.column] = summarize(
            [quantity.gain(a, b) for a, b in pairs if a is not None and b is not None]
        )
    return Paired(ref, "", seeds, gains)
