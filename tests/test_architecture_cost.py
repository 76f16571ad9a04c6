"""The step of an architecture against hard sharing's (issue 11 item 3): ``comparison.cost.
joint_over_hard_sharing``, timed in the cost probe's interleaved rounds after training.

No timing is asserted (the machine is shared): the tests check that both steps were timed (the
probe's own medians, captured as it returns them, are the ones recorded), that the ratio is the
ratio of the recorded medians, that the counterpart is a hard-sharing model of the same parts,
and that the probe leaves the training results alone."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from mtbench import cost as cost_module
from mtbench import protocol
from mtbench.cli import config_dir, prepare
from mtbench.cost import (
    HARD_SHARING_ITSELF,
    HARD_SHARING_PROBE,
    architecture_comparison,
    cost_comparison,
)
from mtbench.model import MultiTaskModel
from mtbench.protocol import Benchmark
from mtbench.results import cost_lines

TINY = [
    "dataset.val_size=50",
    "dataset.train_limit=150",
    "trainer.epochs=1",
    "trainer.batch_size=50",
    "trainer.progress=false",
    "trainer.precision=float32",
]
RUNS = ["single:fine", "single:coarse", "joint"]
#: four experts, each a whole seed_cnn backbone
MMOE = ["architecture=mmoe", "architecture.num_experts=4"]


@pytest.fixture(scope="module")
def baselines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One baseline cache for the module: the single-task runs train once."""
    return tmp_path_factory.mktemp("baselines")


def _cfg(npz_root: Path, baselines: Path, *overrides: str):
    prepare()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                "+experiment=cifar100_mtl",
                f"dataset.root={npz_root}",
                f"benchmark.baseline_cache={baselines}",
                *TINY,
                *overrides,
            ],
        )


@pytest.fixture
def probe_spy(monkeypatch) -> dict:
    """What the cost probe timed (names, rounds, the medians it returned) and every model built
    with an architecture other than the config's (the hard-sharing counterpart)."""
    seen: dict = {"counterparts": []}
    timer, builder = cost_module.interleaved_step_seconds, protocol.build_model

    def timed(steppers, *, rounds, steps):
        medians = timer(steppers, rounds=rounds, steps=steps)
        seen.update(names=list(steppers), rounds=rounds, steps=steps, medians=dict(medians))
        seen["timed_until"] = time.perf_counter()
        return medians

    def build(cfg, data, tasks, *args, architecture=None, **kwargs):
        if architecture is not None:
            seen.setdefault("counterpart_from", time.perf_counter())
        model = builder(cfg, data, tasks, *args, architecture=architecture, **kwargs)
        if architecture is not None:
            seen["counterparts"].append((architecture, tuple(tasks), model))
        return model

    monkeypatch.setattr(protocol, "interleaved_step_seconds", timed)
    monkeypatch.setattr(protocol, "build_model", build)
    return seen


def test_an_mmoe_run_is_timed_against_its_hard_sharing_counterpart(
    npz_root, baselines, tmp_path, probe_spy
):
    results = Benchmark(_cfg(npz_root, baselines, *MMOE, "benchmark.cost_rounds=2"), tmp_path).run()
    cost = results["comparison"]["cost"]
    assert results["comparison"]["cost_undefined"] is None
    # both joint steps were timed, in the same rounds as the runs
    assert probe_spy["names"] == [*RUNS, HARD_SHARING_PROBE] == cost["timed"]
    assert probe_spy["rounds"] == cost["rounds"] == 2 and probe_spy["steps"] == cost["steps"] >= 1
    medians = probe_spy["medians"]
    assert cost["step_seconds"] == {name: medians[name] for name in RUNS}  # the runs only
    assert cost["hard_sharing_step_seconds"] == medians[HARD_SHARING_PROBE] > 0
    assert cost["joint_architecture"] == "mmoe"
    assert cost["joint_over_hard_sharing"] == pytest.approx(
        medians["joint"] / medians[HARD_SHARING_PROBE], rel=1e-12
    )
    assert cost["joint_over_hard_sharing_undefined"] is None
    # what the probe cost the benchmark includes building the counterpart, not only the rounds
    assert cost["probe_seconds"] >= probe_spy["timed_until"] - probe_spy["counterpart_from"] > 0
    method = cost["joint_over_hard_sharing_method"]
    assert "architecture mmoe" in method and "2 interleaved rounds" in method
    # the existing ratios keep their definition: the runs' medians only
    singles = medians["single:fine"] + medians["single:coarse"]
    assert cost["joint_over_singles"] == pytest.approx(medians["joint"] / singles, rel=1e-12)
    # the counterpart: one hard-sharing model of both tasks, from the same parts, fewer weights
    [(architecture, tasks, model)] = probe_spy["counterparts"]
    assert architecture == {"name": "hard_sharing"} and tasks == ("fine", "coarse")
    assert type(model) is MultiTaskModel
    joint = next(r for r in results["runs"] if r["name"] == "joint")
    assert joint["architecture"] == "mmoe"
    hard_trainable = sum(int(v.numpy().size) for v in model.trainable_variables)
    assert hard_trainable < joint["parameter_counts"]["trainable"]
    report = (tmp_path / "report.md").read_text()
    assert (
        f"a joint step of mmoe costs {cost['joint_over_hard_sharing']:.2f}x a joint step of "
        "hard sharing" in report
    )


def test_hard_sharing_is_not_timed_against_itself(npz_root, baselines, tmp_path, probe_spy):
    results = Benchmark(_cfg(npz_root, baselines, "benchmark.cost_rounds=1"), tmp_path).run()
    cost = results["comparison"]["cost"]
    assert probe_spy["names"] == RUNS == cost["timed"] and not probe_spy["counterparts"]
    assert cost["joint_architecture"] == "hard_sharing"
    assert cost["joint_over_hard_sharing"] is None and cost["hard_sharing_step_seconds"] is None
    assert cost["joint_over_hard_sharing_undefined"] == HARD_SHARING_ITSELF
    assert "1 by definition" in HARD_SHARING_ITSELF
    assert cost["joint_over_hard_sharing_method"] is None
    assert "1 by definition" in (tmp_path / "report.md").read_text()


def test_a_sampling_methods_epoch_counts_its_updates_not_its_batches(
    npz_root, baselines, tmp_path, probe_spy
):
    """sdmgrad reads three batches per update: its epoch of 3 batches is 1 step, as the trainer
    counts it, so the epoch cost is one (3-batch) step, not three."""
    cfg = _cfg(npz_root, baselines, "weighting=sdmgrad", "benchmark.cost_rounds=1")
    results = Benchmark(cfg, tmp_path).run()
    cost = results["comparison"]["cost"]
    joint = next(r for r in results["runs"] if r["name"] == "joint")
    assert cost["steps_per_epoch"]["single:fine"] == 3  # 150 examples, batches of 50
    assert cost["steps_per_epoch"]["joint"] == 1 == joint["timing"]["steps_per_epoch"]
    seconds = cost["step_seconds"]
    singles = sum(seconds[f"single:{t}"] * 3 for t in ("fine", "coarse"))
    assert cost["joint_epoch_over_singles"] == pytest.approx(seconds["joint"] / singles, rel=1e-9)


@pytest.mark.slow
def test_without_the_probe_the_cost_is_null_with_the_reason_and_training_is_unchanged(
    npz_root, baselines, tmp_path, probe_spy
):
    """cost_rounds=0: nothing is timed or built, ``cost`` is null and ``cost_undefined`` says
    why; the runs' results equal those of the same config with the probe (it runs after them)."""
    off = Benchmark(_cfg(npz_root, baselines, *MMOE, "benchmark.cost_rounds=0"), tmp_path / "off")
    results = off.run()
    assert "names" not in probe_spy and not probe_spy["counterparts"]
    comparison = results["comparison"]
    assert comparison["cost"] is None
    assert "benchmark.cost_rounds=0" in comparison["cost_undefined"]
    assert "joint_over_hard_sharing" in comparison["cost_undefined"]
    report = (tmp_path / "off" / "report.md").read_text()
    assert f"No load-robust cost: {comparison['cost_undefined']}" in report

    on = Benchmark(_cfg(npz_root, baselines, *MMOE, "benchmark.cost_rounds=1"), tmp_path / "on")
    with_probe = on.run()
    assert probe_spy["names"][-1] == HARD_SHARING_PROBE
    for before, after in zip(results["runs"], with_probe["runs"], strict=True):
        assert before["name"] == after["name"]
        for key in ("test", "val", "best_epoch", "parameter_counts"):
            assert before[key] == after[key], (before["name"], key)
        losses = [h["train_loss"] for h in before["history"]]
        assert losses == [h["train_loss"] for h in after["history"]], before["name"]
    assert comparison["delta_m_percent"] == with_probe["comparison"]["delta_m_percent"]


# ------------------------------------------------------------------------ the record, by hand
def test_the_ratio_is_the_ratio_of_the_medians_and_the_counterpart_is_not_a_run():
    seconds = {"single:a": 0.02, "single:b": 0.03, "joint": 0.08, HARD_SHARING_PROBE: 0.032}
    steps = {"single:a": 10, "single:b": 10, "joint": 10}
    record = cost_comparison(
        seconds, ["a", "b"], rounds=3, steps=4, steps_per_epoch=steps, architecture="mmoe"
    )
    assert record["joint_over_hard_sharing"] == pytest.approx(0.08 / 0.032)
    assert record["hard_sharing_step_seconds"] == 0.032
    assert record["timed"] == list(seconds) and (record["rounds"], record["steps"]) == (3, 4)
    assert HARD_SHARING_PROBE not in record["step_seconds"]
    # the older ratios ignore the counterpart
    assert record["joint_over_singles"] == pytest.approx(0.08 / 0.05)
    assert record["joint_epoch_over_singles"] == pytest.approx(0.8 / 0.5)
    assert "3 interleaved rounds of 4 steps" in record["joint_over_hard_sharing_method"]
    report = "\n".join(cost_lines({"comparison": {"cost": record}, "runs": []}))
    assert "a joint step of mmoe costs 2.50x a joint step of hard sharing" in report
    assert "80.00 ms against 32.00 ms" in report


def test_a_counterpart_that_was_not_timed_is_null_with_the_reason():
    why = "the hard-sharing joint model could not be built for the cost probe: no"
    record = architecture_comparison(0.1, None, "mtan", rounds=1, steps=1, undefined=why)
    assert record["joint_over_hard_sharing"] is None
    assert record["joint_over_hard_sharing_undefined"] == why
    assert record["joint_over_hard_sharing_method"] is None
    record = architecture_comparison(0.1, None, "mtan", rounds=1, steps=1)
    assert HARD_SHARING_PROBE in record["joint_over_hard_sharing_undefined"]
    # hard sharing: not reported even when a number is passed
    record = architecture_comparison(0.1, 0.1, "hard_sharing", rounds=1, steps=1)
    assert record["joint_over_hard_sharing"] is None
    assert record["joint_over_hard_sharing_undefined"] == HARD_SHARING_ITSELF
