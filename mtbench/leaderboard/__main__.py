"""``python -m mtbench.leaderboard``: see :mod:`mtbench.leaderboard.cli`."""

import sys

from mtbench.leaderboard.cli import main

if __name__ == "__main__":
    sys.exit(main())
