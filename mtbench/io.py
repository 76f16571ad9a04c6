"""Safe file handling for plugins and results: downloads, archives, pickles, atomic writes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import secrets
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from mtbench.data import DatasetError


def md5sum(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, target: Path, *, md5: str | None, progress: bool = True) -> Path:
    """Download ``url`` to ``target``, verifying ``md5``; the file appears only when complete.

    Raises:
        DatasetError: when the download fails (with what to do offline) or the checksum differs.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = _progress(total, f"downloading {target.name}", progress)
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
            bar.close()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        raise DatasetError(
            f"could not download {url} ({exc}). Without network access, fetch {url} on another "
            f"machine and put it at {target} (or set dataset.root to the folder holding it)."
        ) from exc
    if md5 is not None:
        actual = md5sum(partial)
        if actual != md5:
            partial.unlink(missing_ok=True)
            raise DatasetError(
                f"the download of {url} is corrupt: md5 {actual}, expected {md5}. "
                "It was deleted; run again to retry."
            )
    os.replace(partial, target)
    return target


def safe_extract_tar(archive: Path, destination: Path) -> None:
    """Extract ``archive`` into ``destination``, refusing members that would land outside it.

    Raises:
        DatasetError: for a truncated or corrupt archive, or a member with an unsafe path or type.
    """
    destination = destination.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                target = (destination / member.name).resolve()
                if not target.is_relative_to(destination):
                    raise DatasetError(
                        f"refusing to extract {archive}: member '{member.name}' would be written "
                        f"outside {destination}. The archive is not the official one; delete it."
                    )
                if not (member.isfile() or member.isdir()):
                    raise DatasetError(
                        f"refusing to extract {archive}: member '{member.name}' is a link or "
                        "device, which the official archive does not contain. Delete the archive."
                    )
            tar.extractall(destination, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(
            f"{archive} is truncated or corrupt ({type(exc).__name__}: {exc}). "
            "Delete it and download it again."
        ) from exc


class _RestrictedUnpickler(pickle.Unpickler):
    """Loads plain containers and numpy arrays; refuses every other global."""

    def __init__(self, file: io.BufferedIOBase, allowed: dict[tuple[str, str], Any]):
        super().__init__(file, encoding="bytes")
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global '{module}.{name}' is not allowed in a data file"
            ) from None


def _numpy_globals() -> dict[tuple[str, str], Any]:
    import codecs

    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(str, 'latin1').
        ("_codecs", "encode"): codecs.encode,
    }


def load_restricted_pickle(path: Path) -> Any:
    """Unpickle ``path`` allowing only containers, bytes, numbers and numpy arrays.

    Raises:
        DatasetError: naming the file, when it is truncated, corrupt or refers to anything else
            (such a pickle could run code; it is refused without running anything).
    """
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, _numpy_globals()).load()
    except pickle.UnpicklingError as exc:
        raise DatasetError(
            f"refusing to load {path}: {exc}. It is not a file of the expected format; "
            "delete it and fetch the official data again."
        ) from exc
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise DatasetError(
            f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}). "
            "Delete it and fetch the data again."
        ) from exc


def _atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a new file beside ``path``, then rename it to ``path``: readers see
    either the old complete file or the new one.

    The file is created with mode ``0o666`` less the umask, as ``open`` creates files (a
    ``tempfile.mkstemp`` file would be ``0o600`` whatever the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:  # pragma: no cover - a 48-bit name drawn twice
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write_text`)."""
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) so that readers see either the old complete file or the new one.

    The file gets the mode any new file of the user gets (``0o666`` less the umask).
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def atomic_save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Save ``arrays`` uncompressed with ``np.savez`` to ``path`` (the name is kept as given, no
    ``.npz`` is added), atomically (see :func:`atomic_write_text`).

    Raises:
        ValueError: for an array of Python objects (it would be pickled; the files mtbench
            writes load with ``np.load(allow_pickle=False)``).
    """
    plain = {name: np.asarray(value) for name, value in arrays.items()}
    pickled = sorted(name for name, value in plain.items() if value.dtype.hasobject)
    if pickled:
        raise ValueError(f"cannot save {path}: the arrays {pickled} hold Python objects")
    _atomic_write(path, lambda f: np.savez(f, **plain))


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int | None, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoProgress()
    from tqdm.auto import tqdm

    make: Callable[..., Any] = tqdm
    return make(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024)
