"""The ``hard_sharing`` architecture: one backbone every task reads, one head per task."""

from __future__ import annotations

import keras

from mtbench.architecture import ModelParts
from mtbench.model import MultiTaskModel


def hard_sharing(
    parts: ModelParts, preprocessing: keras.layers.Layer | None = None
) -> MultiTaskModel:
    """Hard parameter sharing (Caruana 1997): every task's outputs are its head on the one
    representation of one shared backbone,

        y_t = h_t(f(x)),

    with ``f`` the backbone (shared: trained on the combination of every task's gradient) and
    ``h_t`` task ``t``'s head (trained on its own loss). ``f(x)`` is the representation every
    head reads, so methods that combine feature gradients (MGDA-UB, GradDrop) apply. This is
    mtbench's default and the network of every single-task baseline
    (:meth:`mtbench.model.MultiTaskModel.from_parts`).

    Reference: R. Caruana, "Multitask Learning", Machine Learning 28, 1997.

    Example:
        >>> build_model({"name": "seed_cnn"}, {"name": "dense"}, tasks, example,
        ...             architecture={"name": "hard_sharing"})
    """
    return MultiTaskModel.from_parts(parts, preprocessing)


__all__ = ["hard_sharing"]
