"""The cifar100 dataset plugin: every format, the label mapping, splits, downloads and bad files."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import pickle
import shutil
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import synthetic_cifar
from helpers import run_mtbench

from mtbench.data import DatasetError, stratified_split, stratified_subset, validate
from mtbench.inputs import Augmentation, ImageInputs
from mtbench_plugins.datasets.cifar100 import Cifar100
from mtbench_plugins.datasets.cifar100_formats import FINE_TO_COARSE


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------- label mapping
def test_superclasses_are_the_official_ones_not_fine_div_5():
    names = synthetic_cifar.FINE_NAMES, synthetic_cifar.COARSE_NAMES
    assert names[0][0] == "apple" and names[1][FINE_TO_COARSE[0]] == "fruit_and_vegetables"
    assert names[0][4] == "beaver" and names[1][FINE_TO_COARSE[4]] == "aquatic_mammals"
    assert names[0][99] == "worm" and names[1][FINE_TO_COARSE[99]] == "non-insect_invertebrates"
    assert np.bincount(FINE_TO_COARSE).tolist() == [5] * 20  # five fine classes per superclass
    assert np.mean(FINE_TO_COARSE == np.arange(100) // 5) < 0.2


def test_loaded_tasks_names_and_hierarchy(npz_root):
    splits = Cifar100(root=str(npz_root), download=False, val_size=100).load()
    fine, coarse = splits.tasks
    assert (fine.name, fine.num_classes, coarse.name, coarse.num_classes) == (
        "fine",
        100,
        "coarse",
        20,
    )
    assert fine.class_names[0] == "apple" and coarse.class_names[4] == "fruit_and_vegetables"
    assert splits.hierarchy.child == "fine" and splits.hierarchy.parent == "coarse"
    np.testing.assert_array_equal(splits.hierarchy.parent_of, FINE_TO_COARSE)
    for split in (splits.train, splits.val, splits.test):
        np.testing.assert_array_equal(split.y["coarse"], FINE_TO_COARSE[split.y["fine"]])


def test_the_dataset_declares_its_image_inputs_and_passes_validation(npz_root):
    splits = Cifar100(root=str(npz_root), download=False, val_size=100).load()
    assert splits.inputs == ImageInputs(divisor=255.0)  # scaled to [0, 1], nothing else
    kinds = validate(splits, "cifar100")
    assert {t: (k.spec.kind, k.num_classes) for t, k in kinds.items()} == {
        "fine": ("classification", 100), "coarse": ("classification", 20),
    }  # fmt: skip
    options = Cifar100(
        root=str(npz_root), download=False, val_size=100, normalize=True, eval_flip=True,
        augment={"crop_padding": 4, "horizontal_flip": True, "cutout": 8},
    ).load()  # fmt: skip
    assert options.inputs == ImageInputs(
        divisor=255.0, normalize=True, eval_flip=True,
        augmentation=Augmentation(crop_padding=4, horizontal_flip=True, cutout=8),
    )  # fmt: skip


def test_coarse_labels_come_from_the_file_and_wrong_ones_are_refused(tmp_path, synthetic_arrays):
    arrays = dict(synthetic_arrays, y_train_coarse=synthetic_arrays["y_train_fine"] // 5)
    synthetic_cifar.write_npz(tmp_path, arrays)
    with pytest.raises(DatasetError, match="superclass"):
        Cifar100(root=str(tmp_path), download=False, val_size=100).load()


# ------------------------------------------------------------------------------------- formats
def test_all_formats_read_the_same_data(
    archive_root, folder_root, npz_root, tmp_path, synthetic_arrays
):
    raws = [
        Cifar100(root=str(_copy(archive_root, tmp_path / "a")), md5=None, download=False).read(),
        Cifar100(root=str(folder_root), download=False).read(),
        Cifar100(root=str(npz_root), download=False).read(),
    ]
    for raw in raws:
        np.testing.assert_array_equal(raw.x_train, synthetic_arrays["x_train"])
        np.testing.assert_array_equal(raw.x_test, synthetic_arrays["x_test"])
        np.testing.assert_array_equal(raw.y_train_fine, synthetic_arrays["y_train_fine"])
        np.testing.assert_array_equal(raw.y_test_coarse, synthetic_arrays["y_test_coarse"])
        assert raw.fine_names == synthetic_cifar.FINE_NAMES
        assert raw.coarse_names == synthetic_cifar.COARSE_NAMES


def test_archive_is_verified_extracted_once_and_kept(archive_root, tmp_path):
    root = _copy(archive_root, tmp_path / "a")
    archive = root / "cifar-100-python.tar.gz"
    Cifar100(root=str(root), md5=_md5(archive), download=False).read()
    assert (root / "cifar-100-python" / "train").is_file() and archive.is_file()
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []  # no staging left
    archive.unlink()  # the extracted folder is used from now on
    Cifar100(root=str(root), download=False).read()


def test_archive_with_wrong_md5_is_refused_naming_file(archive_root, tmp_path):
    root = _copy(archive_root, tmp_path / "a")
    with pytest.raises(DatasetError, match="cifar-100-python.tar.gz has md5"):
        Cifar100(root=str(root), md5="0" * 32, download=False).read()


def test_truncated_archive_is_reported_naming_file(archive_root, tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    data = (archive_root / "cifar-100-python.tar.gz").read_bytes()
    (root / "cifar-100-python.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"cifar-100-python\.tar\.gz is truncated or corrupt"):
        Cifar100(root=str(root), md5=None, download=False).read()
    assert not (root / "cifar-100-python").exists()


def test_truncated_pickle_and_npz_are_reported_naming_file(folder_root, npz_root, tmp_path):
    folder = _copy(folder_root, tmp_path / "f")
    train = folder / "cifar-100-python" / "train"
    train.write_bytes(train.read_bytes()[:1000])
    with pytest.raises(DatasetError, match=r"train is truncated or corrupt"):
        Cifar100(root=str(folder), download=False).read()
    npz = _copy(npz_root, tmp_path / "n") / "cifar100.npz"
    npz.write_bytes(npz.read_bytes()[:5000])
    with pytest.raises(DatasetError, match=r"cifar100\.npz is truncated or corrupt"):
        Cifar100(root=str(npz.parent), download=False).read()


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(folder_root, tmp_path):
    folder = _copy(folder_root, tmp_path / "f")
    marker = tmp_path / "pwned"
    payload = {b"data": _Exploit(marker), b"fine_labels": [], b"coarse_labels": []}
    (folder / "cifar-100-python" / "train").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DatasetError, match="not allowed"):
        Cifar100(root=str(folder), download=False).read()
    assert not marker.exists()


def _tar_with(root: Path, member: tarfile.TarInfo, content: bytes = b"x") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        member.size = len(content) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(content) if member.isfile() else None)
    return archive


def test_tar_path_traversal_is_refused(tmp_path):
    root = tmp_path / "deep" / "root"
    _tar_with(root, tarfile.TarInfo("../../escaped.txt"))
    with pytest.raises(DatasetError, match="outside"):
        Cifar100(root=str(root), md5=None, download=False).read()
    assert not (tmp_path / "escaped.txt").exists()


def test_tar_links_are_refused(tmp_path):
    link = tarfile.TarInfo("cifar-100-python/train")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    _tar_with(tmp_path, link)
    with pytest.raises(DatasetError, match="link"):
        Cifar100(root=str(tmp_path), md5=None, download=False).read()


# ----------------------------------------------------------------------------------- downloads
@pytest.fixture
def http_server(archive_root):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(archive_root))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/cifar-100-python.tar.gz"
    server.shutdown()


def test_download_verifies_md5_and_keeps_the_archive(http_server, archive_root, tmp_path):
    md5 = _md5(archive_root / "cifar-100-python.tar.gz")
    splits = Cifar100(root=str(tmp_path), url=http_server, md5=md5, val_size=100).load()
    assert len(splits.train) == 700 and (tmp_path / "cifar-100-python.tar.gz").is_file()


def test_download_with_wrong_md5_keeps_nothing(http_server, tmp_path):
    with pytest.raises(DatasetError, match="corrupt: md5"):
        Cifar100(root=str(tmp_path), url=http_server, md5="0" * 32).read()
    assert list(tmp_path.iterdir()) == []


def test_offline_error_says_which_url_to_fetch_and_where_to_put_it(tmp_path):
    url = "http://127.0.0.1:9/cifar-100-python.tar.gz"  # nothing listens on the discard port
    with pytest.raises(DatasetError) as info:
        Cifar100(root=str(tmp_path), url=url).read()
    assert url in str(info.value) and str(tmp_path / "cifar-100-python.tar.gz") in str(info.value)
    with pytest.raises(DatasetError) as info:
        Cifar100(root=str(tmp_path), download=False).read()
    message = str(info.value)
    assert "dataset.download=false" in message and "cifar-100-python.tar.gz" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in message


# -------------------------------------------------------------------------------------- splits
def test_validation_split_is_stratified_seeded_and_disjoint(npz_root):
    a = Cifar100(root=str(npz_root), download=False, val_size=200, split_seed=0).load()
    b = Cifar100(root=str(npz_root), download=False, val_size=200, split_seed=0).load()
    c = Cifar100(root=str(npz_root), download=False, val_size=200, split_seed=1).load()
    assert (len(a.train), len(a.val), len(a.test)) == (600, 200, 300)
    assert np.bincount(a.val.y["fine"], minlength=100).tolist() == [2] * 100
    np.testing.assert_array_equal(a.val.x, b.val.x)
    assert not np.array_equal(a.val.x, c.val.x)
    train_rows = {row.tobytes() for row in a.train.x}
    assert not any(row.tobytes() in train_rows for row in a.val.x)


def test_train_limit_is_a_stratified_subset_of_the_rest(npz_root):
    full = Cifar100(root=str(npz_root), download=False, val_size=100).load()
    small = Cifar100(root=str(npz_root), download=False, val_size=100, train_limit=300).load()
    assert len(small.train) == 300 and np.bincount(small.train.y["fine"]).tolist() == [3] * 100
    np.testing.assert_array_equal(small.val.x, full.val.x)  # same validation split
    full_rows = {row.tobytes() for row in full.train.x}
    assert all(row.tobytes() in full_rows for row in small.train.x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_size": 800}, "val_size=800 leaves no training data"),
        ({"val_size": 0}, "at least 1"),
        ({"val_size": 100, "train_limit": 701}, "train_limit=701 is out of range"),
    ],
)
def test_impossible_splits_are_clear_errors(npz_root, kwargs, match):
    with pytest.raises(DatasetError, match=match):
        Cifar100(root=str(npz_root), download=False, **kwargs).load()


def test_stratified_split_allocates_by_largest_remainder():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    picked, rest = stratified_split(labels, 11, seed=3)
    assert np.bincount(labels[picked]).tolist() == [6, 3, 2]  # 5.5, 3.3, 2.2 -> 6, 3, 2
    assert len(rest) == 89 and not set(picked) & set(rest)


def _shuffled_labels(per_class: int, classes: int = 100) -> np.ndarray:
    labels = np.repeat(np.arange(classes), per_class)
    np.random.default_rng(7).shuffle(labels)
    return labels


@pytest.mark.parametrize("limit", [10, 50, 150])
def test_the_classes_that_get_an_extra_example_are_drawn_at_random(limit):
    labels = _shuffled_labels(7)
    picked = {seed: stratified_subset(labels, limit, seed) for seed in (0, 1)}
    np.testing.assert_array_equal(stratified_subset(labels, limit, 0), picked[0])
    extra = {}
    for seed, indices in picked.items():
        counts = np.bincount(labels[indices], minlength=100)
        assert counts.sum() == limit and counts.max() - counts.min() <= 1
        extra[seed] = np.flatnonzero(counts > limit // 100)
        assert len(extra[seed]) == limit % 100
        # not the lowest class indices, and from both halves of the range
        assert extra[seed].tolist() != list(range(limit % 100))
        assert extra[seed].min() < 50 <= extra[seed].max()
    assert extra[0].tolist() != extra[1].tolist()


def test_splits_without_ties_to_break_are_unchanged():
    """A size that is a multiple of the number of (balanced) classes draws, as before the ties
    were broken at random, the first ``size / classes`` of a seeded permutation of each class."""
    labels = _shuffled_labels(7)
    rng = np.random.default_rng(3)
    expected = np.sort(
        np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:2] for c in range(100)])
    )
    np.testing.assert_array_equal(stratified_subset(labels, 200, seed=3), expected)


@pytest.mark.parametrize("limit", [10, 50])
def test_a_train_limit_below_the_number_of_classes_spans_the_classes(npz_root, limit):
    data = Cifar100(root=str(npz_root), download=False, val_size=100, train_limit=limit).load()
    classes = np.unique(data.train.y["fine"])
    assert len(classes) == limit and classes.tolist() != list(range(limit))


# ------------------------------------------------------------------------------------ real data
@pytest.mark.realdata
def test_real_cifar100_labels_and_sizes(real_root):
    raw = Cifar100(root=str(real_root), download=False).read()
    raw.validate()
    assert raw.has_official_sizes
    assert raw.fine_names[0] == "apple" and raw.coarse_names[4] == "fruit_and_vegetables"
    assert raw.fine_names[4] == "beaver" and raw.coarse_names[0] == "aquatic_mammals"
    assert raw.y_train_fine[:10].tolist() == [19, 29, 0, 11, 1, 86, 90, 28, 23, 31]
    np.testing.assert_array_equal(raw.y_train_coarse, FINE_TO_COARSE[raw.y_train_fine])


def test_the_cli_reports_missing_data_in_one_message_and_leaves_no_run_directory(tmp_path):
    result = run_mtbench(
        [
            "+experiment=cifar100_mtl",
            f"dataset.root={tmp_path / 'empty'}",
            "dataset.download=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "mtbench: " in result.stderr and "dataset.download=false" in result.stderr
    assert "cifar-100-python.tar.gz" in result.stderr and "Traceback" not in result.stderr
    # the message says every way to provide the data offline
    assert "MTBENCH_DATA_DIR" in result.stderr and "cifar100.npz" in result.stderr
    # TensorFlow's start-up lines (absl, cuInit) are not shown
    assert "I0000" not in result.stderr and "cuInit" not in result.stderr
    # no benchmark started: no directory is left that a leaderboard would count as a failure
    assert not (tmp_path / "run").exists()
