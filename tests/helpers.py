"""Helpers for tests: running the CLI in a subprocess, finding the real data."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def real_data_root() -> Path | None:
    """The folder holding the real ``cifar100.npz`` ($MTBENCH_REAL_DATA or ../shared), if any."""
    candidates = [os.environ.get("MTBENCH_REAL_DATA"), REPO.parent / "shared/data/cifar100"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "cifar100.npz").is_file():
            return Path(candidate)
    return None


def run_mtbench(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600):
    """Run ``python -m mtbench`` in a subprocess; return the CompletedProcess."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "mtbench", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_benchmark(root: Path, tmp_path: Path, *overrides: str, timeout: int = 600) -> dict:
    """Run the reference experiment on the data in ``root`` in ``tmp_path/run`` (a subprocess);
    check that it succeeded and return its ``results.json``."""
    import json

    result = run_mtbench(
        [
            "+experiment=cifar100_mtl",
            f"dataset.root={root}",
            "dataset.download=false",
            "trainer.progress=false",
            *overrides,
            f"hydra.run.dir={tmp_path}/run",
        ],
        cwd=tmp_path,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / "run" / "results.json").read_text())


def image_model(backbone, head, tasks, shape=(32, 32, 3), **options):
    """A model for uint8 images of ``shape``, scaled to [0, 1] inside the model as the reference
    dataset declares (``build_model`` options such as ``precision``, ``hierarchy``, ``seed``
    pass through)."""
    import numpy as np

    from mtbench.inputs import ImagePreprocessing
    from mtbench.model import build_model

    backbone = {"name": backbone} if isinstance(backbone, str) else backbone
    head = {"name": head} if isinstance(head, str) else head
    example = np.zeros([1, *shape], np.uint8)
    preprocessing = ImagePreprocessing(255.0, name="preprocessing")
    return build_model(backbone, head, tasks, example, preprocessing=preprocessing, **options)


def reference_tasks(*names: str):
    """The reference tasks ``fine`` (100 classes) and ``coarse`` (20), or those named."""
    from mtbench.tasks import TaskSpec

    tasks = {"fine": TaskSpec("fine", 100), "coarse": TaskSpec("coarse", 20)}
    return [tasks[n] for n in names or tasks]


def kinds(*names: str):
    """The kinds of :func:`reference_tasks` (what ``Trainer`` takes)."""
    from mtbench.tasks import task_kinds

    return task_kinds(reference_tasks(*names))


def reference_model(precision: str = "float32", backbone: str = "seed_cnn", head: str = "dense"):
    """The reference fine/coarse model, built from seed 0 under ``precision``."""
    return image_model(backbone, head, reference_tasks(), precision=precision)


def fake_distribution(site: Path, dist: str, module: str, body: str, entry: str) -> None:
    """A distribution on disk as pip would install it: a module and its .dist-info declaring
    ``module`` in the ``mtbench.plugins`` entry-point group. Put ``site`` on PYTHONPATH."""
    (site / f"{module}.py").write_text(textwrap.dedent(body))
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[mtbench.plugins]\n{entry} = {module}\n")


def tiny_tasks():
    """Three tasks of 10, 5 and 3 classes, for tiny training runs."""
    from mtbench.tasks import TaskSpec

    return (TaskSpec("a", 10), TaskSpec("b", 5), TaskSpec("c", 3))


def tiny_split(size: int, seed: int):
    """``size`` random 8x8x3 uint8 images with random labels for :func:`tiny_tasks`."""
    import numpy as np

    from mtbench.data import Split

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(size, 8, 8, 3), dtype=np.uint8)
    return Split(images, {t.name: rng.integers(0, t.num_classes, size) for t in tiny_tasks()})


def train_tiny(
    config: dict,
    *,
    epochs: int = 2,
    precision: str = "float32",
    checkpoint_dir: Path | None = None,
    resume: bool = False,
):
    """Train the joint ``seed_cnn`` model for :func:`tiny_tasks` with the weighting ``config``
    (two batches of 16 per epoch, or as many as the method draws per update), and check what
    every method must do: finite losses, weights, state and variables, and a model that moved.
    Returns ``(weighting, model, result)``."""
    import numpy as np

    from mtbench import registry
    from mtbench.config import TrainerConfig
    from mtbench.tasks import task_kinds
    from mtbench.trainer import Trainer

    tasks = tiny_tasks()
    model = image_model("seed_cnn", "dense", tasks, shape=(8, 8, 3), precision=precision)
    initial = [v.numpy().copy() for v in model.trainable_variables]
    weighting = registry.build("weighting", config)
    trainer_config = TrainerConfig(
        batch_size=16, epochs=epochs, progress=False, checkpoint_every=1 if checkpoint_dir else 0
    )
    trainer = Trainer(
        trainer_config, model, weighting, task_kinds(tasks), precision=precision, seed=0,
        checkpoint_dir=checkpoint_dir,
    )  # fmt: skip
    train = tiny_split(16 * max(2, weighting.samples_per_step), seed=1)
    result = trainer.fit(train, tiny_split(16, seed=2), resume=resume)
    assert len(result.history) == epochs
    for record in result.history:
        assert all(np.isfinite(v) for v in record.train_loss.values()), record.train_loss
        assert all(np.isfinite(v) for v in record.weights.values()), record.weights
    assert all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)
    assert any(
        not np.array_equal(b, v.numpy())
        for b, v in zip(initial, model.trainable_variables, strict=True)
    )
    for variable in weighting.variables:
        assert np.isfinite(variable.numpy()).all(), variable.name
    return weighting, model, result


def weighting_for(name: str, num_tasks: int, **options):
    """The weighting plugin ``name`` with ``options``, set up for ``num_tasks`` tasks."""
    from mtbench import registry

    weighting = registry.build("weighting", {"name": name, **options})
    weighting.setup([f"task{t}" for t in range(num_tasks)])
    return weighting


_compiled: dict[int, tuple[object, object]] = {}


def aggregate(weighting, grads, losses=None):
    """``weighting.aggregate`` in a ``tf.function`` (traced once per weighting and shape),
    float32 in, float64 numpy out. A method that draws several batches per update gets the same
    batch each time."""
    import numpy as np
    import tensorflow as tf

    grads = tf.constant(np.asarray(grads, np.float32))
    losses = tf.constant(np.ones(grads.shape[0]) if losses is None else losses, tf.float32)
    if weighting.samples_per_step > 1:
        grads = tf.stack([grads] * weighting.samples_per_step)
        losses = tf.stack([losses] * weighting.samples_per_step)
        function = weighting.aggregate_samples
    else:
        function = weighting.aggregate
    if _compiled.get(id(weighting), (None,))[0] is not weighting:
        _compiled[id(weighting)] = (weighting, tf.function(function))
    update, weights = _compiled[id(weighting)][1](grads, losses)
    return update.numpy().astype(np.float64), weights.numpy().astype(np.float64)


# ----------------------------------------------------------------------- tiny architectures
#: Small options that still exercise each architecture's structure (a shared bottom, several
#: levels, a number of experts that is not a power of two) on :func:`tiny_architecture_model`'s
#: two-stage MLP; an architecture not named here is built with its defaults.
SMALL_ARCHITECTURE_OPTIONS = {
    "mmoe": {"num_experts": 2, "expert_stages": 1},
    "cgc": {"shared_experts": 1, "task_experts": 1, "expert_stages": 1},
    "ple": {"shared_experts": 1, "task_experts": 1, "num_levels": 2},
    "dselect_k": {"num_experts": 3, "k": 2, "expert_stages": 1, "entropy_weight": 0.1},
}


def tiny_vector_tasks():
    """Two tasks of 3 and 2 classes on 6-feature vectors."""
    from mtbench.tasks import TaskSpec

    return (TaskSpec("a", 3), TaskSpec("b", 2))


def tiny_vector_split(size: int, seed: int):
    """``size`` random 6-feature float32 vectors with random labels for
    :func:`tiny_vector_tasks`."""
    import numpy as np

    from mtbench.data import Split

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(size, 6)).astype(np.float32)
    return Split(x, {t.name: rng.integers(0, t.num_classes, size) for t in tiny_vector_tasks()})


def tiny_architecture_model(name: str, seed: int = 0, dropout: float = 0.0):
    """The architecture ``name`` (with :data:`SMALL_ARCHITECTURE_OPTIONS`) on an MLP of two
    8-unit stages for :func:`tiny_vector_tasks`, built from ``seed`` (call it under the strategy's
    scope to train it under a strategy)."""
    import numpy as np

    from mtbench.model import build_model

    return build_model(
        {"name": "mlp", "hidden_units": [8, 8], "dropout": dropout}, {"name": "dense"},
        tiny_vector_tasks(), np.zeros((1, 6), np.float32),
        architecture={"name": name, **SMALL_ARCHITECTURE_OPTIONS.get(name, {})}, seed=seed,
    )  # fmt: skip


@contextlib.contextmanager
def before_training_step(step: int, action):
    """Within the block, every :class:`~mtbench.trainer.Trainer` calls ``action()`` once, just
    before its training step number ``step`` (1-based, counted from the start of its ``fit``, a
    resumed one included; with ``steps_per_call=1`` exactly there, else before the call that
    runs it). An action that raises ``KeyboardInterrupt`` is Ctrl-C: the trainer saves a
    checkpoint of the moment and raises ``Interrupted``; any other exception propagates and
    saves nothing. An action that copies the checkpoint directory leaves what SIGKILL at that
    moment would leave on disk."""
    import importlib

    import pytest

    from mtbench.trainer import Trainer

    module = importlib.import_module(Trainer.__module__)  # where _build finds train_function
    real = module.train_function

    def with_action(*args, **kwargs):
        train_call = real(*args, **kwargs)
        done = 0

        def call(iterator, count):
            nonlocal done
            if done < step <= done + int(count):
                action()
            train_call(iterator, count)
            done += int(count)

        return call

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "train_function", with_action)  # raising=True: a rename fails here
        yield
