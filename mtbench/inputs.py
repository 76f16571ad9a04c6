"""How a dataset's inputs reach the backbone: preprocessing, augmentation, test-time views.

The core applies what the dataset declares in ``DatasetSplits.inputs`` and nothing else:

- :meth:`Inputs.layer` builds a Keras layer placed in the model before the backbone (scaling,
  normalisation with training statistics), so that a saved model carries its preprocessing;
- :meth:`Inputs.augment` changes a training batch in the input pipeline (seeded, stateless);
- :meth:`Inputs.views` gives the views of an evaluation batch whose outputs are averaged
  (test-time augmentation such as flip averaging).

Without a declaration (``inputs=None``: molecules, tabular features, any float arrays) inputs
reach the backbone as they are, floating arrays cast to the compute dtype. :class:`ImageInputs`
is the declaration images use: the reference CIFAR-100 dataset's recipe (scale uint8 pixels to
[0, 1], optional per-channel standardisation, crop/flip/cutout, flip averaging) lives here as a
reusable helper, chosen by the dataset, never applied by the core on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf


class Inputs:
    """The default declaration: no preprocessing, no augmentation, one view."""

    def layer(self, train_x: Any) -> keras.layers.Layer | None:
        """A preprocessing layer fitted on the training inputs (``None``: none)."""
        return None

    @property
    def augments(self) -> bool:
        return False

    def augment(self, x: Any, seed: tf.Tensor) -> Any:
        """Augment a training batch; ``seed`` is a shape-[2] int tensor (stateless ops only)."""
        return x

    def views(self, x: Any) -> list[Any]:
        """The views of an evaluation batch whose outputs are averaged."""
        return [x]

    def describe(self) -> dict[str, Any]:
        return {"type": type(self).__name__}


@dataclass(frozen=True)
class Augmentation:
    """Label-preserving image augmentation on uint8 batches.

    Args:
        crop_padding: Random crop of the original size after zero-padding every side by this many
            pixels (0: off).
        horizontal_flip: Flip each image left-right with probability 1/2.
        cutout: Side of a square (clipped at the borders) set to zero at a random position
            (0: off), DeVries and Taylor 2017.
    """

    crop_padding: int = 0
    horizontal_flip: bool = False
    cutout: int = 0

    def __post_init__(self) -> None:
        for name in ("crop_padding", "cutout"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"augment.{name}={value} is out of range: it must be >= 0")

    @property
    def enabled(self) -> bool:
        return bool(self.crop_padding or self.horizontal_flip or self.cutout)

    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Augment a batch ``[B, H, W, C]``; ``seed`` is a shape-[2] int tensor."""
        seeds = tf.random.experimental.stateless_split(seed, 3)
        if self.crop_padding:
            images = _random_crop(images, self.crop_padding, seeds[0])
        if self.horizontal_flip:
            flip = tf.random.stateless_uniform([tf.shape(images)[0]], seeds[1]) < 0.5
            images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
        if self.cutout:
            images = _cutout(images, self.cutout, seeds[2])
        return images


def _random_crop(images: tf.Tensor, padding: int, seed: tf.Tensor) -> tf.Tensor:
    batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    offsets = tf.random.stateless_uniform(
        [batch, 2], seed, minval=0, maxval=2 * padding + 1, dtype=tf.int32
    )
    rows = offsets[:, :1] + tf.range(height)[None, :]  # [B, H]
    cols = offsets[:, 1:] + tf.range(width)[None, :]  # [B, W]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, cols, axis=2, batch_dims=1)


def _cutout(images: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
    batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    centers = tf.random.stateless_uniform([batch, 2], seed, minval=0, maxval=1)
    cy = tf.cast(centers[:, 0] * tf.cast(height, tf.float32), tf.int32)[:, None]
    cx = tf.cast(centers[:, 1] * tf.cast(width, tf.float32), tf.int32)[:, None]
    y = tf.range(height)[None, :]
    x = tf.range(width)[None, :]
    in_rows = (y >= cy - size // 2) & (y < cy - size // 2 + size)  # [B, H]
    in_cols = (x >= cx - size // 2) & (x < cx - size // 2 + size)  # [B, W]
    mask = in_rows[:, :, None] & in_cols[:, None, :]
    return tf.where(mask[..., None], tf.zeros_like(images), images)


def channel_statistics(
    images: np.ndarray, divisor: float = 255.0
) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of images divided by ``divisor``."""
    pixels = images.reshape(-1, images.shape[-1])
    mean = np.zeros(pixels.shape[1])
    square = np.zeros(pixels.shape[1])
    for start in range(0, len(pixels), 1 << 22):  # in chunks: no float copy of the whole set
        chunk = pixels[start : start + (1 << 22)].astype(np.float64) / divisor
        mean += chunk.sum(axis=0)
        square += (chunk**2).sum(axis=0)
    mean /= len(pixels)
    std = np.sqrt(np.maximum(square / len(pixels) - mean**2, 1e-12))
    return mean.tolist(), std.tolist()


@keras.saving.register_keras_serializable(package="mtbench")
class ImagePreprocessing(keras.layers.Layer):
    """Images -> float: divided by ``divisor`` (if set), minus ``mean``, over ``std`` (per channel,
    if set), computed in float32 and cast to the compute dtype.

    Args:
        divisor: 255 for uint8 pixels; ``None`` for float images already in their range.
        mean, std: Per-channel statistics in the divided units (``None``: none).
    """

    def __init__(
        self,
        divisor: float | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("autocast", False)  # float images stay float32 until the end
        super().__init__(**kwargs)
        self.divisor = None if divisor is None else float(divisor)
        self.mean = None if mean is None else [float(m) for m in mean]
        self.std = None if std is None else [float(s) for s in std]

    def call(self, images: tf.Tensor) -> tf.Tensor:
        x = tf.cast(images, tf.float32)
        if self.divisor is not None:
            x = x / self.divisor
        if self.mean is not None:
            x = x - tf.constant(self.mean, tf.float32)
        if self.std is not None:
            x = x / tf.constant(self.std, tf.float32)
        return tf.cast(x, self.compute_dtype)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(divisor=self.divisor, mean=self.mean, std=self.std)
        config.pop("autocast", None)
        return config


@dataclass(frozen=True)
class ImageInputs(Inputs):
    """Images ``[N, H, W, C]`` (uint8 or float).

    Args:
        divisor: Pixels are divided by this (255 for uint8; ``None`` for float images already
            scaled).
        normalize: Standardise each channel with the training split's mean and deviation.
        augmentation: Label-preserving augmentation of training batches.
        eval_flip: Average the outputs of each image and its left-right mirror at evaluation
            (for data whose labels do not change under flips).
    """

    divisor: float | None = 255.0
    normalize: bool = False
    augmentation: Augmentation = field(default_factory=Augmentation)
    eval_flip: bool = False

    def layer(self, train_x: Any) -> keras.layers.Layer:
        mean = std = None
        if self.normalize:
            mean, std = channel_statistics(np.asarray(train_x), self.divisor or 1.0)
        return ImagePreprocessing(self.divisor, mean, std, name="preprocessing")

    @property
    def augments(self) -> bool:
        return self.augmentation.enabled

    def augment(self, x: Any, seed: tf.Tensor) -> Any:
        return self.augmentation(x, seed) if self.augmentation.enabled else x

    def views(self, x: Any) -> list[Any]:
        return [x, tf.reverse(x, axis=[2])] if self.eval_flip else [x]

    def describe(self) -> dict[str, Any]:
        return {
            "type": "ImageInputs",
            "divisor": self.divisor,
            "normalize": self.normalize,
            "augmentation": {
                "crop_padding": self.augmentation.crop_padding,
                "horizontal_flip": self.augmentation.horizontal_flip,
                "cutout": self.augmentation.cutout,
            },
            "eval_flip": self.eval_flip,
        }
