"""Every registered architecture resumes after a kill and after Ctrl-C to exactly the result of
the run that was never stopped, with a weighting method that carries state: the model's
variables (dropout's seed states, batch-norm statistics, gates, cross-stitch units), the
optimizer's slots and step count, the method's state and the epoch's running tallies.

In-process (every architecture with ``uw`` in the default run, and with ``gradvac`` on mmoe;
every architecture with both under ``-m slow``): the uninterrupted run's checkpoint directory is
copied as it stands in epoch 2 (what SIGKILL at that moment leaves on disk: the run resumes from
the end of epoch 1); a run resumed from the copy is stopped by Ctrl-C in epoch 3 (the trainer
saves a checkpoint of the moment: it resumes mid-epoch), then resumed to the end. Each start
builds its model, method and trainer afresh, as a new process does. A real SIGKILL of the
command line and its re-run are checked for one architecture with ``-m slow``.

The comparison is exact (``assert_array_equal``, ``==`` on the records): the resumed run
executes the same compiled operations on the same batches in the same order on the same CPU, so
the same state gives the same bits; a value a checkpoint forgot shows as a difference (see
``test_a_resume_that_restores_stale_state_is_caught``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from helpers import (
    before_training_step,
    run_mtbench,
    tiny_architecture_model,
    tiny_vector_split,
    tiny_vector_tasks,
)

from mtbench import checkpoint, records, registry
from mtbench.config import Optimizer, Schedule, TrainerConfig
from mtbench.tasks import task_kinds
from mtbench.trainer import Interrupted, Trainer

ARCHITECTURES = registry.names("architecture")
#: Methods with state of their own, one per level of the trainer's step.
METHODS = {
    "uw": "loss level: trainable log-variances with their own Adam slots",
    "gradvac": "gradient level: moving-average targets and a random task order (seed, draws)",
}
STEPS_PER_EPOCH = 3
#: Adam (slots and a step count to restore) on a warm-up-then-cosine schedule (the learning rate
#: depends on the restored step count); a checkpoint after every epoch; one step per call, so
#: that a fault can come between any two steps.
CONFIG = TrainerConfig(
    optimizer=Optimizer.adam, learning_rate=0.01, schedule=Schedule.cosine, warmup_epochs=1.0,
    batch_size=8, epochs=3, steps_per_call=1, checkpoint_every=1, progress=False,
)  # fmt: skip
TRAIN = tiny_vector_split(8 * STEPS_PER_EPOCH, seed=1)
VAL = tiny_vector_split(16, seed=2)
DROPOUT = 0.25  # the backbone's dropout: its seed generators' states must resume too


@dataclass
class Run:
    model: object
    weighting: object
    result: object
    directory: Path


def _fit(directory: Path, name: str, method: str, resume: bool = False) -> Run:
    """A fresh model, method and trainer (as a new process builds them), fitted."""
    model = tiny_architecture_model(name, seed=0, dropout=DROPOUT)
    weighting = registry.build("weighting", {"name": method})
    kinds = task_kinds(tiny_vector_tasks())
    trainer = Trainer(
        CONFIG, model, weighting, kinds, precision="float32", seed=0, checkpoint_dir=directory
    )
    result = trainer.fit(TRAIN, VAL, resume=resume)
    return Run(model, weighting, result, directory)


def _ctrl_c() -> None:
    raise KeyboardInterrupt


def _position(directory: Path) -> tuple[int, int]:
    """Where ``last.npz`` resumes: (epoch, batch)."""
    _, progress = checkpoint.load(directory / "last.npz")
    return progress["epoch"], progress["batch"]


#: What a resumed record may differ in: wall-clock seconds, the machine's load, where it resumed.
TIMING = {
    "seconds", "train_seconds_so_far", "cpu_seconds", "others_utilisation", "share",
    "cpu_utilisation", "load_average", "gpu_utilisation",
}  # fmt: skip
FIT_TIMING = {"trace_seconds", "eval_seconds", "resumed_from"}


def _record(progress: dict) -> dict:
    """A fit's record without its timings."""
    result = {k: v for k, v in progress["result"].items() if k not in FIT_TIMING}
    result["history"] = [
        {k: v for k, v in epoch.items() if k not in TIMING} for epoch in result["history"]
    ]
    return {**progress, "result": result, "partial_seconds": None}


def assert_same_run(resumed: Run, reference: Run) -> None:
    """Bit-identical final checkpoints (every group: model, optimizer, method, tallies), best
    checkpoints, records and final models."""
    for file in ("last.npz", "best.npz"):
        groups, progress = checkpoint.load(resumed.directory / file)
        want_groups, want_progress = checkpoint.load(reference.directory / file)
        assert groups.keys() == want_groups.keys(), file
        for group, arrays in want_groups.items():
            assert len(groups[group]) == len(arrays), (file, group)
            for index, (got, want) in enumerate(zip(groups[group], arrays, strict=True)):
                np.testing.assert_array_equal(got, want, err_msg=f"{file} {group}[{index}]")
        if file == "last.npz":
            progress, want_progress = _record(progress), _record(want_progress)
        assert progress == want_progress, file
    for got, want in zip(resumed.model.variables, reference.model.variables, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=want.path)
    for got, want in zip(resumed.weighting.variables, reference.weighting.variables, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=want.path)


def _reference_and_interrupted(work: Path, name: str, method: str) -> tuple[Run, Path, Path]:
    """The uninterrupted run (in ``work/reference``) and a run in ``work/run`` killed in epoch 2,
    resumed and stopped by Ctrl-C in epoch 3; with a copy of the end-of-epoch-1 checkpoint the
    kill left (``work/killed``)."""
    killed, run = work / "killed", work / "run"

    def sigkill() -> None:  # the disk as the kill leaves it; the process's memory is gone
        shutil.copytree(work / "reference", killed)

    # SIGKILL before step 2 of epoch 2
    with before_training_step(STEPS_PER_EPOCH + 2, sigkill):
        reference = _fit(work / "reference", name, method)
    assert reference.result.resumed_from is None
    assert _position(killed) == (2, 0)  # the epoch in progress is lost: resume at its start
    shutil.copytree(killed, run)
    # resumed at epoch 2, batch 0; Ctrl-C before step 2 of epoch 3
    with before_training_step(STEPS_PER_EPOCH + 2, _ctrl_c):
        with pytest.raises(Interrupted, match="interrupted at step 1 of epoch 3"):
            _fit(run, name, method, resume=True)
    assert _position(run) == (3, 1)  # a checkpoint of the moment, mid-epoch
    return reference, run, killed / "last.npz"


#: One expert architecture with the gradient-level method, one multi-level and one per-task-copy
#: architecture with the loss-level one; every other pair runs with ``-m slow``.
DEFAULT_CASES = {("mmoe", "gradvac"), ("ple", "uw"), ("cross_stitch", "uw")}


def _cases() -> list:
    """Every architecture with every method; in the default run only the ones in
    :data:`DEFAULT_CASES` (three fits per case, each compiled afresh, take 5-35 s on 2 cores:
    the rest with ``-m slow``)."""
    return [
        pytest.param(
            name,
            method,
            id=f"{name}-{method}",
            marks=() if (name, method) in DEFAULT_CASES else (pytest.mark.slow,),
        )  # fmt: skip
        for name in ARCHITECTURES
        for method in METHODS
    ]


@pytest.mark.parametrize("name,method", _cases())
def test_a_killed_and_interrupted_run_resumes_to_the_uninterrupted_result(name, method, tmp_path):
    reference, run, _ = _reference_and_interrupted(tmp_path, name, method)
    resumed = _fit(run, name, method, resume=True)
    assert resumed.result.resumed_from == {"epoch": 3, "batch": 1}
    assert [r.epoch for r in resumed.result.history] == [1, 2, 3]
    assert any("seed_generator" in v.path for v in reference.model.variables)  # dropout's
    assert_same_run(resumed, reference)


# ----------------------------------------------------------------- the comparison can fail
@pytest.fixture(scope="module")
def interrupted_mmoe(tmp_path_factory) -> tuple[Run, Path, Path]:
    return _reference_and_interrupted(tmp_path_factory.mktemp("stale"), "mmoe", "uw")


@pytest.mark.parametrize(
    "group",
    [
        "model",
        *(pytest.param(g, marks=pytest.mark.slow) for g in ("optimizer", "weighting", "trainer")),
    ],
)
def test_a_resume_that_restores_stale_state_is_caught(group, interrupted_mmoe, tmp_path):
    """A checkpoint whose ``group`` is one epoch and a step old (as if saving forgot it) must
    not pass :func:`assert_same_run`: every group it compares matters to the result."""
    reference, run, stale = interrupted_mmoe
    directory = tmp_path / "run"
    directory.mkdir()
    (directory / "best.npz").write_bytes((run / "best.npz").read_bytes())
    groups, progress = checkpoint.load(run / "last.npz")
    old, _ = checkpoint.load(stale)
    assert any(not np.array_equal(a, b) for a, b in zip(groups[group], old[group], strict=True)), (
        f"the {group} group did not change between the two checkpoints"
    )
    groups[group] = old[group]
    checkpoint.save(
        directory / "last.npz",
        {k: [tf.constant(a) for a in arrays] for k, arrays in groups.items()},
        progress,
    )
    resumed = _fit(directory, "mmoe", "uw", resume=True)
    with pytest.raises(AssertionError):
        assert_same_run(resumed, reference)


# --------------------------------------------------------------------------------- a real kill
def _numbers(run_dir: Path) -> dict:
    results = records.load(run_dir / "results.json")
    assert results["status"] == "complete", results.get("error")
    (joint,) = results["runs"]
    return {
        "test": joint["test"],
        "best_epoch": joint["best_epoch"],
        "history": [(h["train_loss"], h["loss_weights"], h["val"]) for h in joint["history"]],
    }


@pytest.mark.slow
def test_sigkill_of_a_ple_run_then_rerun_gives_the_uninterrupted_numbers(npz_root, tmp_path):
    """``python -m mtbench ... architecture=ple weighting=uw`` killed with SIGKILL in its second
    epoch, then started again with the same command: the same numbers as a run never killed."""
    args = [
        "+experiment=cifar100_mtl", "architecture=ple", "weighting=uw",
        f"dataset.root={npz_root}", "dataset.download=false", "dataset.val_size=100",
        "trainer.batch_size=32", "trainer.epochs=4", "trainer.precision=float32",
        "trainer.progress=false", "benchmark.single_task=false", "hydra.run.dir=run",
    ]  # fmt: skip
    (tmp_path / "reference").mkdir()
    reference = run_mtbench(args, cwd=tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-3000:]

    work = tmp_path / "killed"
    work.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "mtbench", *args], cwd=work, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    last = work / "run" / "checkpoints" / "joint" / "last.npz"
    deadline = time.monotonic() + 600
    while not last.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{last} never appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # in epoch 2: epoch 1's checkpoint has just been written
    process.wait()
    assert process.returncode == -signal.SIGKILL
    killed = json.loads((work / "run" / "results.json").read_text())
    assert killed["status"] == "running" and killed["runs"] == []  # killed before the end

    rerun = run_mtbench(args, cwd=work)  # the same command, the same run directory
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming at epoch" in rerun.stdout + rerun.stderr
    (joint,) = records.load(work / "run" / "results.json")["runs"]
    assert joint["resumed_from"]["batch"] == 0  # from the end of an epoch: the kill lost the rest
    assert _numbers(work / "run") == _numbers(tmp_path / "reference" / "run")
