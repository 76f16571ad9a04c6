"""The multitask model: the dataset's preprocessing, then an architecture of backbone and head
plugins that gives every task its outputs.

:class:`MultiTaskNetwork` is the contract every sharing architecture fulfils (the trainer and the
weighting methods read only it); :class:`MultiTaskModel` is hard parameter sharing, one backbone
and one head layer for every task, the ``hard_sharing`` architecture. The other architectures
are plugins (``architecture=<name>``, see :mod:`mtbench.architecture`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import keras
import tensorflow as tf

from mtbench.data import TaskHierarchy, TaskSpec


class MultiTaskNetwork(keras.Model):
    """Inputs -> (preprocessing) -> representation(s) -> a dict of float32 outputs per task.

    What an architecture declares, for the trainer and the weighting methods:

    - :meth:`features`: what the heads read, from the raw inputs. With
      :attr:`shared_representation` it is one tensor that every task's head reads (methods with
      ``gradient_of = "features"``, such as MGDA-UB and GradDrop, combine the per-task gradients
      of it); otherwise any structure :meth:`predict_heads` takes (e.g. one tensor per task).
    - :meth:`predict_heads`: the outputs of every task from :meth:`features`.
    - :attr:`shared_variables`: the trainable variables more than one task's loss reaches.
      Gradient-level methods combine the per-task gradients of exactly these.
    - :attr:`task_variables`: every other trainable variable (heads, gates, task experts); each
      is trained on the sum of the task losses, which for a variable only one task's loss
      reaches is that task's own gradient.

    Together the two lists hold every trainable variable once.

    Args:
        preprocessing: The layer the dataset declares (:meth:`mtbench.inputs.Inputs.layer`), or
            ``None``: floating inputs are cast to the compute dtype, others pass as they are.
    """

    #: Whether :meth:`features` is the one representation every task's head reads.
    shared_representation: ClassVar[bool] = False

    def __init__(self, preprocessing: keras.layers.Layer | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.preprocessing = preprocessing

    def preprocess(self, inputs: Any) -> Any:
        if self.preprocessing is not None:
            return self.preprocessing(inputs)
        return tf.nest.map_structure(self._cast, inputs)

    def _cast(self, x: tf.Tensor) -> tf.Tensor:
        return tf.cast(x, self.compute_dtype) if x.dtype.is_floating else x

    def features(self, inputs: Any, training: bool = False) -> Any:
        """What the heads read, from the raw inputs (see the class docstring)."""
        raise NotImplementedError

    def predict_heads(self, features: Any, training: bool = False) -> dict[str, tf.Tensor]:
        """Every task's outputs (float32) from :meth:`features`."""
        raise NotImplementedError

    def call(self, inputs: Any, training: bool = False) -> dict[str, tf.Tensor]:
        return self.predict_heads(self.features(inputs, training=training), training=training)

    @property
    def shared_variables(self) -> list[keras.Variable]:
        raise NotImplementedError

    @property
    def task_variables(self) -> list[keras.Variable]:
        raise NotImplementedError

    @staticmethod
    def as_float32(outputs: Mapping[str, Any]) -> dict[str, tf.Tensor]:
        return {task: tf.cast(value, tf.float32) for task, value in outputs.items()}


@keras.saving.register_keras_serializable(package="mtbench")
class MultiTaskModel(MultiTaskNetwork):
    """Hard parameter sharing: one backbone every task reads, one head layer that predicts every
    task from its features (the ``hard_sharing`` architecture).

    Args:
        backbone: A Keras layer from preprocessed inputs to a feature tensor.
        heads: A Keras layer from features to ``{task: outputs}``.
        preprocessing: See :class:`MultiTaskNetwork`.

    Example:
        >>> model = MultiTaskModel(SeedCNN(), DenseHeads(tasks=[TaskSpec("fine", 100)]),
        ...                        ImagePreprocessing(divisor=255.0))
        >>> model(images)["fine"].shape
        TensorShape([batch, 100])
    """

    shared_representation: ClassVar[bool] = True

    def __init__(
        self,
        backbone: keras.layers.Layer,
        heads: keras.layers.Layer,
        preprocessing: keras.layers.Layer | None = None,
        **kwargs: Any,
    ):
        super().__init__(preprocessing, **kwargs)
        self.backbone = backbone
        self.heads = heads

    @classmethod
    def from_parts(
        cls, parts: Any, preprocessing: keras.layers.Layer | None = None
    ) -> MultiTaskModel:
        """The hard-sharing model of :class:`~mtbench.architecture.ModelParts`: a new backbone,
        then a new head layer for every task (in that order, which fixes their initial weights
        for a seed)."""
        return cls(parts.make_backbone(), parts.make_heads(), preprocessing)

    def features(self, inputs: Any, training: bool = False) -> tf.Tensor:
        return self.backbone(self.preprocess(inputs), training=training)

    def predict_heads(self, features: tf.Tensor, training: bool = False) -> dict[str, tf.Tensor]:
        return self.as_float32(self.heads(features, training=training))

    @property
    def shared_variables(self) -> list[keras.Variable]:
        return list(self.backbone.trainable_variables)

    @property
    def task_variables(self) -> list[keras.Variable]:
        return list(self.heads.trainable_variables)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            heads=keras.saving.serialize_keras_object(self.heads),
            preprocessing=None
            if self.preprocessing is None
            else keras.saving.serialize_keras_object(self.preprocessing),
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MultiTaskModel:
        config = dict(config)
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone"))
        heads = keras.saving.deserialize_keras_object(config.pop("heads"))
        preprocessing = config.pop("preprocessing", None)
        if preprocessing is not None:
            preprocessing = keras.saving.deserialize_keras_object(preprocessing)
        return cls(backbone, heads, preprocessing, **config)


def task_seed(seed: int | None, task: str, part: str) -> int | None:
    """The initialiser seed of one part of one task's head: a function of the run's ``seed``,
    the task's name and the part's name only (``None`` without a seed).

    A head plugin that seeds each layer of task ``t`` with ``task_seed(seed, t, layer)`` starts
    ``t``'s layers from the same weights in the single-task run of ``t`` and in the joint run,
    whatever the other tasks and their order. Keras's unseeded initialisers draw their seeds in
    the order the layers are created, which differs between those runs.

    Example:
        >>> keras.layers.Dense(100, kernel_initializer=keras.initializers.GlorotUniform(
        ...     seed=task_seed(0, "fine", "logits")))
    """
    if seed is None:
        return None
    return zlib.crc32(f"{int(seed)}/{task}/{part}".encode()) & 0x7FFFFFFF


@contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Build layers under a Keras dtype policy, restoring the previous one afterwards."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_model(
    backbone: Any,
    head: Any,
    tasks: Sequence[TaskSpec],
    example: Any,
    *,
    architecture: Any = None,
    hierarchy: TaskHierarchy | None = None,
    precision: str = "float32",
    seed: int = 0,
    preprocessing: keras.layers.Layer | None = None,
) -> MultiTaskNetwork:
    """A built model from backbone, head and architecture plugin configs (``{"name": ...,
    options}`` or a composed config node), initialised from ``seed`` under the ``precision``
    dtype policy.

    The architecture (``None``: hard sharing, :meth:`MultiTaskModel.from_parts`, which the
    ``hard_sharing`` plugin builds too) creates the backbone(s) first, from the global
    random state that ``seed`` sets, so their weights do not depend on the tasks. The head gets
    ``seed`` too, if it declares that argument, and derives each task's initialisers from it and
    the task's name (:func:`task_seed`), so a task's head starts the same in a single-task and a
    joint model. A head that declares ``hierarchy`` gets the dataset's (``None`` when it declares
    none).

    Args:
        example: One batch of inputs (an array or a dict of arrays, first axis the batch), used
            to build the model's weights.

    Example:
        >>> model = build_model({"name": "seed_cnn"}, {"name": "dense"}, [TaskSpec("fine", 100)],
        ...                     np.zeros([1, 32, 32, 3], np.uint8), architecture={"name": "mmoe"})
    """
    from mtbench import registry
    from mtbench.architecture import ModelParts

    keras.utils.set_random_seed(seed)
    example = tf.nest.map_structure(tf.constant, example)
    with dtype_policy(precision):
        inputs = example if preprocessing is None else preprocessing(example)
        parts = ModelParts.of(backbone, head, tasks, inputs, hierarchy=hierarchy, seed=seed)
        if architecture is None:  # hard sharing: mtbench's own default, the single-task network
            model = MultiTaskModel.from_parts(parts, preprocessing)
        else:
            model = registry.build(
                "architecture", architecture, parts=parts, preprocessing=preprocessing
            )
        if not isinstance(model, MultiTaskNetwork):
            name = registry.plain_config(architecture)[registry.NAME_FIELD]
            raise registry.PluginError(
                f"architecture '{name}' built a {type(model).__name__}, not a "
                "mtbench.model.MultiTaskNetwork"
            )
        model(example)
    return model
