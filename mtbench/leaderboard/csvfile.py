"""``leaderboard.csv``: one line per configuration, every statistic and paired gain in columns."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from mtbench.leaderboard import size
from mtbench.leaderboard.board import Leaderboard

CSV = "leaderboard.csv"


def render_csv(board: Leaderboard) -> str:
    """``leaderboard.csv``: one row per configuration; undefined statistics are empty cells.

    ``row`` numbers the rows; ``rank`` is empty for a row that is not ranked (``not_ranked``
    says why). Columns ``<task>_<side>_<metric>_<unit>_*`` hold every metric of every task
    (``pct``: a fraction in %). ``<quantity>_gain_vs_ref_*``: the paired gains over the row
    ``reference_row`` (positive: this row is better; empty with fewer than two paired seeds;
    ``paired_note`` says why there are none). Size and cost of the joint model (see
    :mod:`~.size`): ``joint_architecture``; ``joint_params_*`` and ``<task>_joint_params_own``,
    the parameter counts its runs record (empty where not recorded, or recorded differently by
    different runs); ``joint_over_hard_sharing_cost_*``, ``joint_peak_*_memory_MiB_*`` as
    statistics; ``joint_over_hard_sharing_note`` says why a row has no step ratio.
    Numbers are rounded to 6 decimals, so no float noise such as ``14.299999999999999``.
    """
    stats = ("mean", "std", "ci95_low", "ci95_high", "n")
    gains = ("mean", "ci95_low", "ci95_high", "n")
    quantities, paired_quantities = board.quantities, board.paired_quantities
    header = ["row", "rank", "not_ranked", *board.varying, "n_seeds", "seeds", "n_failed"]
    header += ["load_flagged", "load_flagged_seeds"]
    counts = size.counts(board.tasks)
    header += ["joint_architecture", *(c.column for c in counts)]
    header += [f"{q.column}_{s}" for q in quantities for s in stats]
    header += ["joint_over_hard_sharing_note"]
    header += ["reference_row", "paired_note", "paired_seeds"]
    header += [f"{q.column}_gain_vs_ref_{s}" for q in paired_quantities for s in gains]
    header += ["run_dirs"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for index, row in enumerate(board.rows):
        record: list[Any] = [index + 1, "" if row.rank is None else row.rank, row.not_ranked or ""]
        record += [_csv_value(row.identity.get(k)) for k in board.varying]
        record += [len(row.runs), " ".join(str(s) for s in row.seeds), len(row.failed)]
        recorded = any(r.load_recorded for r in row.runs)
        record += [
            str(bool(row.load_flagged)).lower() if recorded else "",
            " ".join(str(r.seed) for r in row.load_flagged),
        ]
        record.append(size.architecture(row))
        record += ["" if (n := size.exact(row, c.key)) is None else n for c in counts]
        for quantity in quantities:
            s = row.stat(quantity)
            record += [_csv_number(v) for v in (s.mean, s.std, s.ci_low, s.ci_high)]
            record.append(s.n)
        record.append(size.hard_sharing_note(row))
        paired = board.paired(index)
        record += [
            "" if paired.reference is None else paired.reference + 1,
            paired.why,
            " ".join(map(str, paired.seeds)),
        ]
        for quantity in paired_quantities:
            g = paired.gains.get(quantity.column)
            if g is None or g.ci_low is None:  # fewer than two pairs: no interval, no number
                record += ["", "", "", 0 if g is None else g.n]
            else:
                record += [_csv_number(g.mean), _csv_number(g.ci_low), _csv_number(g.ci_high), g.n]
        record.append(";".join(str(r.path) for r in row.runs))
        writer.writerow(record)
    return buffer.getvalue()


def _csv_number(value: float | None) -> float | str:
    """Rounded to 6 decimals (written in its shortest form: ``14.3``, not ``14.299999999999999``);
    empty when undefined."""
    return "" if value is None else round(float(value), 6)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    return value if isinstance(value, str | int | float) else json.dumps(value, default=str)
