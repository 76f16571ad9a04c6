"""Reading CIFAR-100 from its official python archive, the extracted folder, or an npz file.

The official ``cifar-100-python`` folder holds three pickles: ``train`` and ``test`` (dicts with
``b'data'``, an (N, 3072) uint8 array of channel-major rows, ``b'fine_labels'``,
``b'coarse_labels'``, ``b'filenames'``, ``b'batch_label'``) and ``meta`` (``b'fine_label_names'``,
``b'coarse_label_names'``). The npz layout holds ``x_train``/``x_test`` (N, 32, 32, 3) uint8,
``y_{train,test}_{fine,coarse}`` int64, ``fine_label_names``, ``coarse_label_names`` and
``fine_to_coarse``.

Superclasses are read from the dataset's own coarse labels. (They are *not* ``fine // 5``.)
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtbench.data import DatasetError
from mtbench.io import load_restricted_pickle, safe_extract_tar

ARCHIVE = "cifar-100-python.tar.gz"
FOLDER = "cifar-100-python"
NPZ = "cifar100.npz"
URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
NUM_FINE, NUM_COARSE = 100, 20
TRAIN_SIZE, TEST_SIZE = 50_000, 10_000

#: The superclass of each fine class, as the official coarse labels define it.
FINE_TO_COARSE = np.array(
    [4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
     6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
     5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
     10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
     16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13],
    dtype=np.int64,
)  # fmt: skip


@dataclass
class RawCifar100:
    """The official train and test sets, as read from disk."""

    x_train: np.ndarray
    y_train_fine: np.ndarray
    y_train_coarse: np.ndarray
    x_test: np.ndarray
    y_test_fine: np.ndarray
    y_test_coarse: np.ndarray
    fine_names: tuple[str, ...]
    coarse_names: tuple[str, ...]
    source: Path

    @property
    def has_official_sizes(self) -> bool:
        return (len(self.x_train), len(self.x_test)) == (TRAIN_SIZE, TEST_SIZE)

    def validate(self) -> None:
        """Check shapes, label ranges and that coarse labels follow the fine-to-coarse map."""
        for split, x, fine, coarse in (
            ("train", self.x_train, self.y_train_fine, self.y_train_coarse),
            ("test", self.x_test, self.y_test_fine, self.y_test_coarse),
        ):
            if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
                raise DatasetError(
                    f"{self.source}: {split} images have shape {x.shape} and dtype {x.dtype}; "
                    "expected (N, 32, 32, 3) uint8"
                )
            if not len(x) == len(fine) == len(coarse):
                raise DatasetError(
                    f"{self.source}: {split} has {len(x)} images, {len(fine)} fine and "
                    f"{len(coarse)} coarse labels"
                )
            if len(fine) and (fine.min() < 0 or fine.max() >= NUM_FINE):
                raise DatasetError(f"{self.source}: {split} fine labels outside 0..99")
            if len(coarse) and not np.array_equal(FINE_TO_COARSE[fine], coarse):
                bad = int(np.flatnonzero(FINE_TO_COARSE[fine] != coarse)[0])
                raise DatasetError(
                    f"{self.source}: {split} image {bad} has fine label {fine[bad]} and coarse "
                    f"label {coarse[bad]}, but CIFAR-100 puts fine class {fine[bad]} in "
                    f"superclass {FINE_TO_COARSE[fine[bad]]}. The file is corrupt or not CIFAR-100."
                )
        if len(self.fine_names) != NUM_FINE or len(self.coarse_names) != NUM_COARSE:
            raise DatasetError(
                f"{self.source}: {len(self.fine_names)} fine and {len(self.coarse_names)} "
                f"coarse class names; expected {NUM_FINE} and {NUM_COARSE}"
            )


def read_npz(path: Path) -> RawCifar100:
    """Read the npz layout (``np.savez``; no pickled objects are allowed)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(
            f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}). Delete it, or "
            f"recreate it in the layout the README describes."
        ) from exc
    required = (
        "x_train", "y_train_fine", "y_train_coarse", "x_test", "y_test_fine", "y_test_coarse",
        "fine_label_names", "coarse_label_names",
    )  # fmt: skip
    missing = [key for key in required if key not in arrays]
    if missing:
        raise DatasetError(f"{path} lacks the arrays {missing}; see the README for the layout")
    if "fine_to_coarse" in arrays and not np.array_equal(arrays["fine_to_coarse"], FINE_TO_COARSE):
        raise DatasetError(f"{path}: its fine_to_coarse map differs from CIFAR-100's")
    return RawCifar100(
        x_train=arrays["x_train"],
        y_train_fine=arrays["y_train_fine"].astype(np.int64),
        y_train_coarse=arrays["y_train_coarse"].astype(np.int64),
        x_test=arrays["x_test"],
        y_test_fine=arrays["y_test_fine"].astype(np.int64),
        y_test_coarse=arrays["y_test_coarse"].astype(np.int64),
        fine_names=tuple(str(n) for n in arrays["fine_label_names"]),
        coarse_names=tuple(str(n) for n in arrays["coarse_label_names"]),
        source=path,
    )


def read_folder(folder: Path) -> RawCifar100:
    """Read the extracted official ``cifar-100-python`` folder."""
    train = _read_batch(folder / "train")
    test = _read_batch(folder / "test")
    meta = _read_pickle_dict(folder / "meta", (b"fine_label_names", b"coarse_label_names"))
    return RawCifar100(
        x_train=train[0],
        y_train_fine=train[1],
        y_train_coarse=train[2],
        x_test=test[0],
        y_test_fine=test[1],
        y_test_coarse=test[2],
        fine_names=tuple(_text(n) for n in meta[b"fine_label_names"]),
        coarse_names=tuple(_text(n) for n in meta[b"coarse_label_names"]),
        source=folder,
    )


def extract_archive(archive: Path, root: Path) -> Path:
    """Extract the official archive next to itself; the folder appears only once complete."""
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        safe_extract_tar(archive, staging)
        extracted = staging / FOLDER
        if not extracted.is_dir():
            raise DatasetError(
                f"{archive} does not contain a '{FOLDER}/' folder; it is not the official archive"
            )
        target = root / FOLDER
        extracted.rename(target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    batch = _read_pickle_dict(path, (b"data", b"fine_labels", b"coarse_labels"))
    data = np.asarray(batch[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(
            f"{path}: b'data' has shape {data.shape} and dtype {data.dtype}; "
            "expected (N, 3072) uint8 rows"
        )
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    fine = np.asarray(batch[b"fine_labels"], dtype=np.int64)
    coarse = np.asarray(batch[b"coarse_labels"], dtype=np.int64)
    return images, fine, coarse


def _read_pickle_dict(path: Path, keys: tuple[bytes, ...]) -> dict[bytes, Any]:
    if not path.is_file():
        raise DatasetError(
            f"{path} is missing: the '{FOLDER}' folder is incomplete. Delete the folder and "
            f"extract {ARCHIVE} again."
        )
    content = load_restricted_pickle(path)
    if not isinstance(content, dict) or any(key not in content for key in keys):
        found = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise DatasetError(f"{path} is not a CIFAR-100 pickle: expected keys {keys}, found {found}")
    return content


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
