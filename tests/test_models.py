"""Backbone and head plugins: the seed CNN is exactly the notebook's, heads give per-task logits;
the model applies the dataset's preprocessing, or only casts floating inputs without one."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from helpers import reference_model as _model
from helpers import reference_tasks

from mtbench.inputs import ImagePreprocessing
from mtbench.model import build_model


def test_seed_cnn_is_exactly_the_notebook_extractor():
    backbone = _model().backbone
    described = []
    for layer in (layer for stage in backbone.stages() for layer in stage.parts):
        cfg = layer.get_config()
        described.append(
            (
                type(layer).__name__,
                cfg.get("filters") or cfg.get("units") or cfg.get("pool_size"),
                cfg.get("kernel_size"),
                cfg.get("padding"),
                cfg.get("activation"),
            )
        )
    assert described == [
        ("Conv2D", 32, (3, 3), "same", "relu"),
        ("Conv2D", 32, (3, 3), "valid", "relu"),
        ("MaxPooling2D", (2, 2), None, "valid", None),
        ("Flatten", None, None, None, None),
        ("Dense", 128, None, None, "relu"),
        ("Dense", 64, None, None, "relu"),
    ]
    # 896 + 9,248 + 921,728 (15*15*32 -> 128) + 8,256
    assert backbone.count_params() == 940_128


def test_dense_heads_give_float32_logits_per_task_under_mixed_precision():
    model = _model("mixed_bfloat16")
    logits = model(tf.zeros([4, 32, 32, 3], tf.uint8))
    assert {k: tuple(v.shape) for k, v in logits.items()} == {"fine": (4, 100), "coarse": (4, 20)}
    assert all(v.dtype == tf.float32 for v in logits.values())
    assert model.backbone.compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in model.trainable_variables)  # master weights
    # the head has 64*100+100 + 64*20+20 parameters, all task-specific
    assert sum(int(np.prod(v.shape)) for v in model.task_variables) == 6_500 + 1_300


def test_model_round_trips_through_keras_serialization(tmp_path):
    model = _model()
    images = tf.constant(np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3)), tf.uint8)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.preprocessing.get_config() == model.preprocessing.get_config()
    before, after = model(images), restored(images)
    for task in ("fine", "coarse"):
        np.testing.assert_allclose(before[task].numpy(), after[task].numpy(), rtol=1e-6)


def test_a_model_without_preprocessing_casts_floats_and_leaves_ints():
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    scaled = images.astype(np.float64) / 255.0
    plain = build_model({"name": "seed_cnn"}, {"name": "dense"}, reference_tasks(), scaled[:1])
    assert plain.preprocessing is None
    x = plain.preprocess(tf.constant(scaled))
    assert x.dtype == tf.float32  # cast to the compute dtype, not divided by 255
    np.testing.assert_allclose(x.numpy(), scaled, rtol=1e-7)
    inputs = {"atoms": tf.constant([[1, 6, 8]], tf.int32), "coords": tf.constant(scaled[:1])}
    out = plain.preprocess(inputs)
    assert out["atoms"].dtype == tf.int32 and out["coords"].dtype == tf.float32
    np.testing.assert_array_equal(out["atoms"].numpy(), [[1, 6, 8]])
    assert plain.preprocess(tf.constant(images)).dtype == tf.uint8  # left as it is
    # the same weights on images the dataset scales itself, or the model scales
    scaling = _model()
    assert isinstance(scaling.preprocessing, ImagePreprocessing)
    for task, value in scaling(tf.constant(images)).items():
        np.testing.assert_allclose(
            value.numpy(), plain(tf.constant(scaled))[task].numpy(), rtol=1e-5, atol=1e-6
        )
    mixed = build_model(
        {"name": "seed_cnn"}, {"name": "dense"}, reference_tasks(), scaled[:1],
        precision="mixed_bfloat16",
    )  # fmt: skip
    out = mixed.preprocess(inputs)
    assert out["atoms"].dtype == tf.int32 and out["coords"].dtype == tf.bfloat16
