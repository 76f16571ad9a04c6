"""The cifar100_tasks dataset: 20 five-way tasks, each image labelled for exactly one of them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import synthetic_cifar
from helpers import run_mtbench

from mtbench.data import DatasetError, validate
from mtbench.inputs import ImageInputs
from mtbench.tasks import MISSING_CLASS
from mtbench_plugins.datasets.cifar100_formats import FINE_TO_COARSE
from mtbench_plugins.datasets.cifar100_tasks import Cifar100Tasks, task_labels


def _labels_matrix(split, names) -> np.ndarray:
    return np.stack([np.asarray(split.y[name]) for name in names], axis=1)


def test_tasks_are_the_superclasses_with_their_five_fine_classes(npz_root):
    splits = Cifar100Tasks(root=str(npz_root), val_size=100).load()
    assert [t.name for t in splits.tasks] == list(synthetic_cifar.COARSE_NAMES)
    assert all(t.num_classes == 5 for t in splits.tasks)
    # aquatic_mammals holds beaver, dolphin, otter, seal and whale (fine labels 4 30 55 72 95)
    assert splits.tasks[0].class_names == ("beaver", "dolphin", "otter", "seal", "whale")
    for t, task in enumerate(splits.tasks):
        members = [synthetic_cifar.FINE_NAMES[f] for f in np.flatnonzero(FINE_TO_COARSE == t)]
        assert task.class_names == tuple(members)
    assert splits.hierarchy is None
    assert isinstance(splits.inputs, ImageInputs)


def test_every_image_is_labelled_for_its_superclass_task_only(npz_root, synthetic_arrays):
    splits = Cifar100Tasks(root=str(npz_root), val_size=100).load()
    names = [t.name for t in splits.tasks]
    fine, coarse = synthetic_arrays["y_test_fine"], synthetic_arrays["y_test_coarse"]
    labels = _labels_matrix(splits.test, names)
    assert labels.shape == (len(fine), 20)
    labelled = labels != MISSING_CLASS
    assert (labelled.sum(axis=1) == 1).all()
    assert (np.argmax(labelled, axis=1) == coarse).all()
    own = labels[np.arange(len(fine)), coarse]
    # the label is the fine class's rank among its superclass's fine classes
    for f in range(100):
        members = np.flatnonzero(FINE_TO_COARSE == FINE_TO_COARSE[f])
        assert (own[fine == f] == int(np.flatnonzero(members == f)[0])).all()
    for split in (splits.train, splits.val):
        assert ((_labels_matrix(split, names) != MISSING_CLASS).sum(axis=1) == 1).all()


def test_labels_are_not_fine_mod_5():
    """Superclasses are not blocks of five consecutive fine labels, so neither are the labels."""
    fine = np.arange(100)
    labels = task_labels(fine)
    own = labels[fine, FINE_TO_COARSE]
    assert not (own == fine % 5).all()
    assert not (FINE_TO_COARSE == fine // 5).all()
    assert sorted(np.bincount(FINE_TO_COARSE)) == [5] * 20


def test_splits_are_stratified_by_fine_class_and_seeded(npz_root):
    names = None
    sets = {}
    for seed in (0, 0, 1):
        splits = Cifar100Tasks(root=str(npz_root), val_size=200, split_seed=seed).load()
        names = [t.name for t in splits.tasks]
        val = _labels_matrix(splits.val, names)
        sets.setdefault(seed, []).append(val)
        # 200 of 800 images, 8 per fine class: 2 per fine class, 10 per task
        assert ((val != MISSING_CLASS).sum(axis=0) == 10).all()
    assert np.array_equal(sets[0][0], sets[0][1])
    assert not np.array_equal(sets[0][0], sets[1][0])


def test_train_limit_keeps_every_task_labelled(npz_root):
    splits = Cifar100Tasks(root=str(npz_root), val_size=100, train_limit=200).load()
    names = [t.name for t in splits.tasks]
    train = _labels_matrix(splits.train, names)
    assert len(train) == 200
    assert ((train != MISSING_CLASS).sum(axis=0) == 10).all()
    kinds = validate(splits, "cifar100_tasks")
    assert list(kinds) == names


def test_bad_options_are_refused_with_the_option_name(npz_root):
    with pytest.raises(DatasetError, match="dataset.val_size"):
        Cifar100Tasks(root=str(npz_root), val_size=0).load()
    with pytest.raises(TypeError, match="fine_tasks"):
        Cifar100Tasks(root=str(npz_root), fine_tasks=3)


@pytest.mark.realdata
def test_real_cifar100_tasks_have_2250_training_images_each(real_root):
    splits = Cifar100Tasks(root=str(real_root), download=False).load()
    names = [t.name for t in splits.tasks]
    train = _labels_matrix(splits.train, names)
    assert ((train != MISSING_CLASS).sum(axis=0) == 2250).all()
    test = _labels_matrix(splits.test, names)
    assert ((test != MISSING_CLASS).sum(axis=0) == 500).all()
    assert names[0] == "aquatic_mammals" and names[-1] == "vehicles_2"


def _benchmark(root: Path, tmp_path: Path, *overrides: str) -> dict:
    result = run_mtbench(
        [
            "+experiment=cifar100_tasks_mtl",
            f"dataset.root={root}",
            "dataset.download=false",
            "dataset.val_size=200",
            "trainer.epochs=1",
            "trainer.batch_size=16",
            "trainer.precision=float32",
            "trainer.progress=false",
            *overrides,
            f"hydra.run.dir={tmp_path}/run",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / "run" / "results.json").read_text())


def test_a_gradient_method_trains_20_tasks_with_missing_labels(npz_root, tmp_path):
    """The joint model with 20 heads, combined by PCGrad, on batches that miss some tasks."""
    results = _benchmark(npz_root, tmp_path, "weighting=pcgrad", "benchmark.single_task=false")
    assert len(results["tasks"]) == 20
    for record in results["tasks"].values():
        assert record["labelled"]["train"] == 30  # 600 images, one task each
        assert record["labelled"]["val"] == 10
    (joint,) = results["runs"]
    assert len(joint["test"]) == 20
    assert all(np.isfinite(m["accuracy"]) for m in joint["test"].values())


@pytest.mark.slow
def test_the_whole_benchmark_compares_20_single_task_runs_with_the_joint_one(npz_root, tmp_path):
    results = _benchmark(npz_root, tmp_path)
    assert len(results["runs"]) == 21
    assert len(results["comparison"]["tasks"]) == 20
