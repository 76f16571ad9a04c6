"""Same initialisation: a task's head, and the backbone, start from the same weights in the
single-task run of that task and in the joint run, whatever the order of the tasks.

Runs over every registered head plugin. A head's variables belong to task ``t`` when a part of
their path is ``t`` or starts with ``t_`` (the reference heads name their layers so); a head
that derives a task's prediction from another task's (``hierarchical``, joint run) has no
variables of its own for that task, and the check covers those that it has.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import image_model

import mtbench
from mtbench.data import TaskHierarchy
from mtbench.model import MultiTaskModel, task_seed
from mtbench.tasks import TaskSpec

SPECS = {"fine": TaskSpec("fine", 12), "coarse": TaskSpec("coarse", 4)}
HIERARCHY = TaskHierarchy("fine", "coarse", np.array([2, 0, 3, 1, 0, 2, 1, 3, 3, 0, 1, 2]))
BACKBONE = {"name": "seed_cnn"}
# Settings that give every head its optional parts (hidden layers, dropout, the parent's own
# classifier); a plugin not listed is tested with its defaults.
HEAD_OPTIONS: dict[str, list[dict]] = {
    "mlp": [{"hidden_units": [16, 8], "dropout": 0.5}],
    "hierarchical": [{"mix": 0.0}, {"mix": 0.5}],
}
RUNS = [("fine",), ("coarse",), ("fine", "coarse"), ("coarse", "fine")]


def _heads() -> list:
    return [
        pytest.param(
            {"name": name, **options},
            id="-".join([name, *(f"{k}{v}".replace(" ", "") for k, v in options.items())]),
        )
        for name in mtbench.list_plugins("head")
        for options in HEAD_OPTIONS.get(name, [{}])
    ]


def _build(head: dict, tasks: tuple[str, ...], seed: int = 0) -> MultiTaskModel:
    return image_model(BACKBONE, head, [SPECS[t] for t in tasks], hierarchy=HIERARCHY, seed=seed)


def _relative(path: str, layer_name: str) -> str:
    """A variable's path below the layer ``layer_name`` (Keras numbers repeated layer names)."""
    parts = path.split("/")
    return "/".join(parts[parts.index(layer_name) + 1 :])


def _task_weights(model: MultiTaskModel, task: str) -> dict[str, np.ndarray]:
    weights = {}
    for variable in model.heads.weights:
        path = _relative(variable.path, model.heads.name)
        if any(p == task or p.startswith(f"{task}_") for p in path.split("/")):
            weights[path] = variable.numpy()
    return weights


@pytest.fixture(scope="module", params=_heads())
def models(request) -> dict[tuple[str, ...], MultiTaskModel]:
    return {tasks: _build(request.param, tasks) for tasks in RUNS}


def test_the_backbone_is_the_same_whichever_tasks_the_model_predicts(models):
    reference = [v.numpy() for v in models[("fine",)].backbone.weights]
    for tasks, model in models.items():
        weights = [v.numpy() for v in model.backbone.weights]
        assert len(weights) == len(reference)
        for ours, theirs in zip(weights, reference, strict=True):
            np.testing.assert_array_equal(ours, theirs, err_msg=str(tasks))


@pytest.mark.parametrize("joint", [("fine", "coarse"), ("coarse", "fine")], ids="-".join)
@pytest.mark.parametrize("task", ["fine", "coarse"])
def test_a_task_head_starts_the_same_in_its_single_task_and_the_joint_model(models, task, joint):
    single = _task_weights(models[(task,)], task)
    together = _task_weights(models[joint], task)
    assert single, f"the single-task model for '{task}' has no head variables named after it"
    named = set().union(*(_task_weights(models[joint], t) for t in SPECS))
    heads = models[joint].heads
    unnamed = {_relative(v.path, heads.name) for v in heads.weights} - named
    assert not unnamed, f"head variables that belong to no task: {sorted(unnamed)}"
    assert set(together) <= set(single), (sorted(together), sorted(single))
    for name, value in together.items():
        np.testing.assert_array_equal(value, single[name], err_msg=f"{task}: {name}")


def test_the_child_task_computes_the_same_in_training_mode_dropout_included(models):
    """Every head predicts the child task (``fine``) from its own layers: with the same weights
    and the same dropout masks, one training-mode call gives the same logits."""
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)), tf.uint8)
    single = models[("fine",)](images, training=True)["fine"].numpy()
    for joint in [("fine", "coarse"), ("coarse", "fine")]:
        together = models[joint](images, training=True)["fine"].numpy()
        np.testing.assert_array_equal(together, single, err_msg=str(joint))


@pytest.mark.parametrize("head", _heads())
def test_the_seed_still_chooses_the_head_weights(head):
    a, b = (_task_weights(_build(head, ("fine",), seed=s), "fine") for s in (0, 1))
    assert a.keys() == b.keys()
    assert all(not np.array_equal(a[name], b[name]) for name in a if "kernel" in name)


def test_task_seeds_depend_on_the_seed_the_task_and_the_part_only():
    assert task_seed(0, "fine", "logits") == task_seed(0, "fine", "logits")
    seeds = {task_seed(s, t, p) for s in (0, 1) for t in ("fine", "coarse") for p in ("a", "b")}
    assert len(seeds) == 8 and all(0 <= s < 2**31 for s in seeds)
    assert task_seed(None, "fine", "logits") is None
