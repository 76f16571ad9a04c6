"""The ``imtl_l`` weighting: IMTL's loss balance, with a learnable scale per task."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from mtbench.weighting import LossWeighting

from .common import options_of
from .options import ImpartialLossConfig


class ImpartialLossBalance(LossWeighting):
    """IMTL-L: the loss balance of Liu, Li, Kuang, Xue, Chen, Yang, Liao and Zhang, "Towards
    Impartial Multi-task Learning", ICLR 2021 (its Eq. 6 with ``a = e``, ``b = 1``), as in the
    loss part of LibMTL's ``IMTL`` (``weighting/IMTL.py``).

    Each task has a learnable scale ``s_t``, trained with the model by the same optimizer. The
    objective is ``sum_t exp(s_t) L_t - s_t``; the logged weights are ``exp(s_t)``, the weight
    the model feels. Its derivative in ``s_t`` is ``exp(s_t) L_t - 1``, so gradient descent
    drives every scaled loss ``exp(s_t) L_t`` towards 1 (the paper's impartial loss scale);
    there the weights are ``1 / L_t``, the gradient of ``scaleinvls``'s ``sum_t log L_t``. It is
    twice ``uw``'s ``regression`` objective at ``v = -s``
    (``exp(s) L - s = 2 (exp(-v) L / 2 + v / 2)``): the same stationary point, twice ``uw``'s
    weights there (``1 / L_t`` against ``1 / (2 L_t)``).

    Differences from the reference code: LibMTL's ``IMTL`` always combines this loss balance with
    IMTL-G's gradient balance on the shared parameters (the paper's hybrid); here the shared
    parameters get the plain ``sum_t exp(s_t) grad L_t`` (the paper's IMTL-L alone; for the
    gradient part see ``imtl``). Like every weighting variable, ``s`` gets the trainer's weight
    decay when ``trainer.weight_decay > 0`` (decoupled; LibMTL's Adam applies a coupled L2 term to
    it).

    Example:
        ``python -m mtbench weighting=imtl_l weighting.init_scale=0.0``
    """

    def __init__(self, init_scale: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.init_scale = float(init_scale)

    def build_state(self, num_tasks: int) -> None:
        self.loss_scale = self.add_weight(
            shape=(num_tasks,),
            initializer=keras.initializers.Constant(self.init_scale),
            trainable=True,
            autocast=False,
            name="loss_scale",
        )

    def combine(self, losses: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        s = tf.convert_to_tensor(self.loss_scale)
        objective = tf.reduce_sum(tf.exp(s) * losses - s)
        return objective, tf.stop_gradient(tf.exp(s))

    def loss_weights(self, losses: tf.Tensor) -> tf.Tensor:
        return tf.exp(tf.convert_to_tensor(self.loss_scale))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **options_of(self, ImpartialLossConfig)}
