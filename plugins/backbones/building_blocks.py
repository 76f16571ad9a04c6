"""What the reference backbones share: a fused batch normalization, He-initialised convolutions.

The reference backbones and heads create their sublayers with their own dtype policy
(``dtype=self.dtype_policy``): Keras restores a saved layer's policy, but the sublayers that its
constructor creates get the global policy of the moment, so a mixed-precision model would
otherwise reload computing in float32.

Keras 3's ``BatchNormalization`` computes in float32 with separate ops (cast, moments, normalize,
cast back), several passes over every activation. TensorFlow's fused kernel does the same
arithmetic in one pass forward and one backward and reads bfloat16 directly. On a 256x32x32x128
bfloat16 activation, batch norm and ReLU took 75-110 ms forward and backward with the fused kernel
against 440-640 ms with Keras's layer (TensorFlow 2.21, 2 CPU cores, 3 repeats), which made batch
normalization cost as much as the convolutions. :class:`FusedBatchNorm` is Keras's layer with
that kernel.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

# PyTorch's momentum 0.1 in Keras's convention. Keras's default (0.99) averages over ~100 steps,
# too slowly for the short CIFAR schedules this benchmark runs.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class FusedBatchNorm(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` computed by TensorFlow's fused kernel.

    Same weights, options, serialization and results as the Keras layer (the moving variance is
    updated with the biased batch variance, as Keras does). The fused kernel is used for 4-D
    channels-last inputs on the TensorFlow backend without masks, renormalization or
    synchronization; anything else falls back to the Keras implementation.

    Args:
        momentum: Momentum of the moving mean and variance.
        epsilon: Added to the variance before the square root.
        **kwargs: Any other argument of ``keras.layers.BatchNormalization``.

    Example:
        >>> bn = FusedBatchNorm(momentum=0.9, epsilon=1e-5)
        >>> bn(keras.ops.ones((2, 4, 4, 8)), training=True).shape
        (2, 4, 4, 8)
    """

    def __init__(
        self, momentum: float = BN_MOMENTUM, epsilon: float = BN_EPSILON, **kwargs: Any
    ) -> None:
        super().__init__(momentum=momentum, epsilon=epsilon, **kwargs)

    def _fusable(self, inputs: Any, mask: Any) -> bool:
        rank = len(inputs.shape)
        return (
            keras.backend.backend() == "tensorflow"
            and rank == 4
            and self.axis in (-1, 3)
            and mask is None
            and not self.renorm
            and not self.synchronized
        )

    def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        scale = self.gamma if self.scale else tf.ones([channels], tf.float32)
        offset = self.beta if self.center else tf.zeros([channels], tf.float32)
        scale = tf.cast(scale, tf.float32)
        offset = tf.cast(offset, tf.float32)
        if training and self.trainable:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, scale, offset, epsilon=self.epsilon, is_training=True
            )
            # The kernel returns the unbiased variance; Keras averages the biased one.
            count = tf.cast(tf.size(inputs, out_type=tf.int64) // channels, tf.float32)
            variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(
                self.moving_variance * momentum + variance * (1.0 - momentum)
            )
        else:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs,
                scale,
                offset,
                mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon,
                is_training=False,
            )
        return tf.cast(outputs, self.compute_dtype)


def build_in_sequence(layers: Any, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
    """Build ``layers`` one after another, each on the output shape of the one before (what a
    ``keras.Sequential`` does); return the last output shape."""
    shape = input_shape
    for layer in layers:
        layer.build(shape)
        shape = layer.compute_output_shape(shape)
    return shape


def conv(
    filters: int, kernel_size: int = 3, strides: int = 1, name: str | None = None, dtype: Any = None
) -> keras.layers.Conv2D:
    """A bias-free, He-initialised convolution with ``same`` padding (a batch norm follows it)."""
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
        dtype=dtype,
    )
