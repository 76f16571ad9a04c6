"""The ``schnet`` backbone: SchNet's continuous-filter convolutions on a padded molecule.

Schütt et al., "SchNet: A continuous-filter convolutional neural network for modeling quantum
interactions" (NeurIPS 2017) and "SchNet - A deep learning architecture for molecules and
materials" (J. Chem. Phys. 2018), in the form PyTorch Geometric's ``SchNet`` implements: an atom
embedding, interaction blocks whose filters are a network of Gaussian radial basis functions of the
interatomic distances (times a cosine cutoff), and an atom-wise layer pooled over the molecule.

Molecules come padded to a fixed number of atoms as ``{"z", "r", "mask"}`` (atomic numbers,
coordinates in Angstrom, which slots hold an atom). Padded slots take no part: they receive and
send no message and are left out of the pooling, so neither the order of the atoms nor the amount
of padding changes the features; only distances enter, so neither does a rotation or translation.
Distances and radial basis functions are computed in float32 under every dtype policy.

Stages (:meth:`SchNet.stages`, for architectures that cut the backbone; see
:mod:`mtbench.architecture`): the embedding, each interaction block, and the readout. Between
them passes a dict state: the atom features ``features`` [B, A, hidden] (what architectures mix,
gate and attend; 0 on padded slots), the atom mask ``mask`` [B, A], and the geometry the blocks
read, ``rbf`` [B, A, A, rbf] and ``cutoff`` [B, A, A], computed once by the embedding from the
coordinates and passed on unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from mtbench.architecture import FEATURES, MASK

#: Rows of the atom embedding: atomic numbers 0 (padding) to 118.
NUM_ELEMENTS = 119
READOUTS = ("sum", "mean", "sum_mean")


def shifted_softplus(x: tf.Tensor) -> tf.Tensor:
    """``softplus(x) - log 2``: SchNet's activation, 0 at 0."""
    return tf.nn.softplus(x) - tf.cast(math.log(2.0), x.dtype)


def float32_inputs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Layer keyword arguments with Keras's cast of floating inputs to the compute dtype turned
    off (unless the caller chose): a molecule layer reads the coordinates in float32 under a mixed
    policy, where bfloat16 would resolve distances of 4 Angstrom to about 0.03."""
    return {"autocast": False, **kwargs}


def molecule_geometry(
    inputs: dict[str, Any],
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """From ``{"z", "r", "mask"}``: atomic numbers (int32 [B, A]), the atom mask (float32
    [B, A]), the interatomic distances (float32 [B, A, A], Angstrom) and which pairs are two
    distinct atoms (float32 [B, A, A])."""
    z = inputs["z"]
    if z.dtype.is_floating:  # through a float32 preprocessing layer: exact integers
        z = tf.round(tf.cast(z, tf.float32))
    z = tf.cast(z, tf.int32)
    mask = tf.cast(inputs["mask"], tf.float32)
    r = tf.cast(inputs["r"], tf.float32)
    squared = tf.reduce_sum(tf.square(r[:, :, None, :] - r[:, None, :, :]), axis=-1)
    distances = tf.sqrt(tf.maximum(squared, 1e-12))
    atoms = tf.shape(mask)[1]
    pairs = mask[:, :, None] * mask[:, None, :] * (1.0 - tf.eye(atoms, dtype=tf.float32))
    return z * tf.cast(mask > 0, tf.int32), mask, distances, pairs


def expand_distances(
    distances: tf.Tensor, pairs: tf.Tensor, rbf: int, cutoff: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """Gaussian radial basis functions [B, A, A, rbf] (centred evenly on [0, cutoff], each as
    wide as their spacing) and the cosine cutoff [B, A, A] (0 for pairs that are not two
    distinct atoms), computed in float32."""
    centres = tf.linspace(0.0, cutoff, rbf)
    width = cutoff / (rbf - 1)
    basis = tf.exp(-0.5 * tf.square((distances[..., None] - centres) / width))
    inside = tf.cast(distances < cutoff, tf.float32)
    fade = 0.5 * (tf.cos(math.pi * distances / cutoff) + 1.0) * inside * pairs
    return basis, fade


def _atoms(state: dict[str, Any], dtype: Any) -> tf.Tensor:
    """The atom mask of a state as [B, A, 1] in ``dtype``."""
    return tf.cast(state[MASK], dtype)[..., None]


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class SchNetEmbedding(keras.layers.Layer):
    """SchNet's first stage: a padded molecule ``{"z", "r", "mask"}`` -> the state ``{features:
    embedding(z) [B, A, hidden] (0 on padded slots), mask [B, A], rbf [B, A, A, rbf], cutoff
    [B, A, A]}``, the geometry in the compute dtype (computed in float32).

    Args:
        hidden: Atom features.
        rbf: Gaussian radial basis functions per distance.
        cutoff: Distance in Angstrom where the filters fade to 0.
    """

    def __init__(self, hidden: int, rbf: int, cutoff: float, **kwargs: Any) -> None:
        super().__init__(**float32_inputs(kwargs))
        self.hidden, self.rbf, self.cutoff = int(hidden), int(rbf), float(cutoff)

    def build(self, input_shape: Any = None) -> None:
        # a weight looked up by a one-hot product, not a gather: its gradient is a dense tensor,
        # as gradient-level weighting methods (which flatten every gradient) need
        self.embeddings = self.add_weight(
            shape=(NUM_ELEMENTS, self.hidden),
            initializer=keras.initializers.RandomNormal(stddev=1.0),
            name="embeddings",
        )
        self.built = True

    def call(self, inputs: dict[str, Any], training: bool = False) -> dict[str, tf.Tensor]:
        z, mask, distances, pairs = molecule_geometry(inputs)
        rbf, cutoff = expand_distances(distances, pairs, self.rbf, self.cutoff)
        compute = self.compute_dtype
        rbf, cutoff = tf.cast(rbf, compute), tf.cast(cutoff, compute)
        atoms = tf.cast(mask, compute)[..., None]
        elements = tf.one_hot(tf.clip_by_value(z, 0, NUM_ELEMENTS - 1), NUM_ELEMENTS, dtype=compute)
        h = tf.matmul(elements, tf.cast(self.embeddings, compute)) * atoms
        return {FEATURES: h, MASK: mask, "rbf": rbf, "cutoff": cutoff}

    def compute_output_shape(self, input_shape: Any) -> dict[str, tuple[int | None, ...]]:
        atoms = tuple(input_shape["z"])[1]
        return {
            FEATURES: (None, atoms, self.hidden),
            MASK: (None, atoms),
            "rbf": (None, atoms, atoms, self.rbf),
            "cutoff": (None, atoms, atoms),
        }

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(hidden=self.hidden, rbf=self.rbf, cutoff=self.cutoff)
        return config


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class SchNetInteraction(keras.layers.Layer):
    """One interaction block, a stage of SchNet: the state's atom features ``h`` [B, A, hidden]
    -> ``(h + update(h)) * mask``, the rest of the state passed on unchanged.

    ``W_ij = Dense(ssp(Dense(rbf_ij))) * cutoff_ij``, ``y_i = sum_j W_ij * Dense(h_j)``, the
    update is ``Dense(ssp(Dense(y_i)))``.

    Args:
        hidden: Atom features.
        filters: Channels of the continuous filter.
        rbf: Radial basis functions per distance.
    """

    def __init__(self, hidden: int, filters: int, rbf: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hidden, self.filters, self.rbf = int(hidden), int(filters), int(rbf)
        dtype = self.dtype_policy
        self.filter1 = keras.layers.Dense(filters, name="filter1", dtype=dtype)
        self.filter2 = keras.layers.Dense(filters, name="filter2", dtype=dtype)
        self.atoms_in = keras.layers.Dense(filters, use_bias=False, name="atoms_in", dtype=dtype)
        self.atoms_out1 = keras.layers.Dense(hidden, name="atoms_out1", dtype=dtype)
        self.atoms_out2 = keras.layers.Dense(hidden, name="atoms_out2", dtype=dtype)

    def build(self, input_shape: Any = None) -> None:
        self.filter1.build((None, None, None, self.rbf))
        self.filter2.build((None, None, None, self.filters))
        self.atoms_in.build((None, None, self.hidden))
        self.atoms_out1.build((None, None, self.filters))
        self.atoms_out2.build((None, None, self.hidden))
        self.built = True

    def update(self, h: tf.Tensor, rbf: tf.Tensor, cutoff: tf.Tensor) -> tf.Tensor:
        """The update of the atom features ``h``, from ``rbf`` [B, A, A, rbf] and ``cutoff``
        [B, A, A] (0 for pairs that are not two distinct atoms), in the compute dtype."""
        w = self.filter2(shifted_softplus(self.filter1(rbf))) * cutoff[..., None]
        y = tf.einsum("bijf,bjf->bif", w, self.atoms_in(h))
        return self.atoms_out2(shifted_softplus(self.atoms_out1(y)))

    def call(self, state: dict[str, Any], training: bool = False) -> dict[str, tf.Tensor]:
        h = state[FEATURES]
        h = (h + self.update(h, state["rbf"], state["cutoff"])) * _atoms(state, self.compute_dtype)
        return {**state, FEATURES: h}

    def compute_output_shape(self, input_shape: Any) -> Any:
        return dict(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(hidden=self.hidden, filters=self.filters, rbf=self.rbf)
        return config


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class SchNetReadout(keras.layers.Layer):
    """SchNet's last stage: ``ssp(Dense(h))`` per atom, then the sum and/or mean over the
    molecule's atoms (pooled in float32), in the compute dtype.

    Args:
        hidden: Features per atom.
        readout: ``sum``, ``mean`` or ``sum_mean``.
    """

    def __init__(self, hidden: int, readout: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hidden, self.readout = int(hidden), str(readout)
        self.atomwise = keras.layers.Dense(self.hidden, name="atomwise", dtype=self.dtype_policy)

    def build(self, input_shape: Any = None) -> None:
        self.atomwise.build((None, None, self.hidden))
        self.built = True

    def call(self, state: dict[str, Any], training: bool = False) -> tf.Tensor:
        compute = self.compute_dtype
        atoms = _atoms(state, compute)
        h = tf.cast(shifted_softplus(self.atomwise(state[FEATURES])) * atoms, tf.float32)
        total = tf.reduce_sum(h, axis=1)  # pooled in float32
        mask = tf.cast(state[MASK], tf.float32)
        count = tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)
        pooled = {
            "sum": total,
            "mean": total / count,
            "sum_mean": tf.concat([total, total / count], axis=-1),
        }[self.readout]
        return tf.cast(pooled, compute)

    def compute_output_shape(self, input_shape: Any) -> tuple[int | None, ...]:
        return (None, 2 * self.hidden if self.readout == "sum_mean" else self.hidden)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(hidden=self.hidden, readout=self.readout)
        return config


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class SchNet(keras.layers.Layer):
    """Embedding(z) -> ``interactions`` x (h += Interaction(h, rbf(d), cutoff(d))) ->
    ssp(Dense(hidden)) per atom -> sum and/or mean over the molecule's atoms.

    Stages (:meth:`stages`): the embedding, each interaction block, the readout
    (``interactions + 2``); see the module docstring for the state between them.

    Args:
        hidden: Atom features (and features of the output, twice that for ``sum_mean``).
        filters: Channels of the continuous filters.
        interactions: Interaction blocks.
        rbf: Gaussian radial basis functions, centred evenly on [0, cutoff], each as wide as
            the spacing of the centres.
        cutoff: Distance in Angstrom beyond which atoms do not interact; the filters fade to 0
            there with a cosine, ``(cos(pi d / cutoff) + 1) / 2``.
        readout: ``sum`` (extensive properties such as energies), ``mean`` or ``sum_mean`` (both,
            concatenated) of the atoms' features.

    Example:
        >>> batch = {"z": np.array([[6, 1, 1, 1, 1, 0]]), "r": np.random.rand(1, 6, 3),
        ...          "mask": np.array([[1, 1, 1, 1, 1, 0]], bool)}
        >>> SchNet(hidden=32, filters=32, interactions=2)(batch).shape
        (1, 32)
    """

    def __init__(
        self,
        hidden: int = 64,
        filters: int = 64,
        interactions: int = 3,
        rbf: int = 50,
        cutoff: float = 10.0,
        readout: str = "sum",
        **kwargs: Any,
    ) -> None:
        super().__init__(**float32_inputs(kwargs))
        self.hidden, self.filters = int(hidden), int(filters)
        self.interactions, self.rbf = int(interactions), int(rbf)
        self.cutoff = float(cutoff)
        self.readout = str(getattr(readout, "value", readout))
        for name, value, low in (
            ("hidden", self.hidden, 1),
            ("filters", self.filters, 1),
            ("interactions", self.interactions, 1),
            ("rbf", self.rbf, 2),
        ):
            if value < low:
                raise ValueError(f"backbone.{name}={value} must be at least {low}")
        if not self.cutoff > 0:
            raise ValueError(f"backbone.cutoff={cutoff} must be > 0 (Angstrom)")
        if self.readout not in READOUTS:
            choices = ", ".join(repr(r) for r in READOUTS)
            raise ValueError(f"backbone.readout={self.readout!r}; choose one of {choices}")
        dtype = self.dtype_policy
        # created in this order (the embedding draws its initialiser's seed when it is built):
        # the same initial weights for a seed as before the backbone had stages
        self.embedding = SchNetEmbedding(
            self.hidden, self.rbf, self.cutoff, name="embedding", dtype=dtype
        )
        self.blocks = [
            SchNetInteraction(
                self.hidden, self.filters, self.rbf, name=f"interaction{i}", dtype=dtype
            )
            for i in range(1, self.interactions + 1)
        ]
        self.pool = SchNetReadout(self.hidden, self.readout, name="readout", dtype=dtype)

    @property
    def embeddings(self) -> keras.Variable:
        """The atom embedding, [119, hidden] (rows: atomic numbers)."""
        return self.embedding.embeddings

    @property
    def atomwise(self) -> keras.layers.Dense:
        """The readout's atom-wise dense layer."""
        return self.pool.atomwise

    def stages(self) -> list[keras.layers.Layer]:
        """The embedding, each interaction block, the readout; their composition is this
        backbone."""
        return [self.embedding, *self.blocks, self.pool]

    def build(self, input_shape: Any = None) -> None:
        shape = input_shape
        for stage in self.stages():
            stage.build(shape)
            shape = stage.compute_output_shape(shape)
        self.built = True

    def call(self, inputs: dict[str, Any], training: bool = False) -> tf.Tensor:
        x = inputs
        for stage in self.stages():
            x = stage(x, training=training)
        return x

    def compute_output_shape(self, input_shape: Any) -> tuple[int | None, ...]:
        return (None, 2 * self.hidden if self.readout == "sum_mean" else self.hidden)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            hidden=self.hidden,
            filters=self.filters,
            interactions=self.interactions,
            rbf=self.rbf,
            cutoff=self.cutoff,
            readout=self.readout,
        )
        return config
