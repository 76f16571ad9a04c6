"""The leaderboard's files: build it from run directories and write them into a folder."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from mtbench.io import atomic_write_text
from mtbench.leaderboard.board import Leaderboard, build
from mtbench.leaderboard.csvfile import CSV, render_csv
from mtbench.leaderboard.markdown import MARKDOWN, render_markdown
from mtbench.leaderboard.paired import DEFAULT_REFERENCE
from mtbench.leaderboard.plots import (
    SINGLE_JOINT_PLOT,
    TIME_PLOT,
    atomic_save_figure,
    plot_primary_vs_time,
    plot_single_vs_joint,
)


def write(board: Leaderboard, out_dir: Path) -> list[Path]:
    """Write the Markdown, CSV and plots into ``out_dir``; return the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    plots = {
        TIME_PLOT: plot_primary_vs_time(board),
        SINGLE_JOINT_PLOT: plot_single_vs_joint(board),
    }
    for name, figure in plots.items():
        if figure is None:
            (out_dir / name).unlink(missing_ok=True)  # a stale plot would contradict the tables
            continue
        atomic_save_figure(figure, out_dir / name)
        written.append(out_dir / name)
    atomic_write_text(out_dir / CSV, render_csv(board))
    markdown = render_markdown(board, out_dir, [p.name for p in written])
    atomic_write_text(out_dir / MARKDOWN, markdown)
    return [out_dir / MARKDOWN, out_dir / CSV, *written]


def write_leaderboard(
    paths: Iterable[Path], out_dir: Path, reference: Sequence[str] = DEFAULT_REFERENCE
) -> Leaderboard:
    """Build the leaderboard of every run under ``paths`` and write it into ``out_dir``
    (``reference``: see :func:`build`)."""
    board = build(paths, reference)
    write(board, out_dir)
    return board
