"""Every registered weighting trains the joint ``seed_cnn`` model for a few real steps.

The run is tiny (8x8 images, three tasks, float32) so that every method, present and future, is
covered in seconds: a method registered anywhere shows up in ``list_plugins``. One method per
code path of the trainer also trains in mixed bfloat16 (emulated, and several times slower, on
CPUs without native bfloat16, so not every method).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from helpers import fake_distribution, run_mtbench, train_tiny

import mtbench
from mtbench import registry
from mtbench.model import MultiTaskModel
from mtbench.weighting import Weighting

# The modules of the reference weighting methods (each registers its plugin).
MODULES = sorted(
    {
        registry.get("weighting", name).factory.__module__.rpartition(".")[2]
        for name in mtbench.list_plugins("weighting")
        if registry.get("weighting", name).factory.__module__.startswith("mtbench_plugins.")
    }
)

PRECISION = "float32"
# One method per code path of the trainer, for the mixed-precision run.
MIXED_PRECISION = [
    ("uw", {}),  # loss level, trainable weighting variables
    ("famo", {}),  # losses after the update
    ("pcgrad", {}),  # per-task gradients of the shared parameters
    ("mgda", {"upper_bound": True}),  # gradients of the features
    ("nashmtl", {"update_weights_every": 2}),  # steps without per-task gradients
    ("modo", {}),  # three batches per update
]
# Options that switch a method onto another code path of the trainer.
VARIANTS = [
    ("famo", {"update": "next_batch"}),  # no losses after the update
    ("mgda", {"upper_bound": True, "normalization": "loss+"}),  # gradients of the features
    ("nashmtl", {"update_weights_every": 2}),  # steps without per-task gradients
]


def _train(config: dict, precision: str = PRECISION) -> tuple[Weighting, MultiTaskModel, object]:
    """Three epochs (DWA's formula is used in the third)."""
    return train_tiny(config, epochs=3, precision=precision)


@pytest.mark.parametrize("name", mtbench.list_plugins("weighting"))
def test_every_registered_weighting_trains_the_joint_model(name):
    _train({"name": name})  # checks finite losses, weights and state, and a model that moved


@pytest.mark.parametrize("name,options", MIXED_PRECISION, ids=[m[0] for m in MIXED_PRECISION])
def test_each_code_path_trains_in_mixed_bfloat16(name, options):
    _train({"name": name, **options}, precision="mixed_bfloat16")


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
        if weighting.samples_per_step > 1:  # three batches: this step's and two more
            batches = [grads[(k + i) % 4] for i in range(weighting.samples_per_step)]
            sampled = [losses[(k + i) % 4] for i in range(weighting.samples_per_step)]
            return weighting.aggregate_samples(tf.constant(batches), tf.constant(sampled))[
                1
            ].numpy()
        return weighting.aggregate(tf.constant(grads[k]), tf.constant(losses[k]))[1].numpy()

    def built(weighting):
        weighting.setup(["a", "b", "c"])
        if weighting.level == "gradient" and weighting.gradient_of == "shared_parameters":
            weighting.build_gradient_state(grads.shape[-1])  # as the trainer does
        return weighting

    original = built(registry.build("weighting", {"name": name}))
    for k in range(3):
        step(original, k)
    copy = built(registry.build("weighting", {"name": name}))
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
