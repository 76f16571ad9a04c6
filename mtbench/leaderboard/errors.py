"""The leaderboard's error: what stops it from being built."""


class LeaderboardError(Exception):
    """The leaderboard cannot be built (no runs found, a folder that does not exist...)."""
