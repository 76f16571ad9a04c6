"""The multifashion and multimnist datasets: idx files, checksums, downloads, how the pairs are
drawn and drawn again, the images' geometry, the options, conformance and one whole benchmark."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO

from mtbench import registry
from mtbench.data import DatasetError, validate
from mtbench.inputs import ImageInputs
from mtbench.testing import DatasetSuite
from mtbench_plugins.datasets import multifashion
from mtbench_plugins.datasets.idx_formats import (
    FASHION_MNIST,
    MNIST,
    IdxFile,
    IdxSource,
    parse_idx,
    read_all,
)
from mtbench_plugins.datasets.multifashion import (
    CANVAS,
    FRAME,
    MAX_SHIFT,
    OFFSET,
    MultiFashion,
    MultiMnist,
    Pairs,
    compose,
    draw_pairs,
)
from mtbench_plugins.datasets.options import MultiFashionConfig, MultiMnistConfig

TRAIN_PER_CLASS, TEST_PER_CLASS = 20, 5
SIZES = {"train_size": 300, "val_size": 60, "test_size": 100}


# ---------------------------------------------------------------------------- synthetic files
def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` (uint8) in the idx format: 0, 0, type 0x08, ndim, big-endian sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def make_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """200 training and 50 test images of random pixels, 20 and 5 per class, shuffled."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        labels = rng.permutation(np.repeat(np.arange(10), per_class)).astype(np.uint8)
        arrays[f"{split}_labels"] = labels
        arrays[f"{split}_images"] = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
    return arrays


def write_files(root: Path, arrays: dict[str, np.ndarray], *, compressed: bool) -> Path:
    """The four files of ``arrays`` under their official names, gzip-compressed or not."""
    root.mkdir(parents=True, exist_ok=True)
    for key, spec in FASHION_MNIST.files.items():
        content = idx_bytes(arrays[key])
        if compressed:
            (root / spec.archive).write_bytes(gzip.compress(content, mtime=0))
        else:
            (root / spec.name).write_bytes(content)
    return root


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def synthetic_source(root: Path, arrays: dict[str, np.ndarray], **overrides: str) -> IdxSource:
    """FASHION_MNIST with the checksums of the synthetic files in ``root`` (their archives' md5
    and their contents'); ``overrides`` replaces a file's ``<key>_archive`` or ``<key>_content``."""
    files = {}
    for key, spec in FASHION_MNIST.files.items():
        archive = root / spec.archive
        files[key] = IdxFile(
            spec.name,
            overrides.get(f"{key}_archive", md5(archive.read_bytes()) if archive.is_file() else ""),
            overrides.get(f"{key}_content", md5(idx_bytes(arrays[key]))),
        )
    return dataclasses.replace(FASHION_MNIST, files=files)


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    return make_arrays()


@pytest.fixture(scope="module")
def gz_root(tmp_path_factory, arrays) -> Path:
    return write_files(tmp_path_factory.mktemp("gz"), arrays, compressed=True)


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory, arrays) -> Path:
    return write_files(tmp_path_factory.mktemp("raw"), arrays, compressed=False)


@pytest.fixture(scope="module", autouse=True)
def registered():
    """Both datasets registered as their entry points register them, their options stored."""
    from mtbench.cli import config_dir
    from mtbench.config import store_schema

    with registry.isolated():
        registry.register("dataset", "multifashion", config=MultiFashionConfig)(MultiFashion)
        registry.register("dataset", "multimnist", config=MultiMnistConfig)(MultiMnist)
        registry.store_schemas(config_dir())
        store_schema()
        yield


def load(root: Path, **options) -> multifashion.DatasetSplits:
    return MultiFashion(root=str(root), download=False, verify=False, **(SIZES | options)).load()


# ---------------------------------------------------------------------------------- idx files
def test_gz_and_uncompressed_files_read_the_same_arrays(gz_root, raw_root, arrays):
    for root in (gz_root, raw_root):
        raw = read_all(root, FASHION_MNIST, verify=False)
        np.testing.assert_array_equal(raw.x_train, arrays["train_images"])
        np.testing.assert_array_equal(raw.y_train, arrays["train_labels"])
        np.testing.assert_array_equal(raw.x_test, arrays["test_images"])
        np.testing.assert_array_equal(raw.y_test, arrays["test_labels"])
        assert raw.x_train.dtype == np.uint8 and raw.y_train.dtype == np.int64


def test_idx_headers_are_checked(tmp_path):
    images = np.zeros((3, 28, 28), np.uint8)
    data = idx_bytes(images)
    assert parse_idx(data, tmp_path / "f", 3).shape == (3, 28, 28)
    labels_magic = bytes([0, 0, 8, 1])  # a label file where images are expected
    with pytest.raises(DatasetError, match="not an idx file of 3-dimensional unsigned bytes"):
        parse_idx(labels_magic + data[4:], tmp_path / "f", 3)
    with pytest.raises(DatasetError, match="not an idx file"):
        parse_idx(b"\0\0\x0d\x03" + data[4:], tmp_path / "f", 3)  # 0x0d: float32 data
    with pytest.raises(DatasetError, match=r"announces shape \(3, 28, 28\).*truncated"):
        parse_idx(data[:-1], tmp_path / "f", 3)


def test_mismatched_images_and_labels_are_refused(tmp_path, arrays):
    short = dict(arrays, train_labels=arrays["train_labels"][:-1])
    root = write_files(tmp_path, short, compressed=False)
    with pytest.raises(DatasetError, match="199 labels"):
        read_all(root, FASHION_MNIST, verify=False)


# ---------------------------------------------------------------------------------- checksums
def test_the_official_checksums_are_those_published():
    """Zalando's README (archives), the decompressed files (shared/data/fashion_mnist/README.md),
    and MNIST's archives as torchvision checks them."""
    fashion = {key: (f.archive_md5, f.content_md5) for key, f in FASHION_MNIST.files.items()}
    assert fashion["train_images"] == (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    )
    assert fashion["test_labels"] == (
        "bb300cfdad3c16e7a12a480ee83cd310",
        "15d484375f8d13e6eb1aabb0c3f46965",
    )
    assert MNIST.files["train_images"].archive_md5 == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert MNIST.files["test_labels"].content_md5 == "27ae3e4e09519cfbb04c329615203637"
    for source in (FASHION_MNIST, MNIST):
        names = [f.name for f in source.files.values()]
        assert names == [
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        ]


def _checked(monkeypatch, root: Path, source: IdxSource) -> multifashion.DatasetSplits:
    monkeypatch.setattr(MultiFashion, "source", source)
    return MultiFashion(root=str(root), download=False, **SIZES).load()


def test_the_official_archive_is_accepted_by_its_own_md5(monkeypatch, gz_root, arrays):
    # contents declared wrong: only the archive's md5 can have accepted the files
    wrong = {f"{key}_content": "0" * 32 for key in FASHION_MNIST.files}
    splits = _checked(monkeypatch, gz_root, synthetic_source(gz_root, arrays, **wrong))
    assert len(splits.train) == 300


def test_a_recompressed_archive_is_accepted_by_its_content(monkeypatch, tmp_path, arrays):
    """As Debian ships Fashion-MNIST: other archive bytes, the same content."""
    root = tmp_path / "recompressed"
    root.mkdir()
    for key, spec in FASHION_MNIST.files.items():
        (root / spec.archive).write_bytes(gzip.compress(idx_bytes(arrays[key]), 1, mtime=12345))
    wrong = {f"{key}_archive": "f" * 32 for key in FASHION_MNIST.files}
    splits = _checked(monkeypatch, root, synthetic_source(root, arrays, **wrong))
    assert len(splits.test) == 100


def test_an_uncompressed_file_is_checked_by_its_content(monkeypatch, raw_root, arrays):
    assert len(_checked(monkeypatch, raw_root, synthetic_source(raw_root, arrays)).val) == 60


def test_corrupt_content_is_refused_naming_the_file_and_the_way_out(monkeypatch, tmp_path, arrays):
    root = write_files(tmp_path / "corrupt", arrays, compressed=True)
    source = synthetic_source(root, arrays)
    bad = idx_bytes(arrays["train_images"])
    bad = bad[:1000] + bytes([bad[1000] ^ 1]) + bad[1001:]  # one bit of one pixel
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bad, mtime=0))
    with pytest.raises(DatasetError) as info:
        _checked(monkeypatch, root, source)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz: its decompressed content has md5" in message
    assert source.files["train_images"].content_md5 in message
    assert "Delete it" in message and "dataset.verify=false" in message
    # the same data without the check, as a deliberately modified copy would be read
    assert len(MultiFashion(root=str(root), download=False, verify=False, **SIZES).load().train)


def test_corrupt_uncompressed_and_truncated_files_are_refused(monkeypatch, tmp_path, arrays):
    root = write_files(tmp_path / "raw", arrays, compressed=False)
    source = synthetic_source(root, arrays)
    labels = root / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-1] + b"\x09")
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte: it has md5 [0-9a-f]{32}, not"):
        _checked(monkeypatch, root, source)
    gz = write_files(tmp_path / "gz", arrays, compressed=True)
    archive = gz / "train-labels-idx1-ubyte.gz"
    archive.write_bytes(archive.read_bytes()[:-20])
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte\.gz is truncated or corrupt"):
        MultiFashion(root=str(gz), download=False, verify=False, **SIZES).load()


# ---------------------------------------------------------------------------------- downloads
@pytest.fixture
def http_server(gz_root):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(gz_root))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_missing_archives_are_downloaded_and_verified(
    monkeypatch, http_server, gz_root, arrays, tmp_path
):
    monkeypatch.setattr(MultiFashion, "source", synthetic_source(gz_root, arrays))
    target = tmp_path / "downloaded"
    splits = MultiFashion(root=str(target), url=http_server, **SIZES).load()
    assert sorted(p.name for p in target.iterdir()) == sorted(
        f.archive for f in FASHION_MNIST.files.values()
    )
    np.testing.assert_array_equal(splits.test.x, load(gz_root).test.x)


def test_a_download_with_the_wrong_md5_keeps_nothing(monkeypatch, http_server, gz_root, tmp_path):
    source = synthetic_source(gz_root, make_arrays(), train_images_archive="0" * 32)
    monkeypatch.setattr(MultiFashion, "source", source)
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz is corrupt: md5"):
        MultiFashion(root=str(tmp_path), url=http_server, **SIZES).load()
    assert not (tmp_path / "train-images-idx3-ubyte.gz").exists()


def test_offline_errors_say_what_to_fetch_and_where_to_put_it(tmp_path):
    url = "http://127.0.0.1:9/"  # nothing listens on the discard port
    with pytest.raises(DatasetError) as info:
        MultiFashion(root=str(tmp_path), url=url).load()
    message = str(info.value)
    assert f"{url}train-images-idx3-ubyte.gz" in message and str(tmp_path) in message
    assert "dataset.root" in message and "dataset.download=false" in message
    with pytest.raises(DatasetError) as info:
        MultiFashion(root=str(tmp_path), download=False).load()
    message = str(info.value)
    assert "no Fashion-MNIST train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz" in message
    assert "dataset.download=false" in message and "MTBENCH_DATA_DIR" in message
    assert "fashion_mnist/" in message and FASHION_MNIST.url in message


# ------------------------------------------------------------------------------- pairs drawn
def test_pairs_cover_the_pool_and_never_repeat_a_class():
    labels = np.repeat(np.arange(10), [5, 6, 7, 8, 9, 10, 11, 12, 13, 14])
    pairs = draw_pairs(labels, 3 * len(labels) + 7, np.random.default_rng(0))
    uses = np.bincount(pairs.left, minlength=len(labels))
    assert uses.min() == 3 and uses.max() == 4 and uses.sum() == len(pairs)
    assert not np.any(labels[pairs.left] == labels[pairs.right])
    assert pairs.shifts.min() == -MAX_SHIFT and pairs.shifts.max() == MAX_SHIFT
    same = (OFFSET + pairs.shifts[:, 2] == pairs.shifts[:, 0]) & (
        OFFSET + pairs.shifts[:, 3] == pairs.shifts[:, 1]
    )
    assert not same.any()
    again = draw_pairs(labels, len(pairs), np.random.default_rng(0))
    for a, b in zip(dataclasses.astuple(pairs), dataclasses.astuple(again), strict=True):
        np.testing.assert_array_equal(a, b)


def test_right_items_are_uniform_over_the_other_classes():
    labels = np.repeat(np.arange(3), [10, 20, 30])
    pairs = draw_pairs(labels, 60_000, np.random.default_rng(1))
    left_zero = labels[pairs.left] == 0
    counts = np.bincount(pairs.right[left_zero], minlength=60)
    assert counts[:10].sum() == 0
    # class 0 is the left item of 10000 pairs (1/6 of them): 200 for each of the 50 other
    # images, a binomial's deviation about 14
    assert np.abs(counts[10:] - 200).max() < 70


def test_the_draws_that_would_put_both_items_at_one_place_are_drawn_again():
    pairs = draw_pairs(np.arange(2), 200_000, np.random.default_rng(2))
    relative = OFFSET + pairs.shifts[:, 2:] - pairs.shifts[:, :2]
    assert relative.min() == 0 and relative.max() == 2 * OFFSET
    assert not np.all(relative == 0, axis=1).any()
    # a zero offset along one axis stays (the items are still apart along the other)
    assert np.any(relative == 0, axis=1).sum() > 0


# ---------------------------------------------------------------------------------- geometry
def _exact(images: np.ndarray, pairs: Pairs) -> np.ndarray:
    """The images of ``pairs`` in exact integer arithmetic: each item pasted by maximum, each
    output pixel the area-weighted mean of the canvas rounded half up."""
    out = np.empty((len(pairs), FRAME, FRAME), np.uint8)
    # output pixel i covers canvas [11 i, 11 i + 11) / 9; canvas pixel j covers [9 j, 9 j + 9) / 9
    starts_out, starts_in = np.arange(FRAME)[:, None] * 11, np.arange(CANVAS)[None, :] * 9
    weights = np.minimum(starts_out + 11, starts_in + 9) - np.maximum(starts_out, starts_in)
    weights = np.maximum(weights, 0).astype(np.int64)
    assert (weights.sum(axis=1) == 11).all()
    for n in range(len(pairs)):
        canvas = np.zeros((CANVAS, CANVAS), np.int64)
        for index, base, dy, dx in (
            (pairs.left[n], MAX_SHIFT, *pairs.shifts[n, :2]),
            (pairs.right[n], MAX_SHIFT + OFFSET, *pairs.shifts[n, 2:]),
        ):
            window = canvas[base + dy : base + dy + 28, base + dx : base + dx + 28]
            np.maximum(window, images[index], out=window)
        out[n] = (weights @ canvas @ weights.T + 60) // 121
    return out[..., None]


def test_images_are_the_exact_area_means_of_the_canvas():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    images[:5] = 255  # saturated items: the largest sums
    pairs = draw_pairs(rng.integers(0, 4, 50), 400, rng)
    np.testing.assert_array_equal(compose(images, pairs), _exact(images, pairs))


def test_items_sit_in_their_corners_and_overlap_by_maximum():
    images = np.stack([np.full((28, 28), 100, np.uint8), np.full((28, 28), 200, np.uint8)])
    shifts = np.array([[0, 0, 0, 0], [-4, -4, 4, 4], [4, 4, -4, -4]])
    out = compose(images, Pairs(np.zeros(3, int), np.ones(3, int), shifts))[..., 0]
    # nominal places: left on canvas 4..31 (frame 3.3..26.2), right on 12..39 (9.8..32.7)
    assert out[0, 5, 5] == 100 and out[0, 30, 30] == 200 and out[0, 20, 20] == 200  # overlap
    assert out[0, 0, 0] == 0 and out[0, 35, 35] == 0 and out[0, 0, 35] == 0
    # moved apart: left to the canvas corner 0..27, right to 16..43
    assert out[1, 0, 0] == 100 and out[1, 35, 35] == 200 and out[1, 0, 35] == 0
    # moved together as far as they go: both on canvas 8..35, the right item on top
    assert out[2, 5, 5] == out[2, 30, 30] == 0 and out[2, 15, 15] == 200
    assert out[2].max() == 200 and not (out[2] == 100).any()  # a sum would saturate at 255


# ------------------------------------------------------------------------------------ splits
def test_splits_tasks_and_inputs(gz_root, arrays):
    splits = load(gz_root)
    assert [(t.name, t.num_classes) for t in splits.tasks] == [("left", 10), ("right", 10)]
    assert splits.tasks[0].class_names[0] == "T-shirt/top"
    assert splits.tasks[1].class_names[9] == "Ankle boot"
    for split, size in ((splits.train, 300), (splits.val, 60), (splits.test, 100)):
        assert split.x.shape == (size, 36, 36, 1) and split.x.dtype == np.uint8
        assert split.x.flags.c_contiguous
        left, right = split.y["left"], split.y["right"]
        assert left.dtype == right.dtype == np.int64 and not np.any(left == right)
    assert splits.inputs == ImageInputs(divisor=255.0)  # no augmentation, no flips
    kinds = validate(splits, "multifashion")
    assert {name: kind.num_classes for name, kind in kinds.items()} == {"left": 10, "right": 10}


def test_validation_and_training_pairs_never_share_an_image(monkeypatch, gz_root, arrays):
    pools = []  # per split (train, val, test), the images its pairs are made of

    def spy(images, pairs):
        pools.append({images[i].tobytes() for i in np.concatenate([pairs.left, pairs.right])})
        return compose(images, pairs)

    monkeypatch.setattr(multifashion, "compose", spy)
    load(gz_root)
    train, val, test = pools
    assert not train & val
    everything = {image.tobytes() for image in arrays["train_images"]}
    assert train | val <= everything and test.isdisjoint(everything)
    # the held-out share: 200 * 60 / (300 + 60) = 33.3 -> 33 images, every one in a pair
    assert len(val) == 33 and len(train) == 167


def test_same_seeds_same_pairs_other_seeds_other_pairs(gz_root):
    first, again = load(gz_root), load(gz_root)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(first, name).x, getattr(again, name).x)
        a, b = getattr(first, name).y, getattr(again, name).y
        for task in ("left", "right"):
            np.testing.assert_array_equal(a[task], b[task])
    other = load(gz_root, split_seed=1)
    assert not np.array_equal(first.train.x, other.train.x)
    assert not np.array_equal(first.val.x, other.val.x)
    np.testing.assert_array_equal(first.test.x, other.test.x)  # the test pairs stay
    retested = load(gz_root, test_seed=1)
    assert not np.array_equal(first.test.x, retested.test.x)
    np.testing.assert_array_equal(first.train.x, retested.train.x)


def test_train_limit_is_a_stratified_subset_of_the_training_pairs(gz_root):
    full = load(gz_root)
    small = load(gz_root, train_limit=50)
    assert len(small.train) == 50
    share = np.bincount(full.train.y["left"], minlength=10) * 50 / 300
    assert np.abs(np.bincount(small.train.y["left"], minlength=10) - share).max() < 1
    rows = {image.tobytes() for image in full.train.x}
    assert all(image.tobytes() in rows for image in small.train.x)
    np.testing.assert_array_equal(small.val.x, full.val.x)
    np.testing.assert_array_equal(small.test.x, full.test.x)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"train_size": 0}, "dataset.train_size must be at least 1 \\(got 0\\)"),
        ({"val_size": 0}, "dataset.val_size must be at least 1"),
        ({"test_size": -5}, "dataset.test_size must be at least 1 \\(got -5\\)"),
        ({"train_limit": 0}, "dataset.train_limit=0 is out of range"),
        ({"train_limit": 301}, "train_limit=301 is out of range: there are 300 training pairs"),
    ],
)
def test_bad_option_values_are_refused_naming_the_option(tmp_path, options, match):
    with pytest.raises(DatasetError, match=match):
        MultiFashion(root=str(tmp_path), **(SIZES | options))


def test_a_validation_pool_of_one_class_is_refused(gz_root):
    with pytest.raises(DatasetError, match="span fewer than two classes"):
        load(gz_root, train_size=1_000_000, val_size=1)


def test_unknown_options_are_refused_by_the_registry(gz_root):
    with pytest.raises(registry.PluginError, match="unknown options \\['augment'\\]"):
        registry.build("dataset", {"name": "multifashion", "augment": {}})


# --------------------------------------------------------------------------------- multimnist
def test_multimnist_is_the_same_construction_on_mnist(tmp_path, gz_root, arrays):
    config = MultiMnistConfig()
    assert config.root.endswith("/mnist") and config.url == MNIST.url
    assert MultiFashionConfig().root.endswith("/fashion_mnist")
    digits = MultiMnist(root=str(gz_root), download=False, verify=False, **SIZES).load()
    assert digits.tasks[0].class_names == tuple("0123456789")
    np.testing.assert_array_equal(digits.train.x, load(gz_root).train.x)
    with pytest.raises(DatasetError) as info:  # MNIST's checksums, MNIST's help
        MultiMnist(root=str(gz_root), download=False, **SIZES).load()
    assert MNIST.files["train_images"].content_md5 in str(info.value)
    with pytest.raises(DatasetError, match="no MNIST .*mnist/ subfolder"):
        MultiMnist(root=str(tmp_path), download=False).load()


# -------------------------------------------------------------------------------- conformance
class TestMultiFashion(DatasetSuite):
    @pytest.fixture
    def dataset_config(self, gz_root):
        location = {"root": str(gz_root), "download": False}
        return {"name": "multifashion", **location, "verify": False, **SIZES}


class TestMultiMnist(DatasetSuite):
    @pytest.fixture
    def dataset_config(self, raw_root):
        location = {"root": str(raw_root), "download": False}
        return {"name": "multimnist", **location, "verify": False, **SIZES}


# ------------------------------------------------------------------------------ a benchmark
def test_the_experiment_composes_and_a_tiny_benchmark_runs(gz_root, tmp_path):
    """The recipe's config, shrunk: two single-task runs and the joint run, on synthetic files."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from mtbench import records
    from mtbench.cli import config_dir
    from mtbench.protocol import Benchmark

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        recipe = hydra_compose("config", overrides=["+experiment=multifashion_mtl"])
        cfg = hydra_compose(
            "config",
            overrides=[
                "+experiment=multifashion_mtl",
                f"dataset.root={gz_root}",
                "dataset.download=false",
                "dataset.verify=false",
                *(f"dataset.{key}={value}" for key, value in SIZES.items()),
                "trainer.epochs=1",
                "trainer.batch_size=32",
                "trainer.precision=float32",
                "trainer.progress=false",
                "trainer.checkpoint_every=0",
                "benchmark.cost_rounds=0",
            ],
        )
    assert recipe.dataset.name == "multifashion" and recipe.backbone.name == "seed_cnn"
    assert list(recipe.benchmark.tasks) == ["left", "right"] and recipe.benchmark.single_task
    Benchmark(cfg, tmp_path / "run").run()
    results = records.load(tmp_path / "run" / "results.json")
    assert results["status"] == "complete", results["error"]
    assert [r["name"] for r in results["runs"]] == ["single:left", "single:right", "joint"]
    joint = {r["name"]: r for r in results["runs"]}["joint"]
    assert 0.0 <= joint["test"]["left"]["accuracy"] <= 1.0


# ------------------------------------------------------------------------------------ real data
def _real_root() -> Path | None:
    for candidate in (
        Path(os.environ["MTBENCH_DATA_DIR"]) / "fashion_mnist"
        if os.environ.get("MTBENCH_DATA_DIR")
        else None,
        REPO.parent / "shared/data/fashion_mnist",
    ):
        if candidate and (candidate / "train-images-idx3-ubyte.gz").is_file():
            return candidate
    return None


@pytest.mark.realdata
def test_real_fashion_mnist_checksums_labels_and_pairs():
    root = _real_root()
    if root is None:
        pytest.skip(
            "real Fashion-MNIST not found: set MTBENCH_DATA_DIR to a folder whose fashion_mnist/ "
            "holds the four *-idx*-ubyte.gz files (or place them at ../shared/data/fashion_mnist/)"
        )
    raw = read_all(root, FASHION_MNIST, verify=True)  # official archives or official content
    assert raw.x_train.shape == (60_000, 28, 28) and raw.x_test.shape == (10_000, 28, 28)
    assert np.bincount(raw.y_train).tolist() == [6000] * 10
    assert np.bincount(raw.y_test).tolist() == [1000] * 10
    assert raw.y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert raw.y_test[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    splits = MultiFashion(
        root=str(root), download=False, train_size=6000, val_size=1000, test_size=2000
    ).load()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6000, 1000, 2000)
    assert splits.train.x.shape[1:] == (36, 36, 1)
    validate(splits, "multifashion")
