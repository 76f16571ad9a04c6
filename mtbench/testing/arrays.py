"""Random arrays described per example, for the suites that feed layers (backbones, heads)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ArraySpec", "sample"]


@dataclass(frozen=True)
class ArraySpec:
    """One array per example: its shape, dtype and the range of its random values.

    Args:
        shape: The shape of one example (without the batch axis), e.g. ``(8, 8, 3)``.
        dtype: A NumPy dtype name (``float32``, ``uint8``, ``int32``, ``bool``...).
        low, high: Floats are drawn uniformly from ``[low, high)``, integers from
            ``low..high - 1``.

    Example:
        >>> ArraySpec((8, 8, 3))                               # a float image in [0, 1)
        >>> {"atoms": ArraySpec((5,), "int32", 0, 10), "coords": ArraySpec((5, 3), low=-1)}
    """

    shape: tuple[int, ...]
    dtype: str = "float32"
    low: float = 0.0
    high: float = 1.0

    def sample(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        shape = (batch, *self.shape)
        dtype = np.dtype(self.dtype)
        if dtype == np.bool_:
            return rng.random(shape) < 0.5
        if np.issubdtype(dtype, np.integer):
            return rng.integers(int(self.low), int(self.high), shape).astype(dtype)
        return rng.uniform(self.low, self.high, shape).astype(dtype)


def sample(spec: ArraySpec | Mapping[str, ArraySpec], rng: np.random.Generator, batch: int) -> Any:
    """A batch for ``spec``: one array, or a dict of arrays for a dict of specs."""
    if isinstance(spec, Mapping):
        return {key: value.sample(rng, batch) for key, value in spec.items()}
    if not isinstance(spec, ArraySpec):
        raise TypeError(
            f"expected an mtbench.testing.ArraySpec or a dict of them, got {type(spec).__name__}"
        )
    return spec.sample(rng, batch)
