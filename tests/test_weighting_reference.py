"""The reference loss weightings ``ew`` and ``static``."""

from __future__ import annotations

import pytest
import tensorflow as tf

from mtbench import registry


def _setup(config: dict, tasks=("fine", "coarse")):
    weighting = registry.build("weighting", config)
    weighting.setup(list(tasks))
    return weighting


def test_ew_sums_the_losses():
    objective, weights = _setup({"name": "ew"}).combine(tf.constant([2.0, 3.0]))
    assert float(objective) == 5.0 and weights.numpy().tolist() == [1.0, 1.0]


def test_static_uses_configured_weights_and_default():
    weighting = _setup({"name": "static", "weights": {"coarse": 0.5}, "default": 2.0})
    objective, weights = weighting.combine(tf.constant([2.0, 3.0]))
    assert weights.numpy().tolist() == [2.0, 0.5] and float(objective) == pytest.approx(5.5)


def test_static_refuses_unknown_tasks_and_negative_weights():
    with pytest.raises(ValueError, match=r"names tasks \['fnie'\]"):
        _setup({"name": "static", "weights": {"fnie": 1.0}})
    with pytest.raises(ValueError, match=">= 0"):
        _setup({"name": "static", "weights": {"fine": -1.0}})
