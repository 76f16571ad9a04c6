"""The molecule backbones ``schnet`` and ``descriptor_mlp``: the conformance suite, invariance under
permutation, padding, rotation and translation, the cutoff, agreement with a NumPy reference,
and a whole model on padded molecules that trains, saves and reloads (also in mixed bfloat16);
their stages compose to them, pass the state mtbench.architecture documents, and left the
backbones computing exactly what they computed before they had stages, from the same initial
weights.
"""

from __future__ import annotations

import hashlib
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtbench.architecture import FEATURES, MASK, ModelParts
from mtbench.model import build_model, dtype_policy
from mtbench.tasks import TaskSpec
from mtbench_plugins.backbones.descriptor_mlp import DescriptorMLP
from mtbench_plugins.backbones.schnet import (
    NUM_ELEMENTS,
    SchNet,
    molecule_geometry,
    shifted_softplus,
)
from mtbench_plugins.datasets.qm9 import MoleculePreprocessing

SMALL_SCHNET = {"hidden": 8, "filters": 6, "interactions": 2, "rbf": 7, "cutoff": 4.0}
SMALL_DESCRIPTOR = {"bins": 6, "max_distance": 4.0, "hidden_units": [8]}


# ------------------------------------------------------------------------------- molecules
METHANE = (
    [6, 1, 1, 1, 1],
    [[-0.0127, 1.0858, 0.0080], [0.0022, -0.0060, 0.0020], [1.0117, 1.4638, 0.0003],
     [-0.5408, 1.4475, -0.8766], [-0.5238, 1.4379, 0.9064]],
)  # fmt: skip
WATER = ([8, 1, 1], [[-0.0344, 0.9775, 0.0076], [0.0648, 0.0206, 0.0015], [0.8718, 1.3008, 0.0007]])


def _random_molecule(rng: np.random.Generator, atoms: int) -> tuple[list[int], np.ndarray]:
    z = rng.choice([1, 6, 7, 8, 9], atoms).tolist()
    return z, rng.normal(scale=1.5, size=(atoms, 3))


def _molecules(seed: int = 0) -> list[tuple[list[int], np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [METHANE, WATER, _random_molecule(rng, 9), _random_molecule(rng, 4)]


def _pad(molecules, atoms: int = 10, garbage: bool = False, seed: int = 1) -> dict[str, np.ndarray]:
    """A batch padded to ``atoms``; with ``garbage``, padded slots hold random atoms and
    coordinates (masked out)."""
    rng = np.random.default_rng(seed)
    z = np.zeros((len(molecules), atoms), np.int32)
    r = np.zeros((len(molecules), atoms, 3), np.float32)
    mask = np.zeros((len(molecules), atoms), bool)
    if garbage:
        z[:] = rng.integers(1, 10, z.shape)
        r[:] = rng.normal(size=r.shape)
    for i, (zi, ri) in enumerate(molecules):
        n = len(zi)
        z[i, :n], r[i, :n], mask[i, :n] = zi, ri, True
    return {"z": z, "r": r, "mask": mask}


def _backbone(name: str):
    """A built backbone whose weights, biases included, are random (as after training: biases
    start at zero, which would hide a padded atom that reaches the readout)."""
    keras.utils.set_random_seed(0)
    layer = (
        SchNet(**SMALL_SCHNET, readout="sum_mean")
        if name == "schnet"
        else DescriptorMLP(**SMALL_DESCRIPTOR)
    )
    layer(_pad(_molecules()[:1]))
    rng = np.random.default_rng(4)
    layer.set_weights([rng.normal(scale=0.5, size=w.shape) for w in layer.get_weights()])
    return layer


def _features(layer, batch) -> np.ndarray:
    return layer({k: tf.constant(v) for k, v in batch.items()}).numpy()


def _close(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    # float32 round-off of sums over a few atoms, relative to the features' magnitude
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * scale, err_msg=what)


BACKBONES = ["schnet", "descriptor_mlp"]


@pytest.mark.parametrize("name", BACKBONES)
def test_permuting_the_atoms_changes_nothing(name):
    layer = _backbone(name)
    molecules = _molecules()
    expected = _features(layer, _pad(molecules))
    rng = np.random.default_rng(2)
    shuffled = []
    for z, r in molecules:
        order = rng.permutation(len(z))
        shuffled.append(([z[i] for i in order], np.asarray(r)[order]))
    _close(_features(layer, _pad(shuffled)), expected, "atoms permuted")


@pytest.mark.parametrize("name", BACKBONES)
def test_more_padding_or_junk_in_padded_slots_changes_nothing(name):
    layer = _backbone(name)
    molecules = _molecules()
    expected = _features(layer, _pad(molecules, atoms=10))
    _close(_features(layer, _pad(molecules, atoms=16)), expected, "padded to 16 atoms")
    _close(_features(layer, _pad(molecules, garbage=True)), expected, "junk in padded slots")


def _rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@pytest.mark.parametrize("name", BACKBONES)
def test_rotating_or_translating_the_molecule_changes_nothing(name):
    layer = _backbone(name)
    molecules = _molecules()
    expected = _features(layer, _pad(molecules))
    rotation, shift = _rotation(3), np.array([3.0, -1.5, 7.0])
    moved = [(z, np.asarray(r) @ rotation.T + shift) for z, r in molecules]
    _close(_features(layer, _pad(moved)), expected, "rotated and translated")
    mirrored = [(z, -np.asarray(r)) for z, r in molecules]  # distances keep: so do the features
    _close(_features(layer, _pad(mirrored)), expected, "inverted")


@pytest.mark.parametrize("name", BACKBONES)
def test_changing_a_distance_changes_the_features(name):
    """The invariance tests above would pass for a backbone blind to geometry: this one not."""
    layer = _backbone(name)
    z, r = METHANE
    stretched = np.array(r)
    stretched[2] = stretched[1] + 1.6 * (stretched[2] - stretched[1])  # a C-H bond of 1.7 A
    a, b = _features(layer, _pad([METHANE])), _features(layer, _pad([(z, stretched)]))
    assert np.abs(a - b).max() > 1e-3 * np.abs(a).max()


def test_schnet_atoms_beyond_the_cutoff_do_not_interact():
    """With a sum readout, a molecule plus an atom farther than the cutoff from every atom gives
    the sum of their features apart."""
    keras.utils.set_random_seed(0)
    layer = SchNet(**SMALL_SCHNET, readout="sum")
    z, r = METHANE
    far = np.array([[0.0, 20.0, 0.0]])  # > cutoff (4 A) from every methane atom
    together = _features(layer, _pad([(z + [8], np.vstack([r, far]))]))
    apart = _features(layer, _pad([METHANE])) + _features(layer, _pad([([8], far)]))
    _close(together, apart, "an oxygen atom beyond the cutoff")


def _reference_schnet(layer: SchNet, z: list[int], r: np.ndarray) -> np.ndarray:
    """SchNet of one molecule by loops over atoms (NumPy, float64), from the layer's weights."""
    ssp = np.vectorize(lambda x: np.logaddexp(0.0, x) - np.log(2.0))
    dense = lambda d, x: x @ d.kernel.numpy() + (d.bias.numpy() if d.use_bias else 0.0)  # noqa: E731
    n = len(z)
    h = layer.embeddings.numpy()[z].astype(np.float64)
    centres = np.linspace(0.0, layer.cutoff, layer.rbf)
    width = layer.cutoff / (layer.rbf - 1)
    for block in layer.blocks:
        x = dense(block.atoms_in, h)
        y = np.zeros_like(x)
        for i in range(n):
            for j in range(n):
                d = np.linalg.norm(r[i] - r[j])
                if i == j or d >= layer.cutoff:
                    continue
                rbf = np.exp(-0.5 * ((d - centres) / width) ** 2)
                w = dense(block.filter2, ssp(dense(block.filter1, rbf)))
                y[i] += w * 0.5 * (np.cos(np.pi * d / layer.cutoff) + 1.0) * x[j]
        h = h + dense(block.atoms_out2, ssp(dense(block.atoms_out1, y)))
    atoms = ssp(dense(layer.atomwise, h))
    return np.concatenate([atoms.sum(0), atoms.mean(0)])


def test_schnet_matches_a_reference_written_atom_by_atom():
    layer = _backbone("schnet")
    molecules = _molecules()
    features = _features(layer, _pad(molecules))
    for i, (z, r) in enumerate(molecules):
        expected = _reference_schnet(layer, z, np.asarray(r, np.float64))
        _close(features[i], expected, f"molecule {i}")


def test_shifted_softplus_is_zero_at_zero():
    assert float(shifted_softplus(tf.constant(0.0))) == pytest.approx(0.0, abs=1e-7)


def test_descriptor_counts_atoms_and_histograms_each_pair_of_elements():
    layer = DescriptorMLP(elements=[1, 6, 8], bins=5, max_distance=4.0, hidden_units=[4])
    molecules = [METHANE, WATER]
    descriptor = layer.descriptor({k: tf.constant(v) for k, v in _pad(molecules).items()})
    centres, width = np.linspace(0.0, 4.0, 5), 1.0
    pairs = [(1, 1), (1, 6), (1, 8), (6, 6), (6, 8), (8, 8)]
    for row, (z, r) in zip(descriptor.numpy(), molecules, strict=True):
        expected = [z.count(e) for e in (1, 6, 8)]
        for a, b in pairs:  # each unordered pair of distinct atoms once
            histogram = np.zeros(5)
            for i in range(len(z)):
                for j in range(i + 1, len(z)):
                    if sorted((z[i], z[j])) == [a, b]:
                        d = np.linalg.norm(np.subtract(r[i], r[j]))
                        histogram += np.exp(-0.5 * ((d - centres) / width) ** 2)
            expected.extend(histogram)
        np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-6)
    assert descriptor.shape == (2, layer.descriptor_size) == (2, 3 + 6 * 5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"interactions": 0}, "interactions=0 must be at least 1"),
        ({"rbf": 1}, "rbf=1 must be at least 2"),
        ({"cutoff": 0.0}, "cutoff=0.0 must be > 0"),
        ({"readout": "max"}, "readout='max'; choose one of 'sum', 'mean', 'sum_mean'"),
    ],
)
def test_schnet_refuses_bad_options(options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SchNet(**options)


def test_descriptor_refuses_bad_options():
    with pytest.raises(ValueError, match="distinct atomic numbers"):
        DescriptorMLP(elements=[1, 1])
    with pytest.raises(ValueError, match="bins=1 must be at least 2"):
        DescriptorMLP(bins=1)


# --------------------------------------------------------------------------------- a whole model
@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("name", BACKBONES)
def test_a_model_on_molecules_trains_saves_and_reloads(name, precision, tmp_path):
    """With the dataset's preprocessing layer (float32 coordinates under mixed precision), one
    Adam step lowers the loss of a batch, and the saved model reloads with the same outputs."""
    config = {"name": name, **(SMALL_SCHNET if name == "schnet" else SMALL_DESCRIPTOR)}
    tasks = [TaskSpec("energy", kind="regression"), TaskSpec("dipole", kind="regression")]
    batch = _pad(_molecules())
    model = build_model(
        config, {"name": "dense"}, tasks, batch, precision=precision,
        preprocessing=MoleculePreprocessing(name="preprocessing"),
    )  # fmt: skip
    inputs = {k: tf.constant(v) for k, v in batch.items()}
    assert all(v.dtype == tf.float32 for v in model.preprocess(inputs).values())
    targets = {"energy": tf.constant([[1.0], [-1.0], [0.5], [0.0]]), "dipole": tf.ones([4, 1])}
    optimizer = keras.optimizers.Adam(1e-2)

    def loss() -> tf.Tensor:
        outputs = model(inputs, training=True)
        return tf.add_n([tf.reduce_mean(tf.square(outputs[t] - targets[t])) for t in targets])

    losses = []
    for _ in range(5):
        with tf.GradientTape() as tape:
            value = loss()
        grads = tape.gradient(value, model.trainable_variables)
        assert all(g is not None for g in grads)
        optimizer.apply(grads, model.trainable_variables)
        losses.append(float(value))
    assert losses[-1] < losses[0]
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    expected, actual = model(inputs), restored(inputs)
    for task in ("energy", "dipole"):
        np.testing.assert_array_equal(actual[task].numpy(), expected[task].numpy())
    if precision == "mixed_bfloat16":
        assert restored.backbone.compute_dtype == "bfloat16"


# ---------------------------------------------------------------------------------- stages
def _tensors(batch: dict[str, np.ndarray]) -> dict[str, tf.Tensor]:
    return {k: tf.constant(v) for k, v in batch.items()}


@pytest.mark.parametrize("name", BACKBONES)
def test_the_stages_compose_to_the_backbone_and_pass_the_documented_state(name):
    layer = _backbone(name)
    stages = layer.stages()
    assert stages == layer.stages()  # the same layers every time
    assert len(stages) == (2 + 2 if name == "schnet" else 1 + 1)  # SMALL_*: 2 blocks, 1 layer
    batch = _tensors(_pad(_molecules(), atoms=12))
    config = (
        {"name": name, **SMALL_SCHNET, "readout": "sum_mean"}
        if name == "schnet"
        else {"name": name, **SMALL_DESCRIPTOR}
    )
    parts = ModelParts.of(config, {"name": "dense"}, [TaskSpec("y", 2)], batch)
    shapes = [s.output_shape for s in parts.stages("test")]
    for training in (False, True):
        x, states = batch, []
        for stage in stages:
            x = stage(x, training=training)
            states.append(x)
        if not training:
            np.testing.assert_array_equal(x.numpy(), layer(batch, training=False).numpy())
        seen = [
            {k: (None, *v.shape[1:]) for k, v in s.items()}
            if isinstance(s, dict)
            else (None, *s.shape[1:])
            for s in states
        ]
        assert seen == shapes
    if name == "descriptor_mlp":
        assert all(not isinstance(s, dict) for s in states)
        return
    atoms = batch["mask"].numpy()
    first = states[0]
    assert sorted(first) == sorted([FEATURES, MASK, "rbf", "cutoff"])
    np.testing.assert_array_equal(first[MASK].numpy(), atoms.astype(np.float32))
    for state in states[:-1]:
        assert sorted(state) == sorted(first)
        for key in (MASK, "rbf", "cutoff"):  # context: passed on unchanged
            np.testing.assert_array_equal(state[key].numpy(), first[key].numpy())
        assert not state[FEATURES].numpy()[~atoms].any()  # padded atoms hold zeros


def test_stages_taken_from_a_molecule_backbone_build_only_their_variables():
    batch = _tensors(_pad(_molecules()))
    config = {"name": "schnet", **SMALL_SCHNET}
    stages = ModelParts.of(config, {"name": "dense"}, [TaskSpec("y", 2)], batch).stages("test")
    last = stages[-1]
    last.layer.build(last.input_shape)
    assert [v.name for v in last.layer.variables] == ["kernel", "bias"]  # the atom-wise layer
    assert all(not s.layer.variables for s in stages[:-1])


# ------------------------------------------- the same backbones as before they had stages
def _schnet_before_stages(layer: SchNet, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
    """``SchNet.call`` as it was before the backbone had stages (commit 519901a), on the layer's
    weights, with one change since: the floating inputs are no longer cast to the compute dtype
    (``autocast=False``), so under a mixed policy the distances come from float32 coordinates
    (with the cast, bfloat16 coordinates moved these outputs by up to 2 %)."""
    compute = layer.compute_dtype
    z, mask, distances, pairs = molecule_geometry(inputs)
    centres = tf.linspace(0.0, layer.cutoff, layer.rbf)
    width = layer.cutoff / (layer.rbf - 1)
    rbf = tf.exp(-0.5 * tf.square((distances[..., None] - centres) / width))
    inside = tf.cast(distances < layer.cutoff, tf.float32)
    cutoff = 0.5 * (tf.cos(math.pi * distances / layer.cutoff) + 1.0) * inside * pairs
    rbf, cutoff = tf.cast(rbf, compute), tf.cast(cutoff, compute)
    atoms = tf.cast(mask, compute)[..., None]
    elements = tf.one_hot(tf.clip_by_value(z, 0, NUM_ELEMENTS - 1), NUM_ELEMENTS, dtype=compute)
    h = tf.matmul(elements, tf.cast(layer.embeddings, compute)) * atoms
    for block in layer.blocks:
        w = block.filter2(shifted_softplus(block.filter1(rbf))) * cutoff[..., None]
        y = tf.einsum("bijf,bjf->bif", w, block.atoms_in(h))
        h = (h + block.atoms_out2(shifted_softplus(block.atoms_out1(y)))) * atoms
    h = tf.cast(shifted_softplus(layer.atomwise(h)) * atoms, tf.float32)
    total = tf.reduce_sum(h, axis=1)
    count = tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)
    pooled = {
        "sum": total,
        "mean": total / count,
        "sum_mean": tf.concat([total, total / count], axis=-1),
    }[layer.readout]
    return tf.cast(pooled, compute)


def _descriptor_mlp_before_stages(layer: DescriptorMLP, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
    """``DescriptorMLP.call`` as it was before the backbone had stages (commit 519901a), without
    the cast of the floating inputs to the compute dtype (``autocast=False`` since)."""
    compute = layer.compute_dtype
    features = tf.math.log1p(layer.descriptor(inputs))
    return layer.mlp(tf.cast(features, compute), training=False)


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("name", BACKBONES)
def test_the_backbones_compute_exactly_what_they_did_before_they_had_stages(name, precision):
    keras.utils.set_random_seed(0)
    with dtype_policy(precision):
        layer = (
            SchNet(**SMALL_SCHNET, readout="sum_mean")
            if name == "schnet"
            else DescriptorMLP(**SMALL_DESCRIPTOR)
        )
    batch = _tensors(_pad(_molecules(), garbage=True))
    layer(batch)
    rng = np.random.default_rng(5)  # random biases too
    layer.set_weights([rng.normal(scale=0.5, size=w.shape) for w in layer.get_weights()])
    before = _schnet_before_stages if name == "schnet" else _descriptor_mlp_before_stages
    np.testing.assert_array_equal(
        layer(batch, training=False).numpy(), before(layer, batch).numpy()
    )


#: SHA-256 of the initial values of every variable, in order, of the hard-sharing models that
#: ``test_the_initial_weights_are_those_of_before_the_stages`` builds, written by mtbench at
#: commit 519901a (before the molecule backbones had stages) with Keras 3.15.1 and TensorFlow
#: 2.21.0, whose initialisers draw these values on any CPU.
INITIAL_WEIGHTS = {
    "schnet": "c24dcdb750c0dc0b6b4d4bd2e750dc49bd556aaa14874cde2180d2289817b82e",
    "descriptor_mlp": "0aff7e09968c1db9ad817bbf49379698c08a224d6bef253f259a1fe4bdd15380",
}


@pytest.mark.skipif(
    (keras.__version__, tf.__version__) != ("3.15.1", "2.21.0"),
    reason=f"the initial weights were recorded with Keras 3.15.1 and TensorFlow 2.21.0, whose "
    f"random initialisers may draw other values than Keras {keras.__version__} and TensorFlow "
    f"{tf.__version__}",
)
@pytest.mark.parametrize("name", BACKBONES)
def test_the_initial_weights_are_those_of_before_the_stages(name):
    config = (
        {"name": name, **SMALL_SCHNET, "readout": "sum_mean"}
        if name == "schnet"
        else {"name": name, **SMALL_DESCRIPTOR, "dropout": 0.3}
    )
    tasks = [TaskSpec("energy", kind="regression"), TaskSpec("dipole", kind="regression")]
    model = build_model(
        config, {"name": "dense"}, tasks, _pad(_molecules(), atoms=29), seed=3,
        preprocessing=MoleculePreprocessing(name="preprocessing"),
    )  # fmt: skip
    digest = hashlib.sha256()
    for variable in model.variables:
        digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
    assert digest.hexdigest() == INITIAL_WEIGHTS[name]
