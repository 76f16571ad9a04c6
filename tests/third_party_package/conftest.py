"""This package's tests run against the package as pip installs it, with this folder's pytest
settings (pyproject.toml): ``pip install .`` then ``python -m pytest tests`` here.

mtbench's own test suite, whose ``testpaths`` include this folder, leaves them out:
``tests/test_third_party_package.py`` there installs the package into a temporary folder and runs
them in a subprocess with that folder on ``PYTHONPATH``.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
DISTRIBUTION = "mtbench-ordinal"


def _own_session(config: pytest.Config) -> bool:
    """Whether pytest runs with this package's settings (not as part of mtbench's suite)."""
    return config.rootpath.resolve() == HERE


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if not _own_session(config) and collection_path.resolve().is_relative_to(HERE / "tests"):
        return True
    return None


def pytest_sessionstart(session: pytest.Session) -> None:
    if not _own_session(session.config):
        return
    try:
        metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise pytest.UsageError(
            f"the distribution '{DISTRIBUTION}' is not installed, so mtbench cannot find its "
            f"plugins (they are registered by its entry points): run `pip install {HERE}` (or "
            "put a folder it was installed into with `pip install --target` on PYTHONPATH)"
        ) from None
