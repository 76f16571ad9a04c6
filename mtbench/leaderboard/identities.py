"""A configuration's identity, and how configurations are told apart in the leaderboard's tables.

Runs with equal identities (:func:`of_config`, compared through :func:`key`) are seeds of one row.
The keys whose values differ between rows (:func:`varying`) are the tables' columns, where a
plugin's name and options share one (:func:`columns`).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from mtbench import records

ABSENT = "–"  # shown for a key that this row's configuration does not have


def of_config(
    config: Mapping[str, Any] | None,
    resolved: Mapping[str, Any] | None,
    location: Collection[str],
) -> dict[str, Any] | None:
    """A configuration's identity: :func:`mtbench.records.identity` for ``leaderboard``."""
    if not isinstance(config, Mapping):
        return None
    return records.identity(config, "leaderboard", location=location, resolved=resolved)


def key(identity: Mapping[str, Any]) -> str:
    """An identity as text, equal for equal identities: what groups runs into rows."""
    return json.dumps(identity, sort_keys=True, default=str)


#: A Markdown column: its header and the identity keys it shows.
Column = tuple[str, tuple[str, ...]]


def columns(keys: Sequence[str], identities: Sequence[Mapping[str, Any]]) -> list[Column]:
    """One column per varying key, except that a plugin's name and options (``weighting.name``,
    ``weighting.reduction``...) share one column named after the plugin kind, so a sweep over
    many methods does not get a mostly empty column per option (see :func:`column_cell`)."""
    plugins = {
        k.split(".")[0] for i in identities for k in i if k.count(".") == 1 and k.endswith(".name")
    }
    by_header: dict[str, list[str]] = {}
    for key in keys:
        group = key.split(".")[0]
        header = group if "." in key and group in plugins else key
        by_header.setdefault(header, []).append(key)
    return [(header, tuple(members)) for header, members in by_header.items()]


def column_cell(identity: Mapping[str, Any], column: Column) -> str:
    """A plugin column: ``pcgrad(reduction=sum)``, the name with its options that differ between
    rows (those this configuration has); any other column: the key's value."""
    header, members = column
    if header in members:  # one key
        return cell(identity.get(header, ABSENT))
    name = cell(identity.get(f"{header}.name", ABSENT))
    options = [
        f"{k[len(header) + 1 :]}={cell(identity[k])}"
        for k in members
        if k != f"{header}.name" and k in identity
    ]
    return name + (f"({', '.join(options)})" if options else "")


def describe(identity: Mapping[str, Any], columns: Sequence[Column]) -> str:
    """``weighting=pcgrad(reduction=sum), trainer.learning_rate=0.01``."""
    return ", ".join(f"{header}={column_cell(identity, (header, m))}" for header, m in columns)


def varying(identities: list[dict[str, Any]]) -> list[str]:
    """Keys whose value (or presence) differs between identities, in config order."""
    keys = list(dict.fromkeys(k for identity in identities for k in identity))
    groups = list(dict.fromkeys(k.split(".")[0] for k in keys))

    def position(key: str) -> tuple[int, bool]:  # a plugin's name before its options
        return groups.index(key.split(".")[0]), not key.endswith(".name")

    return [
        k
        for k in sorted(keys, key=position)
        if len({json.dumps(i.get(k, ABSENT), sort_keys=True, default=str) for i in identities}) > 1
    ]


def cell(value: Any) -> str:
    """A config value as a Markdown cell: strings as they are, lists in brackets, ``|`` escaped."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(cell(v) for v in value) + "]"
    else:
        text = json.dumps(value, default=str)
    return text.replace("|", "\\|")
