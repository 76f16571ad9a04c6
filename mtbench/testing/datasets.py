"""Conformance tests for ``dataset`` plugins: :class:`DatasetSuite`.

A dataset that needs files names its config in a fixture, so the files can come from another
fixture (a temporary folder of small synthetic data)::

    import pytest
    from mtbench.testing import DatasetSuite

    class TestMine(DatasetSuite):
        @pytest.fixture
        def dataset_config(self, tmp_path):
            write_tiny_files(tmp_path)
            return {"name": "mine", "root": str(tmp_path)}

A dataset without files sets ``config = {"name": "mine", ...}`` instead. Every test loads the
dataset afresh (keep the test data small).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pytest

from mtbench.data import DatasetSplits, Split, validate

__all__ = ["DatasetSuite"]

SPLITS = ("train", "val", "test")


def _examples(split: Split) -> list[bytes]:
    """A digest of each example's inputs (every array of a dict, in key order)."""
    arrays = (
        [np.asarray(split.x[k]) for k in sorted(split.x)]
        if isinstance(split.x, Mapping)
        else [np.asarray(split.x)]
    )
    digests = []
    for i in range(len(split)):
        h = hashlib.blake2b(digest_size=16)
        for array in arrays:
            h.update(np.ascontiguousarray(array[i]).tobytes())
        digests.append(h.digest())
    return digests


def _arrays(split: Split) -> dict[str, np.ndarray]:
    x = split.x if isinstance(split.x, Mapping) else {"": split.x}
    out = {f"x{k}": np.asarray(v) for k, v in x.items()}
    out |= {f"y/{k}": np.asarray(v) for k, v in split.y.items()}
    out |= {f"labelled/{k}": np.asarray(v) for k, v in split.labelled.items()}
    return out


class DatasetSuite:
    """Loads, validates, keeps its splits apart and loads the same twice; subclass it with
    ``config`` or a ``dataset_config`` fixture.

    Class attributes:
        config: ``{"name": <registered dataset>, **options}``.
        disjoint_splits: Whether no example's inputs occur in two splits (checked by content;
            ``False`` for a dataset whose splits share inputs by design, e.g. one input with
            different tasks per split).
    """

    config: ClassVar[Mapping[str, Any]] = {}
    disjoint_splits: ClassVar[bool] = True

    @pytest.fixture
    def dataset_config(self) -> dict[str, Any]:
        """The dataset's config (override as a fixture when it needs files)."""
        if "name" not in self.config:
            pytest.fail(
                f"{type(self).__name__}: set config = {{'name': <registered dataset>, ...}} or "
                "override the dataset_config fixture"
            )
        return dict(self.config)

    def load(self, config: Mapping[str, Any]) -> DatasetSplits:
        from mtbench import registry

        dataset = registry.build("dataset", dict(config))
        assert callable(getattr(dataset, "load", None)), (
            f"dataset '{config['name']}' built a {type(dataset).__name__} without load()"
        )
        return dataset.load()

    # -------------------------------------------------------------------------------- tests
    def test_load_returns_splits_that_validate(self, dataset_config: dict) -> None:
        data = self.load(dataset_config)
        assert isinstance(data, DatasetSplits), f"load() returned a {type(data).__name__}"
        kinds = validate(data, str(dataset_config["name"]))
        assert list(kinds) == [t.name for t in data.tasks]

    def test_every_task_has_labels_in_every_split(self, dataset_config: dict) -> None:
        data = self.load(dataset_config)
        names = sorted(t.name for t in data.tasks)
        for split_name in SPLITS:
            split = getattr(data, split_name)
            assert sorted(split.y) == names, (
                f"the {split_name} split has labels for {sorted(split.y)}; the dataset declares "
                f"the tasks {names}"
            )
            assert set(split.labelled) <= set(names), f"masks of unknown tasks in {split_name}"
            for task, labels in split.y.items():
                assert len(labels) == len(split), f"{split_name}: {task} has {len(labels)} labels"

    def test_inputs_have_one_layout_in_every_split(self, dataset_config: dict) -> None:
        data = self.load(dataset_config)

        def layout(split: Split) -> Any:
            x = split.x if isinstance(split.x, Mapping) else {"": split.x}
            return {k: (np.asarray(v).shape[1:], np.asarray(v).dtype.name) for k, v in x.items()}

        layouts = {name: layout(getattr(data, name)) for name in SPLITS}
        assert layouts["train"] == layouts["val"] == layouts["test"], layouts
        assert len(data.train) > 0 and len(data.val) > 0

    def test_splits_share_no_example(self, dataset_config: dict) -> None:
        if not self.disjoint_splits:
            pytest.skip("disjoint_splits = False: the splits share inputs by design")
        data = self.load(dataset_config)
        seen = {name: set(_examples(getattr(data, name))) for name in SPLITS}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            shared = len(seen[a] & seen[b])
            assert not shared, f"{shared} examples of the {b} split are also in the {a} split"

    def test_loading_twice_gives_the_same_data(self, dataset_config: dict) -> None:
        first, second = self.load(dataset_config), self.load(dataset_config)
        assert first.tasks == second.tasks
        for name in SPLITS:
            a, b = _arrays(getattr(first, name)), _arrays(getattr(second, name))
            assert sorted(a) == sorted(b)
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")
        assert (first.hierarchy is None) == (second.hierarchy is None)
        if first.hierarchy is not None:
            np.testing.assert_array_equal(first.hierarchy.parent_of, second.hierarchy.parent_of)

    def test_hierarchy_agrees_with_the_labels(self, dataset_config: dict) -> None:
        data = self.load(dataset_config)
        hierarchy = data.hierarchy
        if hierarchy is None:
            pytest.skip("the dataset declares no hierarchy")
        names = {t.name for t in data.tasks}
        assert {hierarchy.child, hierarchy.parent} <= names, hierarchy
        kinds = validate(data, str(dataset_config["name"]))
        parent_of = np.asarray(hierarchy.parent_of)
        assert parent_of.shape == (data.task(hierarchy.child).num_classes,)
        for split_name in SPLITS:
            split = getattr(data, split_name)
            child, parent = split.y[hierarchy.child], split.y[hierarchy.parent]
            both = kinds[hierarchy.child].labelled(child) & kinds[hierarchy.parent].labelled(parent)
            np.testing.assert_array_equal(
                parent_of[child[both]], parent[both], err_msg=f"{split_name} split"
            )

    def test_inputs_declaration_applies_to_a_batch(self, dataset_config: dict) -> None:
        """The declared :class:`mtbench.inputs.Inputs` (if any) builds its layer from the
        training split and maps a batch to finite floats; augmentation and evaluation views
        keep the batch's layout."""
        import tensorflow as tf

        from mtbench.inputs import Inputs

        data = self.load(dataset_config)
        if data.inputs is None:
            pytest.skip("inputs=None: inputs reach the backbone as they are")
        assert isinstance(data.inputs, Inputs), f"inputs is a {type(data.inputs).__name__}"
        x = data.train.x
        batch = {k: v[:4] for k, v in x.items()} if isinstance(x, Mapping) else x[:4]
        tensors = tf.nest.map_structure(tf.constant, batch)
        layer = data.inputs.layer(x)
        if layer is not None:
            for y in tf.nest.flatten(layer(tensors)):
                assert y.dtype.is_floating and np.isfinite(np.asarray(tf.cast(y, tf.float64))).all()
        shapes = tf.nest.map_structure(lambda t: tuple(t.shape), tensors)
        augmented = data.inputs.augment(tensors, tf.constant([0, 1]))
        assert tf.nest.map_structure(lambda t: tuple(t.shape), augmented) == shapes
        views = data.inputs.views(tensors)
        assert views, "views() returned no view"
        for view in views:
            assert tf.nest.map_structure(lambda t: tuple(t.shape), view) == shapes
