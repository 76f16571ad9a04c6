"""The idx files of MNIST and Fashion-MNIST: where they come from, their checksums, and reading
and checking them.

Both datasets ship as four files, ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each gzip-compressed (``.gz``) for
download. The idx format (LeCun et al.) is a header, then the data in row-major order: two zero
bytes, a type code (``0x08``: unsigned bytes), the number of dimensions, and each dimension as a
big-endian 32-bit integer. Labels are ``[N]`` (magic number 2049, ``0x00000801``), images
``[N, 28, 28]`` (magic number 2051, ``0x00000803``).

A file is accepted when the md5 of the archive is the official one, or, for a file that is not
the official archive, when the md5 of its decompressed content is the official content's: Linux
distributions recompress the archives (Debian's ``dataset-fashion-mnist`` does), which changes
the archive's checksum but not the data. An uncompressed file is checked by its content's md5.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtbench.data import DatasetError

IDX_UBYTE = 0x08
IMAGE_SIDE = 28
FILE_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class IdxFile:
    """One of the four files.

    Args:
        name: The official name, without ``.gz``.
        archive_md5: The md5 of the official ``.gz`` archive.
        content_md5: The md5 of its decompressed content.
    """

    name: str
    archive_md5: str
    content_md5: str

    @property
    def archive(self) -> str:
        return f"{self.name}.gz"

    @property
    def ndim(self) -> int:
        return 3 if "images" in self.name else 1


@dataclass(frozen=True)
class IdxSource:
    """A dataset in the idx format: its name, where to download it, its files and classes.

    Args:
        title: The dataset's name in messages.
        url: The folder the official archives are downloaded from (ends with ``/``).
        files: The four files, by :data:`FILE_KEYS`.
        class_names: The names of the ten classes.
    """

    title: str
    url: str
    files: dict[str, IdxFile]
    class_names: tuple[str, ...]


FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

#: Zalando Research's Fashion-MNIST (Xiao, Rasul and Vollgraf 2017): md5s from its README; the
#: content md5s were computed from those archives' decompressed files.
FASHION_MNIST = IdxSource(
    title="Fashion-MNIST",
    url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    files={
        "train_images": IdxFile(
            "train-images-idx3-ubyte",
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        ),
        "train_labels": IdxFile(
            "train-labels-idx1-ubyte",
            "25c81989df183df01b3e8a0aad5dffbe",
            "9018921c3c673c538a1fc5bad174d6f9",
        ),
        "test_images": IdxFile(
            "t10k-images-idx3-ubyte",
            "bef4ecab320f06d8554ea6380940ec79",
            "8181f5470baa50b63fa0f6fddb340f0a",
        ),
        "test_labels": IdxFile(
            "t10k-labels-idx1-ubyte",
            "bb300cfdad3c16e7a12a480ee83cd310",
            "15d484375f8d13e6eb1aabb0c3f46965",
        ),
    },
    class_names=FASHION_CLASSES,
)

#: LeCun, Cortes and Burges' MNIST. yann.lecun.com often refuses downloads now; the default is
#: the mirror torchvision uses, which serves the same archives (same md5s).
MNIST = IdxSource(
    title="MNIST",
    url="https://ossci-datasets.s3.amazonaws.com/mnist/",
    files={
        "train_images": IdxFile(
            "train-images-idx3-ubyte",
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "6bbc9ace898e44ae57da46a324031adb",
        ),
        "train_labels": IdxFile(
            "train-labels-idx1-ubyte",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "a25bea736e30d166cdddb491f175f624",
        ),
        "test_images": IdxFile(
            "t10k-images-idx3-ubyte",
            "9fb629c4189551a2d022fa330f9573f3",
            "2646ac647ad5339dbf082846283269ea",
        ),
        "test_labels": IdxFile(
            "t10k-labels-idx1-ubyte",
            "ec29112dd5afa0611ce80d1b7f02629c",
            "27ae3e4e09519cfbb04c329615203637",
        ),
    },
    class_names=tuple(str(digit) for digit in range(10)),
)


@dataclass
class RawIdx:
    """The official training and test sets, as read from the four files."""

    x_train: np.ndarray  #: uint8 [N, 28, 28]
    y_train: np.ndarray  #: int64 [N]
    x_test: np.ndarray
    y_test: np.ndarray


def locate(root: Path, spec: IdxFile) -> Path | None:
    """The file of ``spec`` in ``root``: the ``.gz`` archive, else the uncompressed file."""
    for candidate in (root / spec.archive, root / spec.name):
        if candidate.is_file():
            return candidate
    return None


def read_checked(path: Path, spec: IdxFile, *, verify: bool) -> np.ndarray:
    """Read one idx file (``.gz`` or uncompressed), checked against the official checksums.

    Raises:
        DatasetError: naming the file, when it is truncated, corrupt, not in the idx format, or
            (with ``verify``) holds other data than the official file.
    """
    data = path.read_bytes()
    compressed = path.name.endswith(".gz")
    official_archive = compressed and verify and _md5(data) == spec.archive_md5
    if compressed:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(
                f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}). Delete it and "
                "run again to download it."
            ) from exc
    if verify and not official_archive and (actual := _md5(data)) != spec.content_md5:
        what = "its decompressed content has" if compressed else "it has"
        raise DatasetError(
            f"{path}: {what} md5 {actual}, not the official {spec.content_md5} of "
            f"{spec.name}: the file is corrupt, truncated or another dataset's. Delete it and run "
            "again to download it, or set dataset.verify=false if it deliberately holds other "
            "data in the same format."
        )
    return parse_idx(data, path, spec.ndim)


def parse_idx(data: bytes, source: Path, ndim: int) -> np.ndarray:
    """The array of an idx file of unsigned bytes with ``ndim`` dimensions."""
    header = 4 + 4 * ndim
    if len(data) < header or data[:2] != b"\0\0" or data[2] != IDX_UBYTE or data[3] != ndim:
        raise DatasetError(
            f"{source} is not an idx file of {ndim}-dimensional unsigned bytes (its header is "
            f"{data[:4].hex() or 'empty'}, expected 000008{ndim:02x})"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise DatasetError(
            f"{source} holds {len(data)} bytes; its header announces shape {shape}, i.e. "
            f"{expected} bytes: it is truncated or corrupt. Delete it and run again to download "
            "it, or replace it with the official file"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def read_all(root: Path, source: IdxSource, *, verify: bool) -> RawIdx:
    """Read and check the four files found in ``root`` (each must be there)."""
    arrays = {}
    for key in FILE_KEYS:
        spec = source.files[key]
        path = locate(root, spec)
        if path is None:
            raise DatasetError(f"{root} has neither {spec.archive} nor {spec.name}")
        arrays[key] = read_checked(path, spec, verify=verify)
    raw = RawIdx(
        x_train=arrays["train_images"],
        y_train=arrays["train_labels"].astype(np.int64),
        x_test=arrays["test_images"],
        y_test=arrays["test_labels"].astype(np.int64),
    )
    for split in ("train", "test"):
        x, y = getattr(raw, f"x_{split}"), getattr(raw, f"y_{split}")
        if x.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE) or len(x) != len(y):
            raise DatasetError(
                f"{root}: the {split} images have shape {x.shape} and there are {len(y)} "
                f"labels; expected [N, {IMAGE_SIDE}, {IMAGE_SIDE}] images and N labels"
            )
        if len(y) and y.max() >= len(source.class_names):
            raise DatasetError(
                f"{root}: a {split} label is {int(y.max())}; {source.title} has classes "
                f"0..{len(source.class_names) - 1}"
            )
    return raw


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()
