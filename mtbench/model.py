"""The multitask model: one shared backbone, one head layer that predicts every task."""

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
    """Images (uint8 or float, HWC) -> shared features -> a dict of float32 logits per task.

    Args:
        backbone: A Keras layer from preprocessed images to a feature tensor.
        heads: A Keras layer from features to ``{task: logits}``.
        mean: Per-channel mean subtracted after scaling pixels to [0, 1] (``None``: none).
        std: Per-channel deviation divided by after that (``None``: none).

    Example:
        >>> model = MultiTaskModel(SeedCNN(), DenseHeads(tasks=[TaskSpec("fine", 100)]))
        >>> model(images)["fine"].shape
        TensorShape([batch, 100])
    """

    def __init__(
        self,
        backbone: keras.layers.Layer,
        heads: keras.layers.Layer,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.heads = heads
        self.mean = None if mean is None else [float(m) for m in mean]
        self.std = None if std is None else [float(s) for s in std]

    def preprocess(self, images: tf.Tensor) -> tf.Tensor:
        """uint8 pixels -> the compute dtype, scaled to [0, 1] and standardized if configured."""
        x = tf.cast(images, tf.float32) / 255.0
        if self.mean is not None:
            x = x - tf.constant(self.mean, tf.float32)
        if self.std is not None:
            x = x / tf.constant(self.std, tf.float32)
        return tf.cast(x, self.compute_dtype)

    def features(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.backbone(self.preprocess(images), training=training)

    def predict_heads(self, features: tf.Tensor, training: bool = False) -> dict[str, tf.Tensor]:
        logits = self.heads(features, training=training)
        return {task: tf.cast(value, tf.float32) for task, value in logits.items()}

    def call(self, images: tf.Tensor, training: bool = False) -> dict[str, tf.Tensor]:
        return self.predict_heads(self.features(images, training=training), training=training)

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
            mean=self.mean,
            std=self.std,
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MultiTaskModel:
        config = dict(config)
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone"))
        heads = keras.saving.deserialize_keras_object(config.pop("heads"))
        return cls(backbone, heads, **config)


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
    *,
    hierarchy: TaskHierarchy | None = None,
    precision: str = "float32",
    seed: int = 0,
    input_shape: Sequence[int] = (32, 32, 3),
    input_dtype: str = "uint8",
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> MultiTaskModel:
    """A built model from backbone and head plugin configs (``{"name": ..., options}`` or a
    composed config node), initialised from ``seed`` under the ``precision`` dtype policy.

    The backbone is created first, from the global random state that ``seed`` sets, so its
    weights do not depend on the tasks. The head gets ``seed`` too and derives each task's
    initialisers from it and the task's name (:func:`task_seed`), so a task's head starts the
    same in a single-task and a joint model.

    Example:
        >>> model = build_model({"name": "seed_cnn"}, {"name": "dense"}, [TaskSpec("fine", 100)])
    """
    from mtbench import registry

    keras.utils.set_random_seed(seed)
    head_extra: dict[str, Any] = {"tasks": list(tasks), "hierarchy": hierarchy}
    head_name = head["name"] if isinstance(head, dict) else head.name
    if _accepts(registry.get("head", str(head_name)).factory, "seed"):
        head_extra["seed"] = seed  # heads written before `seed` existed keep working
    with dtype_policy(precision):
        model = MultiTaskModel(
            registry.build("backbone", backbone),
            registry.build("head", head, **head_extra),
            mean=mean,
            std=std,
        )
        model(tf.zeros([1, *input_shape], tf.as_dtype(input_dtype)))
    return model


def _accepts(factory: Any, argument: str) -> bool:
    """Whether ``factory`` declares the parameter ``argument`` (``**kwargs`` does not count: a
    Keras layer's refuses keywords it does not know)."""
    import inspect

    try:
        return argument in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
