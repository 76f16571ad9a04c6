"""Every registered weighting trains the joint ``seed_cnn`` model for a few real steps.

The run is tiny (8x8 images, three tasks, mixed bfloat16) so that every method, present and
future, is covered in seconds: a method registered anywhere shows up in ``list_plugins``.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from helpers import fake_distribution, run_mtbench

import mtbench
from mtbench import registry
from mtbench.config import TrainerConfig
from mtbench.data import Split, TaskSpec
from mtbench.model import MultiTaskModel, build_model
from mtbench.trainer import Trainer
from mtbench.weighting import Weighting

# Until pyproject.toml declares them as entry points, importing a module registers its plugins.
MODULES = (
    "aligned_mtl", "cagrad", "dwa", "famo", "gls", "graddrop", "gradnorm", "gradvac", "imtl",
    "mgda", "nashmtl", "pcgrad", "rlw", "upgrad", "uw",
)  # fmt: skip
for _module in MODULES:
    importlib.import_module(f"mtbench_plugins.weighting.{_module}")

TASKS = (TaskSpec("a", 10), TaskSpec("b", 5), TaskSpec("c", 3))
PRECISION = "mixed_bfloat16"
# Options that switch a method onto another code path of the trainer.
VARIANTS = [
    ("famo", {"update": "next_batch"}),  # no losses after the update
    ("mgda", {"upper_bound": True, "normalization": "loss+"}),  # gradients of the features
    ("nashmtl", {"update_weights_every": 2}),  # steps without per-task gradients
]


def _tiny_model() -> MultiTaskModel:
    return build_model(
        {"name": "seed_cnn"}, {"name": "dense"}, TASKS, precision=PRECISION, input_shape=(8, 8, 3)
    )


def _split(size: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(size, 8, 8, 3), dtype=np.uint8)
    return Split(images, {t.name: rng.integers(0, t.num_classes, size) for t in TASKS})


def _train(config: dict) -> tuple[Weighting, MultiTaskModel, object]:
    model = _tiny_model()
    initial = [v.numpy().copy() for v in model.trainable_variables]
    weighting = registry.build("weighting", config)
    trainer_config = TrainerConfig(batch_size=16, epochs=3, progress=False, checkpoint_every=0)
    tasks = [t.name for t in TASKS]
    trainer = Trainer(trainer_config, model, weighting, tasks, precision=PRECISION, seed=0)
    result = trainer.fit(_split(32, seed=1), _split(16, seed=2))
    assert all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)
    assert any(
        not np.array_equal(b, v.numpy())
        for b, v in zip(initial, model.trainable_variables, strict=True)
    )
    return weighting, model, result


@pytest.mark.parametrize("name", mtbench.list_plugins("weighting"))
def test_every_registered_weighting_trains_the_joint_model(name):
    weighting, _, result = _train({"name": name})
    assert len(result.history) == 3  # three epochs: DWA's formula is used in the third
    for record in result.history:
        assert all(np.isfinite(v) for v in record.train_loss.values()), record.train_loss
        assert all(np.isfinite(v) for v in record.weights.values()), record.weights
    for variable in weighting.variables:
        assert np.isfinite(variable.numpy()).all(), variable.name


@pytest.mark.parametrize("name,options", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_variants_train_the_joint_model(name, options):
    _train({"name": name, **options})


def test_uw_log_variances_are_trained_with_the_model():
    weighting, _, _ = _train({"name": "uw"})
    assert not np.allclose(weighting.log_variance.numpy(), 0.0)


@pytest.mark.parametrize("name", mtbench.list_plugins("weighting"))
def test_config_round_trips(name):
    plugin = registry.get("weighting", name)
    weighting = registry.build("weighting", {"name": name})
    config = weighting.get_config()
    for field in plugin.config.__dataclass_fields__:
        assert field in config, f"{name}: get_config() lacks {field}"
    clone = type(weighting).from_config(config)
    for field in plugin.config.__dataclass_fields__:
        assert getattr(clone, field) == getattr(weighting, field)


@pytest.mark.parametrize("name", mtbench.list_plugins("weighting"))
def test_state_lives_in_the_layer_weights(name):
    """A copy given the original's weights continues exactly like it: a checkpoint is enough."""
    rng = np.random.default_rng(0)
    losses = rng.uniform(0.5, 2.0, size=(4, 3)).astype(np.float32)
    grads = rng.normal(size=(4, 3, 16)).astype(np.float32)

    def step(weighting, k: int) -> np.ndarray:
        if weighting.level == "loss":
            _, weights = weighting.combine(tf.constant(losses[k]))
            if weighting.needs_losses_after_update:
                weighting.after_update(tf.constant(losses[k]), tf.constant(0.9 * losses[k]))
            weighting.on_epoch_end(k + 1, losses[k])
            return weights.numpy()
        if weighting.skips_gradients:
            weighting.gradients_needed()
        return weighting.aggregate(tf.constant(grads[k]), tf.constant(losses[k]))[1].numpy()

    original = registry.build("weighting", {"name": name})
    original.setup(["a", "b", "c"])
    for k in range(3):
        step(original, k)
    copy = registry.build("weighting", {"name": name})
    copy.setup(["a", "b", "c"])
    for target, source in zip(copy.variables, original.variables, strict=True):
        target.assign(source)
    np.testing.assert_array_equal(step(copy, 3), step(original, 3))


def test_importing_the_plugin_modules_leaves_tensorflow_unconfigured():
    """The CLI loads plugins before it splits the CPU into replicas: imports must not start TF."""
    imports = "; ".join(f"import mtbench_plugins.weighting.{m}" for m in MODULES)
    script = textwrap.dedent(
        f"""
        {imports}
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        two = [tf.config.LogicalDeviceConfiguration()] * 2
        tf.config.set_logical_device_configuration(cpu, two)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


STATEFUL = [
    pytest.param("weighting=famo", id="famo"),
    pytest.param("weighting=gradvac", id="gradvac"),
    pytest.param("weighting=dwa", id="dwa"),
    pytest.param("weighting=nashmtl weighting.update_weights_every=2", id="nashmtl-every-2"),
]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", STATEFUL)
def test_stateful_methods_train_on_two_mirrored_replicas(overrides, npz_root, tmp_path):
    body = "\n".join(f"import mtbench_plugins.weighting.{m}" for m in MODULES)
    fake_distribution(tmp_path, "mtbench_zoo", "mtbench_zoo", body, "zoo")
    args = [
        "+experiment=cifar100_mtl", *overrides.split(), f"dataset.root={npz_root}",
        "dataset.val_size=100", "benchmark.single_task=false", "trainer.epochs=2",
        "trainer.batch_size=64", "trainer.distribute=mirrored", "trainer.cpu_replicas=2",
        "trainer.progress=false", "hydra.run.dir=run",
    ]  # fmt: skip
    result = run_mtbench(args, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "complete"
    assert results["runs"][-1]["distribution"]["replicas"] == 2
