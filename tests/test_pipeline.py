"""The input pipeline: seeded epoch order, resumable batches that carry (labels, present),
augmentation, channel statistics."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mtbench.data import Split
from mtbench.inputs import Augmentation, ImageInputs, Inputs, channel_statistics
from mtbench.pipeline import EpochBatches
from mtbench.tasks import MISSING_CLASS, TaskSpec, task_kind


def _split(n: int = 50) -> Split:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return Split(x, {"a": np.arange(n), "b": np.arange(n) % 3})


def _kinds(*names: str) -> dict:
    specs = {"a": TaskSpec("a", 50), "b": TaskSpec("b", 3)}
    return {n: task_kind(specs[n]) for n in names}


def _collect(dataset) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for x, y in dataset:
        images.append(x.numpy())
        labels.append(y["a"][0].numpy())
    return np.concatenate(images), np.concatenate(labels)


def test_each_epoch_is_a_seeded_permutation_and_batches_keep_labels_aligned():
    split = _split()
    batches = EpochBatches(split, _kinds("a", "b"), batch_size=16, seed=3)
    assert batches.steps_per_epoch == 4 and batches.tasks == ("a", "b")
    x1, y1 = _collect(batches.dataset(epoch=1))
    x2, y2 = _collect(batches.dataset(epoch=2))
    assert sorted(y1) == list(range(50)) and not np.array_equal(y1, y2)
    np.testing.assert_array_equal(x1, split.x[y1])  # image i travels with label i
    again = EpochBatches(split, _kinds("a", "b"), batch_size=16, seed=3)
    np.testing.assert_array_equal(_collect(again.dataset(epoch=1))[1], y1)
    other = EpochBatches(split, _kinds("a", "b"), batch_size=16, seed=4)
    assert not np.array_equal(_collect(other.dataset(epoch=1))[1], y1)


def test_batches_carry_labels_and_which_are_present_with_missing_labels_marked():
    split = _split()
    # task b: every third example unlabelled (the classification kind's sentinel)
    split.y["b"] = np.where(np.arange(50) % 3 == 0, MISSING_CLASS, split.y["b"])
    batches = EpochBatches(split, _kinds("a", "b"), batch_size=16, seed=3)
    seen = []
    for _, y in batches.dataset(epoch=1):
        assert set(y) == {"a", "b"}
        (a, a_present), (b, b_present) = y["a"], y["b"]
        assert a.dtype == tf.int64 and a_present.dtype == tf.bool
        index = a.numpy()  # task a's label is the example's index
        assert a_present.numpy().all()
        np.testing.assert_array_equal(b_present.numpy(), index % 3 != 0)
        labelled = b_present.numpy()
        np.testing.assert_array_equal(b.numpy()[labelled], split.y["b"][index[labelled]])
        # a missing label reaches the loss as a valid class index (a filler), never as -1
        assert (b.numpy() >= 0).all() and (b.numpy() < 3).all()
        seen.extend(index)
    assert sorted(seen) == list(range(50))


def test_an_epoch_can_restart_at_any_batch_with_identical_augmentation():
    augment = Augmentation(crop_padding=2, horizontal_flip=True, cutout=3)
    inputs = ImageInputs(augmentation=augment)
    batches = EpochBatches(_split(), _kinds("a"), batch_size=16, seed=1, inputs=inputs)
    full_x, full_y = _collect(batches.dataset(epoch=2))
    tail_x, tail_y = _collect(batches.dataset(epoch=2, first_batch=2))
    np.testing.assert_array_equal(tail_y, full_y[32:])
    np.testing.assert_array_equal(tail_x, full_x[32:])
    assert not np.array_equal(full_x, _split().x[full_y])  # augmentation changed the images


def test_random_crop_shifts_the_padded_image():
    image = np.arange(8 * 8, dtype=np.uint8).reshape(1, 8, 8, 1).repeat(64, axis=0)
    out = Augmentation(crop_padding=2)(tf.constant(image), tf.constant([1, 2])).numpy()
    assert out.shape == image.shape
    padded = np.pad(image[0, :, :, 0], 2)
    windows = {padded[r : r + 8, c : c + 8].tobytes() for r in range(5) for c in range(5)}
    assert all(o[:, :, 0].tobytes() in windows for o in out)
    assert len({o.tobytes() for o in out}) > 5  # offsets differ between images


def test_flip_and_cutout():
    image = np.arange(8 * 8, dtype=np.uint8).reshape(1, 8, 8, 1).repeat(64, axis=0) + 1
    flipped = Augmentation(horizontal_flip=True)(tf.constant(image), tf.constant([0, 1])).numpy()
    same = [np.array_equal(f, image[0]) for f in flipped]
    mirrored = [np.array_equal(f, image[0][:, ::-1]) for f in flipped]
    assert all(s or m for s, m in zip(same, mirrored, strict=True)) and 10 < sum(same) < 54
    cut = Augmentation(cutout=4)(tf.constant(image), tf.constant([0, 2])).numpy()
    zeros = (cut == 0).reshape(64, -1).sum(axis=1)
    assert zeros.max() == 16 and zeros.min() >= 4  # a 4x4 square, clipped at the borders


def test_channel_statistics_match_numpy():
    x = np.random.default_rng(1).integers(0, 256, (20, 4, 4, 3), dtype=np.uint8)
    mean, std = channel_statistics(x)
    scaled = x.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(mean, scaled.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(std, scaled.std(axis=0), rtol=1e-8)
    # another divisor: the statistics are in the divided units
    mean, std = channel_statistics(x, divisor=1.0)
    np.testing.assert_allclose(mean, x.reshape(-1, 3).mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(std, x.reshape(-1, 3).std(axis=0), rtol=1e-8)


@pytest.mark.parametrize("padding", [0, 4])
def test_augmentation_disabled_is_identity(padding):
    augment = Augmentation(crop_padding=padding)
    assert augment.enabled == bool(padding)
    assert ImageInputs(augmentation=augment).augments == bool(padding)


@pytest.mark.parametrize(
    "inputs", [None, Inputs(), ImageInputs()], ids=["none", "Inputs", "ImageInputs-plain"]
)
def test_without_augmentation_batches_hold_the_inputs_unchanged(inputs):
    split = _split()
    batches = EpochBatches(split, _kinds("a"), batch_size=16, seed=1, inputs=inputs)
    x, y = _collect(batches.dataset(epoch=1))
    np.testing.assert_array_equal(x, split.x[y])
    assert x.dtype == np.uint8


def test_inputs_may_be_a_dict_of_arrays():
    """Inputs such as a padded molecule's atoms and coordinates: each array is gathered with
    the same indices and keeps its dtype."""
    n = 20
    atoms = np.arange(n, dtype=np.int32)[:, None].repeat(4, axis=1)
    x = {"atoms": atoms, "coords": atoms[..., None].repeat(3, axis=2).astype(np.float64)}
    split = Split(x, {"a": np.arange(n)})
    kinds = {"a": task_kind(TaskSpec("a", n))}
    for batch, y in EpochBatches(split, kinds, batch_size=8, seed=0).dataset(epoch=1):
        index = y["a"][0].numpy()
        assert batch["atoms"].dtype == tf.int32 and batch["coords"].dtype == tf.float64
        np.testing.assert_array_equal(batch["atoms"].numpy()[:, 0], index)
        np.testing.assert_array_equal(batch["coords"].numpy()[:, 0, 0], index)


def test_epoch_datasets_run_without_the_autotuner():
    """Deleting an autotuned iterator waits for its tuning thread (10-17 s after an epoch on
    2 cores, measured): epoch pipelines use fixed parallelism instead, and stay in order."""
    dataset = EpochBatches(_split(), _kinds("a"), batch_size=16, seed=1).dataset(epoch=1)
    assert dataset.options().autotune.enabled is False
    assert dataset.options().deterministic is not False
