"""Fixtures: small synthetic CIFAR-100 in every supported format; the real data if present."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

import synthetic_cifar  # noqa: E402
from helpers import real_data_root  # noqa: E402


@pytest.fixture(scope="session")
def synthetic_arrays() -> dict[str, np.ndarray]:
    """800 train and 300 test images: 8 and 3 per fine class."""
    return synthetic_cifar.make_arrays(per_class_train=8, per_class_test=3, seed=0)


@pytest.fixture(scope="session")
def archive_root(tmp_path_factory: pytest.TempPathFactory, synthetic_arrays) -> Path:
    """A folder holding only ``cifar-100-python.tar.gz`` (copy it before extracting into it)."""
    root = tmp_path_factory.mktemp("archive")
    synthetic_cifar.write_archive(root, synthetic_arrays)
    return root


@pytest.fixture(scope="session")
def npz_root(tmp_path_factory: pytest.TempPathFactory, synthetic_arrays) -> Path:
    root = tmp_path_factory.mktemp("npz")
    synthetic_cifar.write_npz(root, synthetic_arrays)
    return root


@pytest.fixture(scope="session")
def folder_root(tmp_path_factory: pytest.TempPathFactory, synthetic_arrays) -> Path:
    root = tmp_path_factory.mktemp("folder")
    synthetic_cifar.write_folder(root, synthetic_arrays)
    return root


@pytest.fixture(scope="session")
def real_root() -> Path:
    root = real_data_root()
    if root is None:
        pytest.skip(
            "real CIFAR-100 not found: set MTBENCH_REAL_DATA to a folder holding cifar100.npz "
            "(or place it at ../shared/data/cifar100/)"
        )
    return root
