"""Sharing architectures: every registered architecture trains with every registered weighting
method (or refuses it before training, saying why), declares exactly the variables that several
tasks' losses reach as shared, reloads through Keras and through the trainer's checkpoints with
identical outputs; hard sharing is the model built the old way; the reference backbones' stages
compose to the backbone; bad options, a backbone without stages and a head that links tasks are
refused with the option and the allowed values. Every architecture works on the molecule
backbones (whose stages pass a dict state), checked with the conformance suite.

The matrix of architectures x weighting methods runs on the tiniest model (an MLP of two 8-unit
stages on 6 features, two tasks, two steps): a representative method per code path of the
trainer in the default run, every method with ``-m slow``.
"""

from __future__ import annotations

import json
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import run_mtbench

from mtbench import checkpoint, records, registry
from mtbench.architecture import (
    ArchitectureError,
    ComposedNetwork,
    ModelParts,
    check_config,
    check_weighting,
    parameter_counts,
)
from mtbench.config import ConfigError, Optimizer, TrainerConfig
from mtbench.data import Split, TaskHierarchy
from mtbench.inputs import ImagePreprocessing
from mtbench.model import MultiTaskModel, MultiTaskNetwork, build_model
from mtbench.tasks import TaskSpec, task_kinds
from mtbench.testing import ArchitectureSuite, ArraySpec
from mtbench.trainer import Trainer
from mtbench.weighting import GradientWeighting
from mtbench_plugins.architectures import options
from mtbench_plugins.architectures.cgc import CGC
from mtbench_plugins.architectures.cross_stitch import CrossStitch
from mtbench_plugins.architectures.dselect_k import DSelectK, smooth_step
from mtbench_plugins.architectures.hard_sharing import hard_sharing
from mtbench_plugins.architectures.mmoe import MMoE
from mtbench_plugins.architectures.mtan import MTAN
from mtbench_plugins.architectures.ple import PLE
from mtbench_plugins.datasets.qm9 import MoleculePreprocessing

# The reference architectures as pyproject.toml declares them ("architecture.<name>" entry
# points); registered here as well so that these tests also run in a checkout installed before
# they were declared (the same factory under both is one plugin, not a clash).
REFERENCE = {
    "hard_sharing": (hard_sharing, None),
    "mmoe": (MMoE, options.MMoEConfig),
    "cgc": (CGC, options.CGCConfig),
    "ple": (PLE, options.PLEConfig),
    "dselect_k": (DSelectK, options.DSelectKConfig),
    "cross_stitch": (CrossStitch, options.CrossStitchConfig),
    "mtan": (MTAN, None),
}
for _name, (_factory, _config) in REFERENCE.items():
    if _name not in registry.names("architecture"):
        registry.register("architecture", _name, config=_config)(_factory)

ARCHITECTURES = registry.names("architecture")
WEIGHTINGS = registry.names("weighting")
#: Small options that still exercise each architecture's structure (a shared bottom, several
#: levels, a number of experts that is not a power of two).
SMALL = {
    "mmoe": {"num_experts": 2, "expert_stages": 1},
    "cgc": {"shared_experts": 1, "task_experts": 1, "expert_stages": 1},
    "ple": {"shared_experts": 1, "task_experts": 1, "num_levels": 2},
    "dselect_k": {"num_experts": 3, "k": 2, "expert_stages": 1, "entropy_weight": 0.1},
}
#: One method per code path of the trainer, in the default run; every method with -m slow.
DEFAULT_METHODS = {
    "ew",  # loss level
    "uw",  # loss level, trainable weighting variables
    "famo",  # losses after the update
    "pcgrad",  # per-task gradients of the shared parameters
    "graddrop",  # gradients of the features: refused where tasks read their own representation
    "nashmtl",  # steps without per-task gradients
    "modo",  # several batches per update
}
TINY_BACKBONE = {"name": "mlp", "hidden_units": [8, 8]}
TINY_TASKS = (TaskSpec("a", 3), TaskSpec("b", 2))
CONV_BACKBONE = {"name": "resnet", "depth": 20, "width": 2}  # 4 stages, maps then a vector
THREE_TASKS = (TaskSpec("a", 4), TaskSpec("b", 3), TaskSpec("c", 2))


def architecture(name: str, **extra) -> dict:
    return {"name": name, **SMALL.get(name, {}), **extra}


def tiny_split(size: int, seed: int, tasks=TINY_TASKS) -> Split:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(size, 6)).astype(np.float32)
    return Split(x, {t.name: rng.integers(0, t.num_classes, size) for t in tasks})


def tiny_model(name: str, seed: int = 0, **extra) -> MultiTaskNetwork:
    return build_model(
        TINY_BACKBONE, {"name": "dense"}, TINY_TASKS, np.zeros((1, 6), np.float32),
        architecture=architecture(name, **extra), seed=seed,
    )  # fmt: skip


def image_model(name: str, backbone=CONV_BACKBONE, tasks=THREE_TASKS, **extra):
    return build_model(
        backbone, {"name": "dense"}, tasks, np.zeros((1, 8, 8, 3), np.uint8),
        architecture=architecture(name, **extra), seed=0,
        preprocessing=ImagePreprocessing(255.0, name="preprocessing"),
    )  # fmt: skip


def images(count: int = 4, seed: int = 0) -> tf.Tensor:
    rng = np.random.default_rng(seed)
    return tf.constant(rng.integers(0, 256, (count, 8, 8, 3)), tf.uint8)


def _needs_one_representation(weighting) -> bool:
    return isinstance(weighting, GradientWeighting) and weighting.gradient_of == "features"


# ------------------------------------------------------------------------------------ matrix
def _matrix() -> list:
    return [
        pytest.param(a, w, id=f"{a}-{w}", marks=() if w in DEFAULT_METHODS else (pytest.mark.slow,))
        for a in ARCHITECTURES
        for w in WEIGHTINGS
    ]


@pytest.mark.parametrize("name,method", _matrix())
def test_every_architecture_trains_with_every_weighting_or_refuses_it(name, method):
    model = tiny_model(name)
    weighting = registry.build("weighting", {"name": method})
    if _needs_one_representation(weighting) and not model.shared_representation:
        with pytest.raises(ArchitectureError, match=rf"weighting={method}.*architecture={name}"):
            check_weighting(model, weighting, architecture=name, weighting_name=method)
        return
    check_weighting(model, weighting, architecture=name, weighting_name=method)
    shared, owned = model.shared_variables, model.task_variables
    assert len({id(v) for v in shared + owned}) == len(shared) + len(owned)
    assert {id(v) for v in shared + owned} == {id(v) for v in model.trainable_variables}
    initial = [v.numpy().copy() for v in model.trainable_variables]
    config = TrainerConfig(
        optimizer=Optimizer.sgd, learning_rate=0.05, batch_size=8, epochs=1, progress=False,
        checkpoint_every=0,
    )  # fmt: skip
    trainer = Trainer(config, model, weighting, task_kinds(TINY_TASKS), precision="float32", seed=0)
    # the trainer trains exactly the declared variables: the shared ones with the method's
    # combination, the others with their own task's loss
    assert [id(v) for v in trainer.step.updated_variables()] == [
        id(v)
        for v in (
            model.trainable_variables + weighting.trainable_variables
            if weighting.level == "loss"
            else shared + owned
        )
    ]
    result = trainer.fit(tiny_split(16 * weighting.samples_per_step, 1), tiny_split(8, 2))
    for record in result.history:
        assert all(np.isfinite(v) for v in record.train_loss.values()), record.train_loss
    assert all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)
    assert any(
        not np.array_equal(a, v.numpy())
        for a, v in zip(initial, model.trainable_variables, strict=True)
    )


# --------------------------------------------------------------------------------- declaration
def _reached(model: MultiTaskNetwork, x) -> dict[int, set[str]]:
    """Which tasks' outputs reach each trainable variable (a gradient that is not None)."""
    variables = model.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        outputs = model(x, training=True)
        sums = {t: tf.reduce_sum(o) for t, o in outputs.items()}
    reached: dict[int, set[str]] = {id(v): set() for v in variables}
    for task, total in sums.items():
        for v, g in zip(variables, tape.gradient(total, variables), strict=True):
            if g is not None:
                reached[id(v)].add(task)
    return reached


ARCHITECTURE_CASES = [pytest.param(a, {}, id=a) for a in ARCHITECTURES] + [
    pytest.param("ple", {"num_levels": 3, "expert_stages": 3}, id="ple-three-levels"),
    pytest.param("mmoe", {"expert_stages": None}, id="mmoe-whole-backbones"),
    pytest.param("cgc", {"expert_stages": None}, id="cgc-whole-backbones"),
]


@pytest.mark.parametrize("name,extra", ARCHITECTURE_CASES)
def test_shared_variables_are_exactly_those_several_tasks_reach(name, extra):
    model = image_model(name, **extra)
    reached = _reached(model, images())
    shared = {id(v) for v in model.shared_variables}
    names = {id(v): v.path for v in model.trainable_variables}
    for key, tasks in reached.items():
        if key in shared:
            assert len(tasks) >= 2, f"{names[key]} is declared shared but only {tasks} reach it"
        else:
            assert len(tasks) == 1, f"{names[key]} is a task variable that {tasks} reach"
    if isinstance(model, ComposedNetwork):
        for task in model.parts.task_names:
            for v in model.variables_of_task(task):
                assert reached[id(v)] == {task}, v.path


GRADIENT_CASES = [pytest.param(a, CONV_BACKBONE, id=a) for a in ARCHITECTURES] + [
    pytest.param("mtan", {"name": "seed_cnn"}, id="mtan-seed_cnn"),  # a bilinear resize
]


@pytest.mark.parametrize("name,backbone", GRADIENT_CASES)
def test_per_task_gradients_of_the_shared_variables_have_static_shapes(name, backbone):
    """Gradient methods stack the per-task gradients of the shared variables, traced with an
    unknown batch size: each gradient must keep its variable's static shape."""
    model = image_model(name, backbone)
    shared = model.shared_variables

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.uint8)])
    def gradients(x):
        with tf.GradientTape() as tape:
            total = tf.add_n([tf.reduce_sum(o) for o in model(x, training=True).values()])
        return tape.gradient(total, shared)

    for variable, gradient in zip(
        shared, gradients.get_concrete_function().structured_outputs, strict=True
    ):
        assert gradient is not None and gradient.shape == variable.shape, variable.path


def test_parameter_counts_split_shared_and_per_task():
    model = tiny_model("mmoe")
    counts = parameter_counts(model, tf.zeros([1, 6]))
    size = lambda variables: sum(int(np.prod(v.shape)) for v in variables)  # noqa: E731
    assert counts["shared"] == size(model.shared_variables) > 0
    assert counts["per_task"] == {t: size(model.variables_of_task(t)) for t in ("a", "b")}
    assert counts["task_specific"] == sum(counts["per_task"].values())
    assert counts["task_specific_unattributed"] == 0
    assert counts["trainable"] == counts["shared"] + counts["task_specific"]
    plain = build_model(TINY_BACKBONE, {"name": "dense"}, TINY_TASKS, np.zeros((1, 6), np.float32))
    counts = parameter_counts(plain, tf.zeros([1, 6]))
    assert counts["shared"] == plain.backbone.count_params() == 6 * 8 + 8 + 8 * 8 + 8
    assert counts["per_task"] == {"a": 8 * 3 + 3, "b": 8 * 2 + 2}
    # a head that predicts one task from another's classifier: its variables belong to both
    fine, coarse = TaskSpec("fine", 4), TaskSpec("coarse", 2)
    linked = build_model(
        TINY_BACKBONE, {"name": "hierarchical"}, [fine, coarse], np.zeros((1, 6), np.float32),
        hierarchy=TaskHierarchy("fine", "coarse", np.array([0, 0, 1, 1])),
    )  # fmt: skip
    counts = parameter_counts(linked, tf.zeros([1, 6]))
    assert counts["per_task"] == {"fine": 0, "coarse": 0}
    assert counts["task_specific_unattributed"] == 8 * 4 + 4


# ------------------------------------------------------------------------------ serialisation
SAVE_CASES = [pytest.param(a, CONV_BACKBONE, id=a) for a in ARCHITECTURES] + [
    pytest.param("mtan", {"name": "seed_cnn"}, id="mtan-seed_cnn"),  # a bilinear resize
]


@pytest.mark.parametrize("name,backbone", SAVE_CASES)
def test_save_and_reload_through_keras_give_identical_outputs(name, backbone, tmp_path):
    model = image_model(name, backbone)
    x = images()
    before = model(x, training=False)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    after = restored(x, training=False)
    for task in before:
        np.testing.assert_array_equal(before[task].numpy(), after[task].numpy())
    assert [v.shape for v in restored.shared_variables] == [v.shape for v in model.shared_variables]
    assert [v.shape for v in restored.task_variables] == [v.shape for v in model.task_variables]


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_the_trainers_checkpoint_restores_a_model_built_again(name, tmp_path):
    """What resuming does: the same config builds the same variables in the same order."""
    model = tiny_model(name, seed=0)
    checkpoint.save(tmp_path / "last.npz", {"model": model.variables}, {})
    again = tiny_model(name, seed=1)
    x = tf.constant(tiny_split(4, 3).x)
    assert any(
        not np.array_equal(a.numpy(), b.numpy())
        for a, b in zip(model(x).values(), again(x).values(), strict=True)
    )
    groups, _ = checkpoint.load(tmp_path / "last.npz")
    checkpoint.restore(again.variables, groups["model"], "model", tmp_path / "last.npz")
    for a, b in zip(model(x).values(), again(x).values(), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_mixed_precision_model_reloads_computing_in_bfloat16(tmp_path):
    model = build_model(
        CONV_BACKBONE, {"name": "dense"}, TINY_TASKS, np.zeros((1, 8, 8, 3), np.uint8),
        architecture=architecture("cross_stitch"), precision="mixed_bfloat16",
        preprocessing=ImagePreprocessing(255.0),
    )  # fmt: skip
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert restored.stage_layers[0].compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in restored.trainable_variables)
    x = images()
    for task, value in model(x).items():
        np.testing.assert_array_equal(value.numpy(), restored(x)[task].numpy())


# ---------------------------------------------------------------------------- hard sharing
def test_hard_sharing_is_the_model_built_the_old_way():
    example = np.zeros((1, 8, 8, 3), np.uint8)
    tasks, seed = list(THREE_TASKS), 3
    keras.utils.set_random_seed(seed)  # the old build_model, step by step
    backbone = registry.build("backbone", dict(CONV_BACKBONE))
    heads = registry.build("head", {"name": "dense"}, tasks=tasks, seed=seed)
    old = MultiTaskModel(backbone, heads, ImagePreprocessing(255.0))
    old(tf.constant(example))
    built = [
        build_model(CONV_BACKBONE, {"name": "dense"}, tasks, example, seed=seed,
                    architecture={"name": "hard_sharing"}, preprocessing=ImagePreprocessing(255.0)),
        build_model(CONV_BACKBONE, {"name": "dense"}, tasks, example, seed=seed,
                    preprocessing=ImagePreprocessing(255.0)),
    ]  # fmt: skip
    for new in built:
        assert type(new) is MultiTaskModel
        assert [(v.name, v.shape, v.trainable) for v in new.variables] == [
            (v.name, v.shape, v.trainable) for v in old.variables
        ]
        for a, b in zip(new.variables, old.variables, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert [id(v) for v in new.shared_variables] == [
            id(v) for v in new.backbone.trainable_variables
        ]
    for training in (False, True):  # a training call updates the batch norms' statistics
        expected = old(images(), training=training)
        for new in built:
            for task, value in new(images(), training=training).items():
                np.testing.assert_array_equal(value.numpy(), expected[task].numpy())


# ------------------------------------------------------------------------------------ stages
STAGED_BACKBONES = [
    ({"name": "seed_cnn"}, 4),
    ({"name": "resnet", "depth": 20, "width": 2}, 4),
    ({"name": "resnet", "depth": 18, "width": 2}, 5),
    ({"name": "resnet9", "width": 2}, 4),
    ({"name": "wide_resnet", "depth": 10, "widen_factor": 1, "dropout": 0.3}, 4),
    ({"name": "mlp", "hidden_units": [8, 6, 4], "dropout": 0.2}, 3),
]


@pytest.mark.parametrize(
    "config,count", STAGED_BACKBONES, ids=[c["name"] + str(n) for c, n in STAGED_BACKBONES]
)
def test_the_stages_of_a_reference_backbone_compose_to_it(config, count):
    keras.utils.set_random_seed(0)
    backbone = registry.build("backbone", dict(config))
    x = tf.random.stateless_uniform([3, 8, 8, 3], seed=[1, 2])
    backbone(x)
    stages = backbone.stages()
    assert len(stages) == count and stages == backbone.stages()  # the same layers every time
    parts = ModelParts.of(config, {"name": "dense"}, TINY_TASKS, x)
    shapes = [s.output_shape for s in parts.stages("test")]
    for training in (False, True):
        y, seen = x, []
        for stage in stages:
            y = stage(y, training=training)
            seen.append((None, *y.shape[1:]))
        if not training:
            np.testing.assert_array_equal(y.numpy(), backbone(x, training=False).numpy())
        assert seen == shapes
    assert shapes[-1] == backbone.compute_output_shape((None, 8, 8, 3))


def test_stages_taken_from_a_backbone_build_only_their_variables():
    parts = ModelParts.of(CONV_BACKBONE, {"name": "dense"}, TINY_TASKS, tf.zeros([1, 8, 8, 3]))
    stages = parts.stages("test")
    last = stages[-1]
    last.layer.build(last.input_shape)
    assert last.layer.variables and all(not s.layer.variables for s in stages[:-1])


def test_a_backbone_without_stages_is_refused_naming_what_is_missing():
    class Plain(keras.layers.Layer):
        def call(self, inputs):
            return keras.ops.reshape(inputs, (-1, 6))

    with registry.isolated():
        registry.register("backbone", "plain_without_stages")(Plain)
        for name in ("cross_stitch", "mtan", "ple"):
            with pytest.raises(ArchitectureError, match=r"has no stages\(\) method") as caught:
                build_model(
                    {"name": "plain_without_stages"}, {"name": "dense"}, TINY_TASKS,
                    np.zeros((1, 6), np.float32), architecture={"name": name},
                )  # fmt: skip
            assert "plain_without_stages" in str(caught.value) and name in str(caught.value)
        # whole backbones as experts need no stages
        model = build_model(
            {"name": "plain_without_stages"}, {"name": "dense"}, TINY_TASKS,
            np.zeros((1, 6), np.float32), architecture={"name": "mmoe", "num_experts": 2},
        )  # fmt: skip
        assert len(model.experts) == 2


MOLECULE_EXAMPLE = {
    "z": np.ones((1, 8), np.float32),
    "r": np.zeros((1, 8, 3), np.float32),
    "mask": np.ones((1, 8), np.float32),
}


def test_gates_on_dict_inputs_of_a_backbone_without_stages_point_at_hard_sharing():
    """Dict inputs (molecules) reach the backbone as they are: gates cannot read them, and a
    backbone without stages cannot put a shared bottom before them, so the message must not send
    the user to expert_stages (which would then be refused for the missing stages)."""

    class AtomSum(keras.layers.Layer):
        def call(self, inputs):
            return keras.ops.sum(inputs["r"], axis=1)

    with registry.isolated():
        registry.register("backbone", "atom_sum_without_stages")(AtomSum)
        for name in ("mmoe", "cgc", "dselect_k"):
            with pytest.raises(ArchitectureError, match="no shared bottom") as caught:
                build_model(
                    {"name": "atom_sum_without_stages"}, {"name": "dense"}, TINY_TASKS,
                    MOLECULE_EXAMPLE, architecture={"name": name},
                )  # fmt: skip
            assert "architecture=hard_sharing" in str(caught.value)
            assert "expert_stages" not in str(caught.value)


@pytest.mark.parametrize(
    "backbone,count",
    [
        ({"name": "descriptor_mlp", "bins": 4, "max_distance": 4.0, "hidden_units": [8]}, 2),
        ({"name": "schnet", "hidden": 4, "filters": 4, "interactions": 1, "rbf": 3}, 3),
    ],
    ids=["descriptor_mlp", "schnet"],
)
def test_gates_on_dict_inputs_of_a_backbone_with_stages_ask_for_a_shared_bottom(backbone, count):
    """Whole backbones as experts (or PLE levels over every stage) leave the gates the dict of
    inputs: the message gives the expert_stages that put a shared bottom before them, and that
    value builds."""
    for config in ({"name": "mmoe"}, {"name": "ple", "num_levels": count - 1}):
        with pytest.raises(ArchitectureError, match="no shared bottom") as caught:
            build_model(backbone, {"name": "dense"}, TINY_TASKS, MOLECULE_EXAMPLE,
                        architecture=config)  # fmt: skip
        assert (
            f"expert_stages to at most {count - 1} (backbone '{backbone['name']}' has {count} "
            "stages)"
        ) in str(caught.value)
        model = build_model(
            backbone, {"name": "dense"}, TINY_TASKS, MOLECULE_EXAMPLE,
            architecture={**config, "expert_stages": count - 1},
        )  # fmt: skip
        assert model.bottom is not None
    # as many levels as stages: none is left for a bottom
    with pytest.raises(ArchitectureError, match=rf"{count - 1} are left for the {count} levels"):
        build_model(backbone, {"name": "dense"}, TINY_TASKS, MOLECULE_EXAMPLE,
                    architecture={"name": "ple", "num_levels": count})  # fmt: skip


def test_a_stage_that_passes_a_dict_without_features_is_refused():
    class Pair(keras.layers.Layer):
        def call(self, x):
            return {"left": x, "right": x}

        def compute_output_shape(self, shape):
            return {"left": shape, "right": shape}

    class Join(keras.layers.Layer):
        def call(self, state):
            return state["left"] + state["right"]

        def compute_output_shape(self, shape):
            return shape["left"]

    class Split2(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.parts = [Pair(name="pair"), Join(name="join")]

        def stages(self):
            return list(self.parts)

        def call(self, x):
            return self.parts[1](self.parts[0](x))

    with registry.isolated():
        registry.register("backbone", "dict_without_features")(Split2)
        with pytest.raises(
            ArchitectureError,
            match=r"stage 'pair' .* \['left', 'right'\]: a stage"
            r" that passes a dict must hold the features under 'features'",
        ):
            build_model(
                {"name": "dict_without_features"}, {"name": "dense"}, TINY_TASKS,
                np.zeros((1, 6), np.float32), architecture={"name": "cross_stitch"},
            )  # fmt: skip


# ------------------------------------------------------------------------ on molecules
# Every architecture on the molecule backbones, through the conformance suite: padded molecules
# (dict inputs, the qm9 dataset's preprocessing), the state between SchNet's stages a dict of
# atom features, mask and geometry. Options put a shared bottom before the gates (the dict of
# inputs is no stage state) and, for PLE, a level boundary inside the interaction blocks.
MOLECULE_OPTIONS = {
    "hard_sharing": {},
    "mmoe": {"num_experts": 2, "expert_stages": 2},
    "cgc": {"shared_experts": 1, "task_experts": 1, "expert_stages": 1},
    "ple": {"shared_experts": 1, "task_experts": 1, "num_levels": 2, "expert_stages": 2},
    "dselect_k": {"num_experts": 3, "k": 2, "expert_stages": 2},
    "cross_stitch": {},
    "mtan": {},
}
MOLECULE_BACKBONES = {  # SchNet: embedding, 2 blocks, readout; the descriptor, 2 dense layers
    "schnet": {"name": "schnet", "hidden": 8, "filters": 6, "interactions": 2, "rbf": 7,
               "cutoff": 4.0},
    "descriptor_mlp": {"name": "descriptor_mlp", "bins": 6, "max_distance": 4.0,
                       "hidden_units": [8, 8]},
}  # fmt: skip
MOLECULES = {  # random atoms in 8 slots, a random mask
    "z": ArraySpec((8,), "int32", 1, 10),
    "r": ArraySpec((8, 3), low=-2.0, high=2.0),
    "mask": ArraySpec((8,), "bool"),
}


def _molecule_suite(name: str, backbone: str) -> ArchitectureSuite:
    class OnMolecules(ArchitectureSuite):
        config = {"name": name, **MOLECULE_OPTIONS[name]}
        inputs = MOLECULES
        preprocessing = MoleculePreprocessing
        tasks = (TaskSpec("energy", kind="regression"), TaskSpec("gap", kind="regression"),
                 TaskSpec("kind", 3))  # fmt: skip

    OnMolecules.backbone = MOLECULE_BACKBONES[backbone]
    return OnMolecules()


MOLECULE_CASES = [
    pytest.param(a, b, id=f"{a}-{b}") for a in MOLECULE_OPTIONS for b in MOLECULE_BACKBONES
]


def test_every_architecture_has_molecule_options():
    assert set(MOLECULE_OPTIONS) == set(ARCHITECTURES)


@pytest.mark.parametrize("name,backbone", MOLECULE_CASES)
def test_every_architecture_on_molecules_declares_its_variables_and_reloads(
    name, backbone, tmp_path
):
    suite = _molecule_suite(name, backbone)
    model = suite.build()
    suite.check_outputs(model)
    suite.check_declared_once(model)
    suite.check_shared_are_reached_by_several_tasks(model)
    suite.check_shared_representation(model)
    suite.check_reloads(model, tmp_path)


def _training_cases() -> list:
    """SchNet with ew in the default run (the dict state between its stages); descriptor_mlp
    (whose stages pass tensors, as the tiny MLP of tests/test_conformance.py) and the gradient
    method with -m slow."""
    return [
        pytest.param(
            a, b, level, id=f"{a}-{b}-{level}",
            marks=() if (b, level) == ("schnet", "loss") else (pytest.mark.slow,),
        )
        for a in MOLECULE_OPTIONS
        for b in MOLECULE_BACKBONES
        for level in ("loss", "gradient")
    ]  # fmt: skip


@pytest.mark.parametrize("name,backbone,level", _training_cases())
def test_every_architecture_trains_on_molecules(name, backbone, level):
    suite = _molecule_suite(name, backbone)
    suite.test_a_few_training_steps_give_finite_losses_and_move_the_weights(level)


@pytest.mark.slow
@pytest.mark.parametrize("name,backbone", MOLECULE_CASES)
def test_every_architecture_on_molecules_builds_alike_for_a_seed_and_in_mixed_bfloat16(
    name, backbone
):
    suite = _molecule_suite(name, backbone)
    suite.test_a_seed_builds_the_same_variables_in_the_same_order()
    suite.test_mixed_bfloat16()


@pytest.mark.parametrize("name", list(MOLECULE_OPTIONS))
def test_no_architecture_depends_on_the_order_of_the_atoms_or_the_padding(name):
    """SchNet's features do not (tests/test_schnet.py); nor may what an architecture adds: gates
    read the atom features averaged over the real atoms, MTAN's batch norms and pooling use the
    real atoms only, mixing and stitching act atom by atom. Permuting the atoms or padding more
    leaves every task's outputs as they were (up to round-off), in inference and in training
    (batch statistics)."""
    suite = _molecule_suite(name, "schnet")
    model = suite.build()
    batch = suite.batch(4, salt=9)
    batch["mask"][:, 0] = True  # every molecule has an atom
    order = np.random.default_rng(3).permutation(8)
    permuted = {k: v[:, order] for k, v in batch.items()}
    padded = {
        "z": np.pad(batch["z"], ((0, 0), (0, 3)), constant_values=6),  # masked out
        "r": np.pad(batch["r"], ((0, 0), (0, 3), (0, 0)), constant_values=5.0),
        "mask": np.pad(batch["mask"], ((0, 0), (0, 3))),
    }
    for training in (False, True):
        outputs = model(batch, training=training)
        for other in (permuted, padded):
            for task, value in model(other, training=training).items():
                np.testing.assert_allclose(
                    value.numpy(), outputs[task].numpy(), rtol=1e-4, atol=1e-5,
                    err_msg=f"task '{task}', training={training}",
                )  # fmt: skip


# ---------------------------------------------------------------------------------- refusals
BAD_OPTIONS = [
    ({"name": "mmoe", "num_experts": 0}, r"architecture\.num_experts=0 .* >= 1"),
    ({"name": "mmoe", "gate_temperature": 0.0}, r"architecture\.gate_temperature=0\.0 .* > 0"),
    ({"name": "mmoe", "expert_stages": 0}, r"architecture\.expert_stages=0 .* >= 1"),
    ({"name": "cgc", "shared_experts": 0}, r"architecture\.shared_experts=0 .* >= 1"),
    ({"name": "cgc", "task_experts": 0}, r"architecture\.task_experts=0 .* >= 1"),
    ({"name": "cgc", "gate_temperature": -1.0}, r"architecture\.gate_temperature=-1\.0 .* > 0"),
    ({"name": "ple", "num_levels": 0}, r"architecture\.num_levels=0 .* >= 1"),
    ({"name": "ple", "num_levels": 3, "expert_stages": 2}, r"num_levels=3 .* <= expert_stages"),
    ({"name": "dselect_k", "num_experts": 3, "k": 4}, r"architecture\.k=4 .* in 1\.\.num_experts"),
    ({"name": "dselect_k", "k": 0}, r"architecture\.k=0 .* in 1\.\.num_experts \(1\.\.4\)"),
    ({"name": "dselect_k", "gamma": 0.0}, r"architecture\.gamma=0\.0 .* > 0"),
    ({"name": "dselect_k", "entropy_weight": -0.1}, r"architecture\.entropy_weight=-0\.1 .* >= 0"),
    ({"name": "cross_stitch", "self_weight": 0.0}, r"architecture\.self_weight=0\.0 .* \(0, 1\]"),
]


@pytest.mark.parametrize("config,message", BAD_OPTIONS, ids=[str(c) for c, _ in BAD_OPTIONS])
def test_bad_options_are_refused_before_and_at_build_naming_the_allowed_values(config, message):
    with pytest.raises(ConfigError, match=message):
        check_config(config)  # what the protocol does before reading any data
    with pytest.raises(ConfigError, match=message):
        build_model(TINY_BACKBONE, {"name": "dense"}, TINY_TASKS, np.zeros((1, 6), np.float32),
                    architecture=config)  # fmt: skip


@pytest.mark.parametrize(
    "config,message",
    [
        ({"name": "mmoe", "expert_stages": 3}, r"expert_stages=3 .* 2 stages \(stage1, stage2\)"),
        ({"name": "ple", "num_levels": 3}, r"num_levels=3 .* must be <= 2"),
    ],
)
def test_options_beyond_the_backbones_stages_are_refused(config, message):
    with pytest.raises(ArchitectureError, match=message):
        build_model(TINY_BACKBONE, {"name": "dense"}, TINY_TASKS, np.zeros((1, 6), np.float32),
                    architecture=config)  # fmt: skip


def test_unknown_options_are_refused():
    with pytest.raises(registry.PluginError, match=r"unknown options \['experts'\]"):
        check_config({"name": "mmoe", "experts": 3})


@pytest.mark.parametrize("name", [a for a in ARCHITECTURES if a != "hard_sharing"])
def test_a_head_that_links_tasks_is_refused_by_per_task_representations(name):
    fine, coarse = TaskSpec("fine", 4), TaskSpec("coarse", 2)
    with pytest.raises(ArchitectureError, match=rf"head=hierarchical .* architecture={name}"):
        build_model(
            TINY_BACKBONE, {"name": "hierarchical"}, [fine, coarse], np.zeros((1, 6), np.float32),
            architecture=architecture(name),
            hierarchy=TaskHierarchy("fine", "coarse", np.array([0, 0, 1, 1])),
        )  # fmt: skip


def test_feature_level_methods_train_hard_sharing_only():
    for name in ARCHITECTURES:
        model = tiny_model(name)
        for method in ("graddrop", {"name": "mgda", "upper_bound": True}):
            config = {"name": method} if isinstance(method, str) else method
            weighting = registry.build("weighting", config)
            if name == "hard_sharing":
                check_weighting(model, weighting, architecture=name, weighting_name="x")
            else:
                with pytest.raises(ArchitectureError, match="gradient_of='features'"):
                    check_weighting(model, weighting, architecture=name, weighting_name="x")
        assert model.shared_representation == (name == "hard_sharing")


# ------------------------------------------------------------------------- the architectures
def test_smooth_step_is_binary_outside_its_width_and_smooth_inside():
    t = tf.constant([-2.0, -0.5, -0.25, 0.0, 0.25, 0.5, 2.0])
    np.testing.assert_allclose(
        smooth_step(t, 1.0).numpy(), [0, 0, 0.15625, 0.5, 0.84375, 1, 1], atol=1e-6
    )


def test_dselect_k_gates_are_distributions_and_add_their_regularizers_while_training():
    model = tiny_model("dselect_k")  # 3 experts: not a power of two
    x = tf.constant(tiny_split(5, 0).x)
    weights = model.gates["a"](model.bottom(x), training=False).numpy()  # the bottom's output
    assert weights.shape == (5, 3) and (weights >= 0).all()
    assert (weights.sum(axis=1) <= 1 + 1e-6).all()  # mass on the 4th code is not an expert
    model(x, training=True)
    assert len(model.losses) == 4  # entropy and validity, per task
    model(x, training=False)
    assert not model.losses


def test_cross_stitch_units_start_near_the_identity():
    model = tiny_model("cross_stitch", self_weight=0.8)
    for unit in model.units:
        np.testing.assert_allclose(unit.alpha.numpy(), [[0.8, 0.2], [0.2, 0.8]])
    three = image_model("cross_stitch")
    np.testing.assert_allclose(three.units[0].alpha.numpy().sum(axis=1), 1.0, rtol=1e-6)
    assert len(three.units) == 4 and len(three.stage_layers) == 3 * 4


def test_expert_counts_and_levels_follow_the_options():
    model = image_model("ple", shared_experts=2, task_experts=1, num_levels=2, expert_stages=3)
    assert model.bottom is not None and len(model.bottom.parts) == 1  # stem shared
    assert len(model.shared_experts) == 2 * 2 and len(model.task_experts) == 2 * 3
    assert len(model.shared_gates) == 1 and len(model.task_gates) == 2 * 3
    assert [len(e.parts) for e in model.shared_experts] == [2, 2, 1, 1]  # 3 stages, 2 levels
    mmoe = image_model("mmoe", num_experts=3, expert_stages=2)
    assert len(mmoe.experts) == 3 and [len(e.parts) for e in mmoe.experts] == [2, 2, 2]


# ------------------------------------------------------------------------------- the protocol
def _benchmark_config(npz_root, architecture_config: dict, weighting: str):
    from omegaconf import OmegaConf

    from mtbench.config import MTBenchConfig

    cfg = OmegaConf.structured(MTBenchConfig)
    return OmegaConf.merge(
        cfg,
        {
            "dataset": {"name": "cifar100", "root": str(npz_root), "download": False,
                        "val_size": 100, "train_limit": 200},
            "backbone": {"name": "mlp", "hidden_units": [8, 8]},
            "head": {"name": "dense"},
            "architecture": architecture_config,
            "weighting": {"name": weighting},
            "trainer": {"epochs": 1, "batch_size": 50, "precision": "float32",
                        "progress": False, "checkpoint_every": 0, "deterministic": False},
            "benchmark": {"cost_rounds": 0},
        },
    )  # fmt: skip


def test_the_benchmark_refuses_a_bad_option_before_reading_data(tmp_path):
    from mtbench.protocol import Benchmark

    cfg = _benchmark_config(tmp_path / "nowhere", {"name": "mmoe", "num_experts": 0}, "ew")
    with pytest.raises(ConfigError, match="num_experts=0"):
        Benchmark(cfg, tmp_path / "run").run()
    assert not (tmp_path / "run" / "results.json").exists()


def test_the_benchmark_refuses_a_feature_level_method_before_reading_data(tmp_path):
    from mtbench.protocol import Benchmark

    cfg = _benchmark_config(tmp_path / "nowhere", {"name": "cgc", "expert_stages": 1}, "graddrop")
    with pytest.raises(ArchitectureError, match="weighting=graddrop .*architecture=cgc"):
        Benchmark(cfg, tmp_path / "run").run()
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_function_architecture_is_checked_once_its_network_is_built(npz_root, tmp_path):
    """A factory function's network says what its heads read only once built: refused then,
    still before training."""
    from mtbench.protocol import Benchmark

    def per_task(parts, preprocessing=None):
        return MMoE(parts, preprocessing, num_experts=2, expert_stages=1)

    with registry.isolated():
        registry.register("architecture", "test_mmoe_function")(per_task)
        cfg = _benchmark_config(npz_root, {"name": "test_mmoe_function"}, "graddrop")
        with pytest.raises(ArchitectureError, match="architecture=test_mmoe_function"):
            Benchmark(cfg, tmp_path / "run").run()
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_benchmark_records_each_runs_architecture_and_parameters(npz_root, tmp_path):
    from mtbench.protocol import Benchmark

    cfg = _benchmark_config(npz_root, {"name": "mmoe", "num_experts": 2, "expert_stages": 1},
                            "pcgrad")  # fmt: skip
    results = Benchmark(cfg, tmp_path / "run").run()
    runs = {r["name"]: r for r in records.load(tmp_path / "run" / "results.json")["runs"]}
    assert results["status"] == "complete"
    assert {n: r["architecture"] for n, r in runs.items()} == {
        "single:fine": "hard_sharing", "single:coarse": "hard_sharing", "joint": "mmoe",
    }  # fmt: skip
    single, joint = runs["single:fine"]["parameter_counts"], runs["joint"]["parameter_counts"]
    assert single["per_task"] == {"fine": 8 * 100 + 100}  # the dense head on 8 features
    gate = 8 * 2 + 2  # the bottom's 8 features to 2 experts
    assert joint["per_task"] == {"fine": 8 * 100 + 100 + gate, "coarse": 8 * 20 + 20 + gate}
    # the bottom (the first stage, 32*32*3 -> 8) once, the last stage (8 -> 8) twice
    assert single["shared"] == 32 * 32 * 3 * 8 + 8 + 8 * 8 + 8
    assert joint["shared"] == single["shared"] + 8 * 8 + 8
    assert joint["trainable"] == joint["shared"] + joint["task_specific"]


def test_older_results_read_as_hard_sharing(tmp_path):
    old = records.new_results({"seed": 0, "weighting": {"name": "ew"}}, {})
    old["runs"] = [{"name": "joint", "tasks": ["a", "b"], "status": "failed", "error": "x"}]
    del old["config"]["weighting"]
    records.write(tmp_path / "results.json", old)
    loaded = records.load(tmp_path / "results.json")
    assert loaded["config"]["architecture"] == {"name": "hard_sharing"}
    assert loaded["runs"][0]["architecture"] == "hard_sharing"
    raw = json.loads((tmp_path / "results.json").read_text())
    assert "architecture" not in raw["config"]  # the file stays as written
    # the baseline cache: single-task runs do not depend on the architecture
    a = {"architecture": {"name": "mmoe", "num_experts": 4}, "seed": 0}
    b = {"architecture": {"name": "cgc"}, "seed": 0}
    assert records.differing_keys(a, b, "baseline") == []
    assert records.differing_keys(a, b, "leaderboard") == [
        "architecture.name", "architecture.num_experts",
    ]  # fmt: skip


# ------------------------------------------------------------------------------------- slow
@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_the_command_line_runs_every_architecture(name, npz_root, tmp_path):
    """``python -m mtbench +experiment=cifar100_mtl architecture=<name>`` (needs the
    architectures declared as entry points, as pyproject.toml does)."""
    tick = time.perf_counter()
    stages = ["architecture.expert_stages=2"] if name in ("mmoe", "cgc", "dselect_k") else []
    result = run_mtbench(
        ["+experiment=cifar100_mtl", f"architecture={name}", *stages, f"dataset.root={npz_root}",
         "dataset.download=false", "dataset.val_size=100", "trainer.epochs=1",
         "trainer.batch_size=64", "trainer.progress=false", "benchmark.single_task=false",
         "hydra.run.dir=run"],
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = records.load(tmp_path / "run" / "results.json")
    (joint,) = results["runs"]
    assert joint["architecture"] == name and results["config"]["architecture"]["name"] == name
    assert joint["parameter_counts"]["shared"] > 0
    print(f"{name}: {time.perf_counter() - tick:.0f} s")


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_matches_one_device_for_mmoe(npz_root, tmp_path):
    losses = {}
    for mode, extra in (("none", []), ("mirrored", ["trainer.cpu_replicas=2"])):
        result = run_mtbench(
            ["+experiment=cifar100_mtl", "architecture=mmoe", "architecture.num_experts=2",
             "architecture.expert_stages=2", "weighting=pcgrad", f"dataset.root={npz_root}",
             "dataset.download=false", "dataset.val_size=100", "trainer.epochs=2",
             "trainer.batch_size=64", "trainer.precision=float32", "trainer.progress=false",
             "benchmark.single_task=false", f"trainer.distribute={mode}", *extra,
             f"hydra.run.dir={mode}"],
            cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        results = records.load(tmp_path / mode / "results.json")
        (joint,) = results["runs"]
        losses[mode] = [h["train_loss"] for h in joint["history"]]
        if mode == "mirrored":
            assert joint["distribution"] == {"strategy": "MirroredStrategy", "replicas": 2}
    for got, want in zip(losses["mirrored"], losses["none"], strict=True):
        assert got == pytest.approx(want, rel=1e-3)
