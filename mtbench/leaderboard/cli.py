"""The command line: ``python -m mtbench.leaderboard DIR [DIR ...] [--out OUT]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mtbench.leaderboard.errors import LeaderboardError
from mtbench.leaderboard.files import write_leaderboard
from mtbench.leaderboard.markdown import MARKDOWN, one_line
from mtbench.leaderboard.paired import DEFAULT_REFERENCE


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mtbench.leaderboard DIR [DIR ...] [--out OUT] [--reference KEY=VALUE ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m mtbench.leaderboard",
        description="Rebuild a leaderboard from sweep or run directories (searched recursively "
        "for Hydra job directories). Writes leaderboard.md, leaderboard.csv and PNG plots.",
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="sweep or run folder")
    parser.add_argument(
        "--out", type=Path, help="output folder (default: DIR when exactly one DIR is given)"
    )
    parser.add_argument(
        "--reference",
        action="append",
        metavar="KEY=VALUE",
        help="the reference row of the paired comparison: the row with this config value and "
        "otherwise the same config (a KEY ending in .name also frees that plugin's options); "
        "repeat to give several (default: weighting.name=ew)",
    )
    args = parser.parse_args(argv)
    if args.out is None and len(args.dirs) > 1:
        parser.error("give --out when combining several directories")
    out = args.out if args.out is not None else args.dirs[0]
    try:
        board = write_leaderboard(args.dirs, out, args.reference or DEFAULT_REFERENCE)
    except (LeaderboardError, OSError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    runs = sum(len(r.runs) for r in board.rows)
    print(
        f"{len(board.rows)} configuration(s), {runs} complete run(s), {len(board.failed)} failed "
        f"or incomplete; written to {out / MARKDOWN}"
    )
    for run in board.failed:
        where = f"{run.path} ({run.part})" if run.part else str(run.path)
        print(f"not counted: {where}, {run.status}: {one_line(run.error, 200)}", file=sys.stderr)
    for path in board.skipped:
        print(f"skipped: {path}, a single run without results.json", file=sys.stderr)
    return 0
