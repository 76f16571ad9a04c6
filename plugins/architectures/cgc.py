"""The ``cgc`` architecture: shared and task-specific experts, one gate per task."""

from __future__ import annotations

from typing import ClassVar

import keras

from .options import CGCConfig
from .ple import PLE


@keras.saving.register_keras_serializable(package="mtbench_plugins")
class CGC(PLE):
    """Customized Gate Control (Tang et al. 2020): ``S`` shared experts and ``K`` experts of
    each task read the input representation ``x``; task ``t`` reads the mixture of the shared
    experts and its own under its gate,

        y_t = h_t( sum_e softmax(W_t x / temperature)_e [f^s_1..f^s_S, f^t_1..f^t_K](x)_e ).

    Each expert is a whole backbone (``expert_stages=null``) or a copy of the backbone's last
    ``expert_stages`` stages after its first stages, shared by all. Shared: the shared experts
    and the bottom; task ``t``'s own: its experts, gate and head. PLE (architecture ``ple``)
    stacks such levels. Each task reads its own representation, so feature-level weighting
    methods are refused.

    Reference: H. Tang, J. Liu, M. Zhao, X. Gong, "Progressive Layered Extraction (PLE): A Novel
    Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020.

    Args:
        parts: What the network assembles (:class:`~mtbench.architecture.ModelParts`).
        preprocessing: The dataset's preprocessing layer, or ``None``.
        **options: :class:`~mtbench_plugins.architectures.options.CGCConfig`'s fields
            (``shared_experts``, ``task_experts``, ``expert_stages``, ``gate_temperature``).

    Example:
        >>> build_model({"name": "seed_cnn"}, {"name": "dense"}, tasks, example,
        ...             architecture={"name": "cgc", "shared_experts": 2, "task_experts": 1})
    """

    options_class: ClassVar[type] = CGCConfig
    architecture: ClassVar[str] = "cgc"

    @property
    def num_levels(self) -> int:
        return 1
