"""The multitask model: the dataset's preprocessing, one shared backbone, one head layer that
predicts every task."""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import keras
import tensorflow as tf

from mtbench.data import TaskHierarchy, TaskSpec


@keras.saving.register_keras_serializable(package="mtbench")
class MultiTaskModel(keras.Model):
    """Inputs -> (preprocessing) -> shared features -> a dict of float32 outputs per task.

    Args:
        backbone: A Keras layer from preprocessed inputs to a feature tensor.
        heads: A Keras layer from features to ``{task: outputs}``.
        preprocessing: The layer the dataset declares (:meth:`mtbench.inputs.Inputs.layer`), or
            ``None``: floating inputs are cast to the compute dtype, others pass as they are.

    Example:
        >>> model = MultiTaskModel(SeedCNN(), DenseHeads(tasks=[TaskSpec("fine", 100)]),
        ...                        ImagePreprocessing(divisor=255.0))
        >>> model(images)["fine"].shape
        TensorShape([batch, 100])
    """

    def __init__(
        self,
        backbone: keras.layers.Layer,
        heads: keras.layers.Layer,
        preprocessing: keras.layers.Layer | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.heads = heads
        self.preprocessing = preprocessing

    def preprocess(self, inputs: Any) -> Any:
        if self.preprocessing is not None:
            return self.preprocessing(inputs)
        return tf.nest.map_structure(self._cast, inputs)

    def _cast(self, x: tf.Tensor) -> tf.Tensor:
        return tf.cast(x, self.compute_dtype) if x.dtype.is_floating else x

    def features(self, inputs: Any, training: bool = False) -> tf.Tensor:
        return self.backbone(self.preprocess(inputs), training=training)

    def predict_heads(self, features: tf.Tensor, training: bool = False) -> dict[str, tf.Tensor]:
        outputs = self.heads(features, training=training)
        return {task: tf.cast(value, tf.float32) for task, value in outputs.items()}

    def call(self, inputs: Any, training: bool = False) -> dict[str, tf.Tensor]:
        return self.predict_heads(self.features(inputs, training=training), training=training)

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
    hierarchy: TaskHierarchy | None = None,
    precision: str = "float32",
    seed: int = 0,
    preprocessing: keras.layers.Layer | None = None,
) -> MultiTaskModel:
    """A built model from backbone and head plugin configs (``{"name": ..., options}`` or a
    composed config node), initialised from ``seed`` under the ``precision`` dtype policy.

    The backbone is created first, from the global random state that ``seed`` sets, so its
    weights do not depend on the tasks. The head gets ``seed`` too, if it declares that
    argument, and derives each task's initialisers from it and the task's name
    (:func:`task_seed`), so a task's head starts the same in a single-task and a joint model. A
    head that declares ``hierarchy`` gets the dataset's (``None`` when it declares none).

    Args:
        example: One batch of inputs (an array or a dict of arrays, first axis the batch), used
            to build the model's weights.

    Example:
        >>> model = build_model({"name": "seed_cnn"}, {"name": "dense"}, [TaskSpec("fine", 100)],
        ...                     np.zeros([1, 32, 32, 3], np.uint8))
    """
    from mtbench import registry

    keras.utils.set_random_seed(seed)
    head_name = head["name"] if isinstance(head, dict) else head.name
    factory = registry.get("head", str(head_name)).factory
    head_extra: dict[str, Any] = {"tasks": list(tasks)}
    if _accepts(factory, "seed"):
        head_extra["seed"] = seed  # heads written before `seed` existed keep working
    if _accepts(factory, "hierarchy"):
        head_extra["hierarchy"] = hierarchy
    with dtype_policy(precision):
        model = MultiTaskModel(
            registry.build("backbone", backbone),
            registry.build("head", head, **head_extra),
            preprocessing,
        )
        model(tf.nest.map_structure(tf.constant, example))
    return model


def _accepts(factory: Any, argument: str) -> bool:
    """Whether ``factory`` declares the parameter ``argument`` (``**kwargs`` does not count: a
    Keras layer's refuses keywords it does not know)."""
    import inspect

    try:
        return argument in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
