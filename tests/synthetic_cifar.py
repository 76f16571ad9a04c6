"""Small synthetic CIFAR-100 in the official formats, for tests that must not need the real data.

Each fine class has its own low-frequency colour pattern plus noise, so a model can learn it; the
labels follow the real fine-to-coarse map (which is not ``fine // 5``).
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from mtbench_plugins.datasets.cifar100_formats import FINE_TO_COARSE

# The official class names, in label order (the official meta file holds the same lists).
FINE_NAMES = (
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
)
COARSE_NAMES = (
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
)


def make_arrays(per_class_train: int, per_class_test: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, size=(100, 4, 4, 3)).repeat(8, axis=1).repeat(8, axis=2)

    def images(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        fine = np.tile(np.arange(100), per_class)
        rng.shuffle(fine)
        noise = rng.normal(0, 40, size=(len(fine), 32, 32, 3))
        x = np.clip(templates[fine] + noise, 0, 255).astype(np.uint8)
        return x, fine.astype(np.int64)

    x_train, y_train = images(per_class_train)
    x_test, y_test = images(per_class_test)
    return {
        "x_train": x_train,
        "y_train_fine": y_train,
        "y_train_coarse": FINE_TO_COARSE[y_train],
        "x_test": x_test,
        "y_test_fine": y_test,
        "y_test_coarse": FINE_TO_COARSE[y_test],
        "fine_label_names": np.array(FINE_NAMES),
        "coarse_label_names": np.array(COARSE_NAMES),
        "fine_to_coarse": FINE_TO_COARSE.copy(),
    }


def _batch_pickle(x: np.ndarray, fine: np.ndarray, coarse: np.ndarray, label: bytes) -> bytes:
    rows = x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # channel-major, as the official files
    batch = {
        b"filenames": [f"img_{i}.png".encode() for i in range(len(x))],
        b"batch_label": label,
        b"fine_labels": fine.tolist(),
        b"coarse_labels": coarse.tolist(),
        b"data": rows,
    }
    return pickle.dumps(batch, protocol=2)


def official_files(arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    """The three pickles of ``cifar-100-python/``, keyed by file name."""
    meta = {
        b"fine_label_names": [n.encode() for n in FINE_NAMES],
        b"coarse_label_names": [n.encode() for n in COARSE_NAMES],
    }
    return {
        "train": _batch_pickle(
            arrays["x_train"], arrays["y_train_fine"], arrays["y_train_coarse"],
            b"training batch 1 of 1",
        ),
        "test": _batch_pickle(
            arrays["x_test"], arrays["y_test_fine"], arrays["y_test_coarse"],
            b"testing batch 1 of 1",
        ),
        "meta": pickle.dumps(meta, protocol=2),
    }  # fmt: skip


def write_folder(root: Path, arrays: dict[str, np.ndarray]) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in official_files(arrays).items():
        (folder / name).write_bytes(content)
    return folder


def write_archive(root: Path, arrays: dict[str, np.ndarray]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        directory = tarfile.TarInfo("cifar-100-python")
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o755
        tar.addfile(directory)
        for name, content in official_files(arrays).items():
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return archive


def write_npz(root: Path, arrays: dict[str, np.ndarray]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "cifar100.npz"
    np.savez(path, **arrays)
    return path
