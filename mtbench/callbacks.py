"""Hydra callbacks: the leaderboard of a multirun, written into its sweep directory.

Registered in ``conf/config.yaml`` under ``hydra.callbacks``; drop it for one sweep with
``~hydra.callbacks.leaderboard``.
"""

from __future__ import annotations

import atexit
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class LeaderboardCallback(Callback):
    """Writes ``leaderboard.md``, ``leaderboard.csv`` and the plots when a multirun ends.

    Hydra calls ``on_multirun_end`` only when every job succeeded: when one fails, the sweeper
    raises first (after all jobs ran). So ``on_multirun_start`` also registers the same write to
    run when the process exits, and ``on_multirun_end`` cancels it; either way the failed runs are
    listed in the leaderboard. A leaderboard error is logged, never raised over finished runs.

    Args:
        enabled: ``false`` skips the leaderboard (``hydra.callbacks.leaderboard.enabled=false``).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.enabled:
            self.sweep_dir = _sweep_dir(config)
            atexit.register(self._write_at_exit)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        atexit.unregister(self._write_at_exit)
        sweep_dir = _sweep_dir(config) if self.enabled else None
        if sweep_dir is not None:
            write_sweep_leaderboard(sweep_dir)

    def _write_at_exit(self) -> None:
        if self.sweep_dir is not None:
            write_sweep_leaderboard(self.sweep_dir)


def _sweep_dir(config: DictConfig) -> Path | None:
    try:
        return Path(str(config.hydra.sweep.dir))
    except Exception:
        log.exception("no leaderboard: the sweep directory (hydra.sweep.dir) is unknown")
        return None


def write_sweep_leaderboard(sweep_dir: Path) -> bool:
    """Write the leaderboard of ``sweep_dir`` into it; log (never raise) what goes wrong."""
    try:
        from mtbench.leaderboard import MARKDOWN, LeaderboardError, write_leaderboard

        try:
            board = write_leaderboard([sweep_dir], sweep_dir)
        except LeaderboardError as exc:
            log.warning("no leaderboard for %s: %s", sweep_dir, exc)
            return False
    except Exception:
        log.exception("writing the leaderboard of %s failed; the runs are unaffected", sweep_dir)
        return False
    log.info(
        "leaderboard of %d configuration(s) written to %s%s",
        len(board.rows),
        sweep_dir / MARKDOWN,
        f" ({len(board.failed)} failed or incomplete run(s) listed)" if board.failed else "",
    )
    return True
