"""The reference plugins against :mod:`mtbench.testing`, the conformance suites third parties use.

Each reference plugin subclasses its kind's suite with a small config, as a third-party plugin
would. A weighting method lists the properties it claims (its docstring's formula, its paper, and
the property tests it had before the suites), each a mixin:

- ``PermutationInvariant``: every method whose randomness (if any) is not tied to task order
  (``rlw`` draws a weight per task, ``pcgrad`` and ``gradvac`` a random order of tasks);
- ``NonConflicting``: methods that solve for a direction with ``<d, g_t> >= 0`` (``mgda``,
  ``mgda_log``, ``upgrad``, ``dualproj``, ``nashmtl``, ``fairgrad``, ``config``);
- ``MeanWhenAgreeing``: the first update on identical gradients, at the scale each docstring's
  formula gives (1 for the mean, ``T`` for a sum);
- ``LinearUnderScaling`` (update homogeneous in the gradients) and ``ScaleInvariant`` (one task's
  loss scale does not matter: the log-loss methods, Nash-MTL's bargaining solution);
- ``NonNegativeWeights``; ``FiniteOnZeroGradient`` (gradient methods) and
  ``FiniteOnMissingTask`` (a batch without labels for a task gives it zero loss and gradient);
- ``Serialises`` and ``Deterministic``: every method.

Every reference method meets every claim it makes (gls, gradnorm, scaleinvls and dwa were fixed
to stay finite when a batch holds no label for a task).

Every reference architecture runs :class:`~mtbench.testing.ArchitectureSuite` on the suite's
tiny MLP (two stages), with the options that refuse a value listed; tests/test_architectures.py
runs it on the molecule backbones. Broken toy plugins show that each suite fails what breaks its
contract.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtbench
from mtbench import registry
from mtbench.architecture import PerTaskHeads
from mtbench.data import DatasetSplits, Split, TaskHierarchy
from mtbench.tasks import Classification, ClassificationOptions, TaskSpec
from mtbench.testing import (
    ArchitectureSuite,
    ArraySpec,
    BackboneSuite,
    DatasetSuite,
    Deterministic,
    FiniteOnMissingTask,
    FiniteOnZeroGradient,
    HeadSuite,
    LinearUnderScaling,
    MeanWhenAgreeing,
    NonConflicting,
    NonNegativeWeights,
    PermutationInvariant,
    ScaleInvariant,
    Serialises,
    TaskKindSuite,
    WeightingSuite,
)
from mtbench.weighting import LossWeighting


# ------------------------------------------------------------------------ weighting: loss level
class _Loss(WeightingSuite, FiniteOnMissingTask, NonNegativeWeights, Serialises, Deterministic):
    """What every reference loss-level method claims."""


class _Gradient(
    WeightingSuite,
    FiniteOnZeroGradient,
    FiniteOnMissingTask,
    Serialises,
    Deterministic,
):
    """What every reference gradient-level method claims."""


class TestEW(_Loss, PermutationInvariant, MeanWhenAgreeing):
    config = {"name": "ew"}
    agreeing_per_task = True  # the sum of the losses


class TestAutoLambda(_Loss, PermutationInvariant, MeanWhenAgreeing):
    # the suite calls `combine` only: the meta update (look-ahead on a meta batch) is checked
    # against the reference in tests/test_weighting_auto_lambda.py
    config = {"name": "auto_lambda"}
    agreeing_scale = 0.1  # init_weight
    agreeing_per_task = True


class TestStatic(_Loss, PermutationInvariant):
    config = {"name": "static", "weights": {"task1": 0.5}}  # weights follow the task names


class TestUW(_Loss, PermutationInvariant, MeanWhenAgreeing):
    config = {"name": "uw"}
    agreeing_per_task = True  # exp(-s) = 1 at s = 0


class TestDWA(_Loss, PermutationInvariant, MeanWhenAgreeing):
    config = {"name": "dwa"}
    steps = 3  # its formula applies from the third epoch
    agreeing_per_task = True  # weight 1 during the first two epochs


class TestRLW(_Loss, MeanWhenAgreeing):
    config = {"name": "rlw", "seed": 3}  # random weights on the simplex: their sum is 1


class TestGLS(_Loss, PermutationInvariant, MeanWhenAgreeing, ScaleInvariant):
    config = {"name": "gls"}
    scale_invariant_length = False  # the geometric mean scales by k^(1/T)


class TestFAMO(_Loss, PermutationInvariant, MeanWhenAgreeing, ScaleInvariant):
    config = {"name": "famo"}
    scale_invariant_length = False  # the weights are normalised by c = sum_t z_t / L_t


class TestSTCH(_Loss, PermutationInvariant, MeanWhenAgreeing, ScaleInvariant):
    config = {"name": "stch"}
    steps = 7  # past the 4 warm-up epochs and the nadir epoch: STCH proper from the 6th
    agreeing_per_task = True  # warm-up: sum_t log L_t, weights 1 / L_t = 1


class TestScaleInvLS(_Loss, PermutationInvariant, MeanWhenAgreeing, ScaleInvariant):
    config = {"name": "scaleinvls"}
    agreeing_per_task = True  # weights 1 / L_t = 1


class TestIMTLL(_Loss, PermutationInvariant, MeanWhenAgreeing):
    config = {"name": "imtl_l"}
    agreeing_per_task = True  # exp(s) = 1 at s = 0


# -------------------------------------------------------------------- weighting: gradient level
class TestMGDA(
    _Gradient, PermutationInvariant, NonConflicting, MeanWhenAgreeing, NonNegativeWeights,
    LinearUnderScaling,
):  # fmt: skip
    config = {"name": "mgda"}


class TestMGDALog(
    _Gradient, PermutationInvariant, NonConflicting, MeanWhenAgreeing, NonNegativeWeights,
    LinearUnderScaling, ScaleInvariant,
):  # fmt: skip
    config = {"name": "mgda_log"}
    scale_invariant_length = False  # its length follows c = sum_t a_t / L_t


class TestCAGrad(
    _Gradient, PermutationInvariant, MeanWhenAgreeing, NonNegativeWeights, LinearUnderScaling
):
    config = {"name": "cagrad"}
    compiled = True  # its dual solver loops many times: eagerly, seconds per step
    agreeing_scale = 1.4 / 1.16  # g_0 + c |g_0| g / |g| = (1 + c) g, divided by 1 + c^2


class TestCAGradLog(
    _Gradient, PermutationInvariant, MeanWhenAgreeing, NonNegativeWeights, LinearUnderScaling,
    ScaleInvariant,
):  # fmt: skip
    config = {"name": "cagrad_log"}
    compiled = True
    agreeing_scale = 1.4 / 1.16  # CAGrad's, on g / L with L = 1


class TestUPGrad(
    _Gradient, PermutationInvariant, NonConflicting, MeanWhenAgreeing, NonNegativeWeights,
    LinearUnderScaling,
):  # fmt: skip
    config = {"name": "upgrad"}
    nonconflicting_options = {"reg_eps": 1e-9}  # reg_eps allows conflicts of its own size


class TestDualProj(
    _Gradient, PermutationInvariant, NonConflicting, MeanWhenAgreeing, NonNegativeWeights,
    LinearUnderScaling,
):  # fmt: skip
    config = {"name": "dualproj"}
    nonconflicting_options = {"reg_eps": 1e-9}


class TestIMTL(_Gradient, PermutationInvariant, MeanWhenAgreeing, LinearUnderScaling):
    config = {"name": "imtl"}  # its weights can be negative


class TestIMTLLog(
    _Gradient, PermutationInvariant, MeanWhenAgreeing, LinearUnderScaling, ScaleInvariant
):
    config = {"name": "imtl_log"}


class TestNashMTL(
    _Gradient, PermutationInvariant, NonConflicting, NonNegativeWeights, ScaleInvariant
):
    config = {"name": "nashmtl"}  # G a = 1/a: <g_t, d> = 1/a_t > 0, whatever each task's scale


class TestFairGrad(
    _Gradient, PermutationInvariant, NonConflicting, NonNegativeWeights, ScaleInvariant
):
    config = {"name": "fairgrad"}  # alpha = 1: Nash-MTL's bargaining solution


class TestCRMOGM(
    _Gradient, PermutationInvariant, MeanWhenAgreeing, NonNegativeWeights, LinearUnderScaling
):
    config = {"name": "cr_mogm"}  # MGDA's weights averaged over steps: no longer conflict-free


class TestConFIG(
    _Gradient, PermutationInvariant, NonConflicting, MeanWhenAgreeing, LinearUnderScaling,
    ScaleInvariant,
):  # fmt: skip
    config = {"name": "config"}
    agreeing_per_task = True  # the length is the sum of the projections: T |g|
    scale_invariant_length = False  # the direction is that of the unit gradients


class TestAlignedMTL(_Gradient, PermutationInvariant, MeanWhenAgreeing, LinearUnderScaling):
    config = {"name": "aligned_mtl"}
    agreeing_per_task = True  # the sum of the aligned gradients


class TestPCGrad(_Gradient, MeanWhenAgreeing, NonNegativeWeights, LinearUnderScaling):
    config = {"name": "pcgrad", "seed": 1}
    agreeing_per_task = True  # no conflict: the sum


class TestGradVac(_Gradient, MeanWhenAgreeing, NonNegativeWeights, LinearUnderScaling):
    config = {"name": "gradvac", "seed": 1}
    agreeing_per_task = True  # cosines of 1 are above the targets: the sum


class TestGradDrop(
    _Gradient, PermutationInvariant, MeanWhenAgreeing, NonNegativeWeights, LinearUnderScaling
):
    config = {"name": "graddrop", "seed": 1}  # one draw per element, whatever the task order
    agreeing_per_task = True  # every sign agrees: the sum


class TestGradNorm(_Gradient, PermutationInvariant, MeanWhenAgreeing, NonNegativeWeights):
    config = {"name": "gradnorm"}
    agreeing_per_task = True  # the weights start at 1


class TestDBMTL(
    _Gradient, PermutationInvariant, MeanWhenAgreeing, NonNegativeWeights, LinearUnderScaling,
    ScaleInvariant,
):  # fmt: skip
    config = {"name": "db_mtl"}
    agreeing_scale = 0.1  # m_1 = (1 - beta) g / L, every task rescaled to the largest norm
    agreeing_per_task = True


class TestExcessMTL(
    _Gradient, PermutationInvariant, MeanWhenAgreeing, NonNegativeWeights, LinearUnderScaling
):
    config = {"name": "excess_mtl"}
    agreeing_per_task = True  # the first step keeps the weights at 1


class TestMoCo(_Gradient, PermutationInvariant, NonNegativeWeights):
    config = {"name": "moco"}  # h_t = L_t g_t / |g_t|: neither linear nor scale-invariant


class TestMoDo(_Gradient, PermutationInvariant, MeanWhenAgreeing, NonNegativeWeights):
    config = {"name": "modo"}  # three batches per update (copies of one in the properties)


class TestSDMGrad(_Gradient, PermutationInvariant, MeanWhenAgreeing, NonNegativeWeights):
    config = {"name": "sdmgrad"}


def _suite_configs(
    suite: type, key: Callable[[type], str] = lambda cls: cls.config["name"]
) -> dict[str, type]:
    """The test classes of this module that subclass ``suite``, by ``key`` (the plugin name)."""
    found: dict[str, type] = {}
    for value in globals().values():
        if (
            isinstance(value, type)
            and issubclass(value, suite)
            and value.__name__.startswith("Test")
        ):
            found.setdefault(key(value), value)
    return found


def test_every_registered_weighting_has_a_conformance_class():
    reference = [
        name
        for name in mtbench.list_plugins("weighting")
        if mtbench.get_plugin("weighting", name).factory.__module__.startswith("mtbench_plugins.")
    ]
    missing = sorted(set(reference) - set(_suite_configs(WeightingSuite)))
    assert not missing, f"add a WeightingSuite subclass (and its properties) for {missing}"


# ----------------------------------------------------------------------------------- task kinds
class TestClassification(TaskKindSuite):
    spec = TaskSpec("digit", 5)

    def make_labels(self, rng, n):
        return rng.integers(0, 5, n)

    def perfect_outputs(self, kind, labels):
        return 10.0 * np.eye(5)[labels]


class TestClassificationSmoothedTop3(TestClassification):
    spec = TaskSpec("digit", 5, options={"label_smoothing": 0.1, "top_k": 3})


class TestMultilabel(TaskKindSuite):
    spec = TaskSpec("tags", kind="multilabel", label_shape=(4,))

    def make_labels(self, rng, n):
        return rng.integers(0, 2, (n, 4))

    def perfect_outputs(self, kind, labels):
        return 10.0 * (2.0 * labels - 1.0)


class TestRegression(TaskKindSuite):
    spec = TaskSpec(
        "energy", kind="regression", label_shape=(2,), class_names=("gap", "dipole"),
        options={"units": ["eV", "D"]},
    )  # fmt: skip

    def make_labels(self, rng, n):
        return rng.normal([5.0, -2.0], [3.0, 0.5], (n, 2))

    def perfect_outputs(self, kind, labels):
        return kind.encode(labels)  # standardised targets


class TestScalarHuberRegression(TestRegression):
    spec = TaskSpec("age", kind="regression", options={"loss": "huber", "units": ["years"]})

    def make_labels(self, rng, n):
        return rng.uniform(20.0, 80.0, n)


class TestSegmentation(TaskKindSuite):
    spec = TaskSpec("mask", 3, kind="segmentation", label_shape=(4, 4))

    def make_labels(self, rng, n):
        return rng.integers(0, 3, (n, 4, 4))

    def perfect_outputs(self, kind, labels):
        return 10.0 * np.eye(3)[labels]


def test_every_built_in_task_kind_has_a_conformance_class():
    covered = {
        cls.spec.kind for cls in _suite_configs(TaskKindSuite, key=lambda c: c.__name__).values()
    }
    missing = sorted(set(mtbench.list_plugins("task")) - covered)
    assert not missing, f"add a TaskKindSuite subclass for the task kinds {missing}"


# ------------------------------------------------------------------------------------- datasets
class TestCifar100(DatasetSuite):
    @pytest.fixture
    def dataset_config(self, npz_root):
        return {"name": "cifar100", "root": str(npz_root), "download": False, "val_size": 100}

    def test_declares_image_inputs(self, dataset_config):
        from mtbench.inputs import ImageInputs

        assert isinstance(self.load(dataset_config).inputs, ImageInputs)


class TestCifar100Tasks(DatasetSuite):
    @pytest.fixture
    def dataset_config(self, npz_root):
        return {"name": "cifar100_tasks", "root": str(npz_root), "download": False, "val_size": 200}


# ------------------------------------------------------------------------------------ backbones
IMAGE = ArraySpec((8, 8, 3))  # what reaches an image backbone: scaled pixels


class TestSeedCNN(BackboneSuite):
    config = {"name": "seed_cnn"}
    inputs = IMAGE


class TestResNet9(BackboneSuite):
    config = {"name": "resnet9", "width": 8}
    inputs = IMAGE


class TestMLPBackbone(BackboneSuite):
    config = {"name": "mlp", "hidden_units": [8, 4], "dropout": 0.5}
    inputs = ArraySpec((16,), low=-1.0)  # a feature vector


class TestResNet(BackboneSuite):
    config = {"name": "resnet", "depth": 18, "width": 4}  # four stages, projection shortcuts
    inputs = IMAGE


class TestWideResNet(BackboneSuite):
    config = {"name": "wide_resnet", "depth": 10, "widen_factor": 1, "dropout": 0.3}
    inputs = IMAGE


# What reaches a molecule backbone: padded atoms (z = 0 and mask False in padded slots is what
# the qm9 dataset gives; random masks here check that only the mask decides).
MOLECULE = {
    "z": ArraySpec((8,), "int32", 1, 10),
    "r": ArraySpec((8, 3), low=-2.0, high=2.0),
    "mask": ArraySpec((8,), "bool"),
}


class TestSchNet(BackboneSuite):
    config = {"name": "schnet", "hidden": 8, "filters": 6, "interactions": 2, "rbf": 7,
              "cutoff": 4.0, "readout": "sum_mean"}  # fmt: skip
    inputs = MOLECULE


class TestDescriptorMLP(BackboneSuite):
    config = {"name": "descriptor_mlp", "bins": 6, "max_distance": 4.0, "hidden_units": [8],
              "dropout": 0.5}  # fmt: skip
    inputs = MOLECULE
    batch_size = 4  # a few molecules: with dropout, a batch of two can leave no unit active


# ---------------------------------------------------------------------------------------- heads
# The suite's default classification and regression tasks, and a class map (outputs reshaped).
_TASKS = (*HeadSuite.tasks, TaskSpec("mask", 3, kind="segmentation", label_shape=(2, 2)))


class TestDenseHead(HeadSuite):
    config = {"name": "dense"}
    tasks = _TASKS


class TestMLPHead(HeadSuite):
    config = {"name": "mlp", "hidden_units": [8], "dropout": 0.5}
    tasks = _TASKS


_PARENT_OF = np.array([2, 0, 1, 1, 0, 2])  # not child // 2: no contiguous superclasses assumed


class TestHierarchicalHead(HeadSuite):
    config = {"name": "hierarchical", "mix": 0.5}
    tasks = (
        TaskSpec("fine", 6),
        TaskSpec("coarse", 3),
        TaskSpec("target", kind="regression", label_shape=(2,)),
    )
    hierarchy = TaskHierarchy("fine", "coarse", _PARENT_OF)
    coupled_tasks = ("coarse",)  # predicted through 'fine' in the joint model


def test_every_reference_model_plugin_has_a_conformance_class():
    for kind, suite in (("backbone", BackboneSuite), ("head", HeadSuite)):
        reference = [
            name
            for name in mtbench.list_plugins(kind)
            if mtbench.get_plugin(kind, name).factory.__module__.startswith("mtbench_plugins.")
        ]
        missing = sorted(set(reference) - set(_suite_configs(suite)))
        assert not missing, f"add a {suite.__name__} subclass for the {kind}s {missing}"


# -------------------------------------------------------------------------------- architectures
class TestHardSharing(ArchitectureSuite):
    config = {"name": "hard_sharing"}


class TestMMoE(ArchitectureSuite):
    config = {"name": "mmoe", "num_experts": 2, "expert_stages": 1}
    invalid_options = [
        ({"num_experts": 0}, r"architecture\.num_experts=0 .* >= 1"),
        ({"gate_temperature": 0.0}, r"architecture\.gate_temperature=0\.0 .* > 0"),
        ({"expert_stages": 0}, r"architecture\.expert_stages=0 .* >= 1"),
    ]


class TestCGC(ArchitectureSuite):
    config = {"name": "cgc", "shared_experts": 1, "task_experts": 1, "expert_stages": 1}
    invalid_options = [
        ({"shared_experts": 0}, r"architecture\.shared_experts=0 .* >= 1"),
        ({"task_experts": 0}, r"architecture\.task_experts=0 .* >= 1"),
    ]


class TestPLE(ArchitectureSuite):
    config = {"name": "ple", "shared_experts": 1, "task_experts": 1, "num_levels": 2}
    invalid_options = [
        ({"num_levels": 0}, r"architecture\.num_levels=0 .* >= 1"),
        ({"num_levels": 3, "expert_stages": 2}, r"num_levels=3 .* <= expert_stages \(2\)"),
    ]


class TestDSelectK(ArchitectureSuite):
    # three experts: not a power of two (the validity penalty); the entropy term on
    config = {"name": "dselect_k", "num_experts": 3, "k": 2, "expert_stages": 1,
              "entropy_weight": 0.1}  # fmt: skip
    invalid_options = [
        ({"k": 4}, r"architecture\.k=4 .* in 1\.\.num_experts \(1\.\.3\)"),
        ({"gamma": 0.0}, r"architecture\.gamma=0\.0 .* > 0"),
        ({"entropy_weight": -0.1}, r"architecture\.entropy_weight=-0\.1 .* >= 0"),
    ]


class TestCrossStitch(ArchitectureSuite):
    config = {"name": "cross_stitch"}
    invalid_options = [({"self_weight": 0.0}, r"architecture\.self_weight=0\.0 .* \(0, 1\]")]


class TestMTAN(ArchitectureSuite):
    config = {"name": "mtan"}


def test_every_registered_architecture_has_a_conformance_class():
    reference = [
        name
        for name in mtbench.list_plugins("architecture")
        if mtbench.get_plugin("architecture", name).factory.__module__.startswith(
            "mtbench_plugins."
        )
    ]
    missing = sorted(set(reference) - set(_suite_configs(ArchitectureSuite)))
    assert not missing, f"add an ArchitectureSuite subclass for the architectures {missing}"


# ---------------------------------------------------------------------------- the suites can fail
class _FavoursTheFirstTask(LossWeighting):
    """A broken method: every weight on the first task, whatever the order of the tasks."""

    def loss_weights(self, losses):
        return tf.one_hot(0, tf.shape(losses)[0])


class _Backwards(Classification):
    """A broken kind: classification metrics declared lower-is-better."""

    @property
    def metrics(self):
        return tuple(dataclasses.replace(m, higher_is_better=False) for m in super().metrics)


class _Leaky:
    """A broken dataset: its validation split repeats training examples."""

    def load(self) -> DatasetSplits:
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(30, 4)).astype(np.float32), rng.integers(0, 3, 30)
        train, test = Split(x[:20], {"y": y[:20]}), Split(x[20:], {"y": y[20:]})
        return DatasetSplits(train, Split(x[:5], {"y": y[:5]}), test, (TaskSpec("y", 3),))


def test_the_suites_fail_plugins_that_break_their_contract():
    with registry.isolated():
        mtbench.register("weighting", "favours_first")(_FavoursTheFirstTask)
        mtbench.register("task", "backwards", config=ClassificationOptions)(_Backwards)
        mtbench.register("dataset", "leaky")(_Leaky)

        class Weighting(WeightingSuite, PermutationInvariant, MeanWhenAgreeing):
            config = {"name": "favours_first"}
            agreeing_per_task = True  # claims ew's sum; its weights sum to 1

        Weighting().test_outputs_are_finite_and_shaped(3)  # a valid method, but not fair
        with pytest.raises(AssertionError, match=r"order \[2, 0, 1\]: update"):
            Weighting().test_permuting_tasks_permutes_weights_and_keeps_the_update()
        with pytest.raises(AssertionError, match="the update against 3 g"):
            Weighting().test_identical_gradients_give_their_scaled_mean(3)

        class Kind(TestClassification):
            spec = TaskSpec("digit", 5, kind="backwards")

        with pytest.raises(AssertionError, match="perfect outputs"):
            Kind().test_perfect_outputs_reach_each_metrics_best()

        class Dataset(DatasetSuite):
            config = {"name": "leaky"}

        Dataset().test_load_returns_splits_that_validate(dict(Dataset.config))
        with pytest.raises(AssertionError, match="5 examples of the val split"):
            Dataset().test_splits_share_no_example(dict(Dataset.config))


class _AdapterNetwork(PerTaskHeads):
    """A toy architecture: the backbone, then a dense adapter every task reads, then a head per
    task. Subclasses break its declaration in one way each."""

    architecture = "adapter"

    def __init__(self, parts, preprocessing=None, **options):
        super().__init__(parts, preprocessing, **options)
        self.backbone = self.parts.make_backbone()
        self.adapter = keras.layers.Dense(4, name="adapter")
        self.make_heads()

    def features(self, inputs, training=False):
        x = self.adapter(self.backbone(self.preprocess(inputs), training=training))
        return {t: x for t in self.parts.task_names}

    def shared_layers(self):
        return [self.backbone, self.adapter]

    def task_layers(self, task):
        return [self.heads[task]]


class _AdapterForgotten(_AdapterNetwork):
    """Broken: the adapter, which every task reads, is declared nowhere."""

    def shared_layers(self):
        return [self.backbone]


class _AdapterOfOneTask(_AdapterNetwork):
    """Broken: the adapter, which every task reads, is declared the first task's own."""

    def shared_layers(self):
        return [self.backbone]

    def task_layers(self, task):
        first = task == self.parts.task_names[0]
        return [self.heads[task], *([self.adapter] if first else [])]


class _ClaimsOneRepresentation(_AdapterNetwork):
    """Broken: claims the one representation feature-level methods need, but returns one per
    task."""

    shared_representation = True


def test_the_architecture_suite_fails_architectures_that_break_their_contract():
    with registry.isolated():
        for name, factory in (
            ("adapter", _AdapterNetwork),
            ("adapter_forgotten", _AdapterForgotten),
            ("adapter_of_one_task", _AdapterOfOneTask),
            ("claims_one_representation", _ClaimsOneRepresentation),
        ):
            mtbench.register("architecture", name)(factory)

        class Sound(ArchitectureSuite):
            config = {"name": "adapter"}

        # the toy itself passes, so the failures below are the breakages'
        Sound().test_shared_and_task_variables_hold_every_trainable_variable_once()
        Sound().test_shared_variables_are_exactly_those_several_tasks_reach()
        Sound().test_shared_representation_is_what_check_weighting_relies_on()

        class Forgotten(ArchitectureSuite):
            config = {"name": "adapter_forgotten"}

        with pytest.raises(AssertionError, match=r"neither shared nor task variables: .*adapter"):
            Forgotten().test_shared_and_task_variables_hold_every_trainable_variable_once()

        class OfOneTask(ArchitectureSuite):
            config = {"name": "adapter_of_one_task"}

        OfOneTask().test_shared_and_task_variables_hold_every_trainable_variable_once()
        with pytest.raises(
            AssertionError,
            match=r"adapter/kernel is declared a task variable, but the outputs of tasks "
            r"\['label', 'other', 'target'\] reach it",
        ):
            OfOneTask().test_shared_variables_are_exactly_those_several_tasks_reach()

        class OneRepresentation(ArchitectureSuite):
            config = {"name": "claims_one_representation"}

        with pytest.raises(AssertionError, match="features\\(\\) returned a dict"):
            OneRepresentation().test_shared_representation_is_what_check_weighting_relies_on()

        class Refusals(ArchitectureSuite):  # claims a refusal the plugin does not make
            config = {"name": "mmoe", "num_experts": 2, "expert_stages": 1}
            invalid_options = [({"num_experts": 3}, "num_experts")]

        with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
            Refusals().test_refuses_invalid_options()
