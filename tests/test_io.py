"""Atomic writes: complete files only, no temporary files left, and the mode any new file of the
user gets (``0o666`` less the umask), not ``mkstemp``'s ``0o600``."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mtbench import checkpoint
from mtbench.io import atomic_save_npz, atomic_write_bytes, atomic_write_json, atomic_write_text

ARRAYS = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b/c": np.array([1, 2], np.int64)}


@pytest.fixture
def umask(request) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


class _Var:
    def __init__(self, value: np.ndarray):
        self.value = value

    def numpy(self) -> np.ndarray:
        return self.value


WRITERS = {
    "text": lambda path: atomic_write_text(path, "héllo\n"),
    "json": lambda path: atomic_write_json(path, {"x": 1}),
    "bytes": lambda path: atomic_write_bytes(path, b"\x00\x01"),
    "npz": lambda path: atomic_save_npz(path, ARRAYS),
    "checkpoint": lambda path: checkpoint.save(path, {"model": [_Var(ARRAYS["a"])]}, {"epoch": 1}),
}


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], indirect=True)
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_written_files_have_the_mode_the_umask_gives_new_files(tmp_path, umask, writer):
    path = tmp_path / "sub" / "out.file"
    WRITERS[writer](path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    WRITERS[writer](path)  # replacing an existing file
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.file"]


def test_the_writers_write_what_they_are_given(tmp_path):
    atomic_write_text(tmp_path / "t.txt", "héllo\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    atomic_write_json(tmp_path / "j.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "j.json").read_text()) == {"x": [1, 2]}
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\xff")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"
    atomic_save_npz(tmp_path / "arrays", ARRAYS)  # the name is kept: no ".npz" added
    with np.load(tmp_path / "arrays", allow_pickle=False) as z:
        assert sorted(z.files) == sorted(ARRAYS)
        for key, value in ARRAYS.items():
            np.testing.assert_array_equal(z[key], value)
            assert z[key].dtype == value.dtype


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "out.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # type: ignore[arg-type]  # fails while writing
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_arrays_of_python_objects_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\['ragged'\] hold Python objects"):
        atomic_save_npz(tmp_path / "x.npz", {"ragged": np.array([[1], [2, 3]], dtype=object)})
    assert not list(tmp_path.iterdir())


def test_checkpoints_still_round_trip(tmp_path):
    path = tmp_path / "ck" / "last.npz"
    checkpoint.save(path, {"model": [_Var(ARRAYS["a"])], "opt": []}, {"epoch": 2})
    groups, progress = checkpoint.load(path)
    assert progress == {"epoch": 2} and list(groups) == ["model"]
    np.testing.assert_array_equal(groups["model"][0], ARRAYS["a"])


def test_a_plain_open_gives_the_mode_the_writers_match(tmp_path: Path) -> None:
    """Sanity: a plain ``open`` under the same umask gives the mode the writers must match."""
    previous = os.umask(0o027)
    try:
        (tmp_path / "plain").write_text("x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o640
