"""The ``dselect_k`` architecture: differentiable top-k selection of shared experts per task."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import keras
import numpy as np

from mtbench.model import task_seed

from .mmoe import MMoE
from .options import DSelectKConfig


def smooth_step(t: Any, gamma: float) -> Any:
    """0 for ``t <= -gamma/2``, 1 for ``t >= gamma/2``, ``-2/gamma^3 t^3 + 3/(2 gamma) t + 1/2``
    between: a cubic with zero slope at both ends (Hazimeh et al., eq. 2)."""
    cubic = -2.0 / gamma**3 * t**3 + 3.0 / (2.0 * gamma) * t + 0.5
    return keras.ops.where(
        t <= -gamma / 2, keras.ops.zeros_like(t), keras.ops.where(t >= gamma / 2, 1.0, cubic)
    )


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class DSelectKGate(keras.layers.Layer):
    """The per-example DSelect-k gate over ``experts`` experts with ``k`` selectors.

    Selector ``i`` has ``m = ceil(log2(experts))`` code logits ``z_i = Z_i x`` and gives expert
    ``e`` (binary code ``b(e)``) the weight ``r_i(e) = prod_j S(z_ij)^b_j(e) (1 - S(z_ij))^(1 -
    b_j(e))``, with ``S`` the :func:`smooth_step`; the gate is ``sum_i softmax(W x)_i r_i``.
    While training it adds to the model's losses ``entropy_weight`` times the selectors' entropy
    and, when ``experts`` is not a power of two, ``1 / sum_e r_i(e)`` (the mass on existing
    experts), each summed over selectors and averaged over the batch, as the authors' code.

    Args:
        experts: Experts to select from.
        k: Selectors (at most ``k`` experts are selected).
        gamma: The smooth step's width.
        entropy_weight: Weight of the entropy regularizer (0: none).
        seed: Seeds the initialisers (``Z`` uniform in ``+-gamma/100``, ``W`` in ``+-0.05``).
    """

    def __init__(
        self,
        experts: int,
        k: int,
        gamma: float = 1.0,
        entropy_weight: float = 0.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.experts, self.k = int(experts), int(k)
        self.gamma, self.entropy_weight, self.seed = float(gamma), float(entropy_weight), seed
        self.bits = math.ceil(math.log2(self.experts)) if self.experts > 1 else 0
        codes = [[int(b) for b in np.binary_repr(e, width=self.bits)] for e in range(self.experts)]
        self.codes = np.array(codes, dtype=bool).reshape(self.experts, self.bits)
        dtype = self.dtype_policy

        def uniform(limit: float, part: int) -> keras.initializers.Initializer:
            return keras.initializers.RandomUniform(
                -limit, limit, seed=None if seed is None else seed + part
            )

        self.flatten = keras.layers.Flatten(name="flatten", dtype=dtype)
        self.code_logits = (
            keras.layers.Dense(
                self.k * self.bits,
                kernel_initializer=uniform(self.gamma / 100, 0),
                bias_initializer=uniform(self.gamma / 100, 1),
                name="code_logits",
                dtype=dtype,
            )
            if self.bits
            else None
        )
        self.selector_logits = keras.layers.Dense(
            self.k,
            kernel_initializer=uniform(0.05, 2),
            bias_initializer=uniform(0.05, 3),
            name="selector_logits",
            dtype=dtype,
        )

    def build(self, input_shape: Any) -> None:
        self.flatten.build(input_shape)
        flat = self.flatten.compute_output_shape(input_shape)
        if self.code_logits is not None:
            self.code_logits.build(flat)
        self.selector_logits.build(flat)
        self.built = True

    def call(self, inputs: Any, training: bool = False) -> Any:
        x = self.flatten(inputs)
        if self.code_logits is None:  # one expert: every selector picks it
            selected = keras.ops.ones((keras.ops.shape(x)[0], self.k, 1), "float32")
        else:
            z = keras.ops.cast(self.code_logits(x), "float32")
            step = smooth_step(keras.ops.reshape(z, (-1, self.k, 1, self.bits)), self.gamma)
            codes = keras.ops.convert_to_tensor(self.codes[None, None])
            selected = keras.ops.prod(keras.ops.where(codes, step, 1.0 - step), axis=-1)
        selectors = keras.ops.softmax(keras.ops.cast(self.selector_logits(x), "float32"), -1)
        if training:
            self._regularize(selected)
        return keras.ops.sum(selectors[..., None] * selected, axis=1)  # [B, experts]

    def _regularize(self, selected: Any) -> None:
        if self.entropy_weight > 0:
            entropy = -keras.ops.sum(selected * keras.ops.log(selected + 1e-6), axis=(1, 2))
            self.add_loss(self.entropy_weight * keras.ops.mean(entropy))
        if self.experts != 2**self.bits:
            mass = keras.ops.sum(selected, axis=-1)  # [B, k] on existing experts
            self.add_loss(keras.ops.mean(keras.ops.sum(1.0 / mass, axis=-1)))

    def compute_output_shape(self, input_shape: Any) -> tuple[int | None, ...]:
        return (input_shape[0], self.experts)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            experts=self.experts,
            k=self.k,
            gamma=self.gamma,
            entropy_weight=self.entropy_weight,
            seed=self.seed,
        )
        return config


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class DSelectK(MMoE):
    """DSelect-k (Hazimeh et al. 2021): ``N`` experts shared by every task, as in MMoE, but each
    task's gate selects at most ``k`` of them through ``k`` differentiable selectors of binary
    codes (:class:`DSelectKGate`):

        y_t = h_t( sum_e q_t(x)_e f_e(x) ),  q_t(x) = sum_{i<=k} softmax(W_t x)_i r_{t,i}(x),

    where ``r_{t,i}(x)`` puts weight ``prod_j S(z_j)`` on the expert whose binary code matches
    the smooth steps ``S(z)`` of the selector's code logits ``z = Z_{t,i} x``. ``S`` reaches
    exactly 0 and 1 outside ``[-gamma/2, gamma/2]``, so the selection becomes exactly sparse
    while training. Per-example gates (the paper's "per-example" variant). Experts, bottom and
    what the gates read as in ``mmoe`` (``expert_stages``). Shared: the experts and the bottom;
    task ``t``'s own: its gate and head. Each task reads its own mixture, so feature-level
    weighting methods are refused.

    Reference: H. Hazimeh, Z. Zhao, A. Chowdhery, M. Sathiamoorthy, Y. Chen, R. Mazumder, L. Hong,
    E. H. Chi, "DSelect-k: Differentiable Selection in the Mixture of Experts with Applications
    to Multi-Task Learning", NeurIPS 2021.

    Args:
        parts: What the network assembles (:class:`~mtbench.architecture.ModelParts`).
        preprocessing: The dataset's preprocessing layer, or ``None``.
        **options: :class:`~mtbench_plugins.architectures.options.DSelectKConfig`'s fields
            (``num_experts``, ``k``, ``gamma``, ``entropy_weight``, ``expert_stages``).

    Example:
        >>> build_model({"name": "seed_cnn"}, {"name": "dense"}, tasks, example,
        ...             architecture={"name": "dselect_k", "num_experts": 4, "k": 2})
    """

    options_class: ClassVar[type] = DSelectKConfig
    architecture: ClassVar[str] = "dselect_k"

    def make_gate(self, task: str) -> keras.layers.Layer:
        o = self.options
        return DSelectKGate(
            o.num_experts,
            o.k,
            o.gamma,
            o.entropy_weight,
            seed=task_seed(self.parts.seed, task, "dselect_k_gate"),
            name=f"{task}_gate",
        )

    def gate(self, task: str, x: Any, training: bool) -> Any:
        return self.gates[task](x, training=training)
