"""The multirun leaderboard: grouping, statistics over seeds, failed runs, files, CLI, callback."""

from __future__ import annotations

import atexit
import csv
import importlib.util
import io
import json
import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, run_mtbench
from omegaconf import OmegaConf

from mtbench import leaderboard, records
from mtbench.callbacks import LeaderboardCallback
from mtbench.leaderboard import LeaderboardError, build, main, summarize, write_leaderboard

# Student t quantiles t(0.975, df), from a printed table.
T_975 = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305}
DATA = Path(__file__).parent / "data"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------ hand-made runs
def _config(seed: int, weighting: str = "ew", lr: float = 0.001) -> dict:
    options = {"weights": {}, "default": 1.0} if weighting == "static" else {}
    return {
        "dataset": {"root": f"/data/{seed}", "download": False, "val_size": 100},
        "backbone": {"name": "seed_cnn"},
        "head": {"name": "dense"},
        "weighting": {**options, "name": weighting},
        "trainer": {"learning_rate": lr, "epochs": 2, "progress": seed % 2 == 0},
        "benchmark": {"tasks": ["fine", "coarse"], "single_task": True},
        "seed": seed,
        "resume": f"outputs/run{seed}" if seed == 2 else None,
    }


def _run(name: str, accuracies: dict[str, float], epoch_seconds=(1.0, 1.0)) -> dict:
    return {
        "name": name,
        "tasks": list(accuracies),
        "test": {
            t: {"accuracy": a, "top5_accuracy": min(1.0, 2 * a)} for t, a in accuracies.items()
        },
        "timing": {"epoch_seconds": list(epoch_seconds), "train_seconds": sum(epoch_seconds)},
        "device": "CPU",
    }


#: The "tasks" section of the hand-made runs: two classification tasks.
TASKS = {
    t: {
        "kind": "classification",
        "primary": "accuracy",
        "metrics": {
            "accuracy": {"unit": "fraction", "higher_is_better": True, "description": "top-1"},
            "top5_accuracy": {"unit": "fraction", "higher_is_better": True, "description": ""},
        },
        "labelled": {"train": 800, "val": 100, "test": 300},
        "examples": {"train": 800, "val": 100, "test": 300},
    }
    for t in ("fine", "coarse")
}
#: The options of the hand-made dataset config that say where data is (as its plugin marks them)
LOCATION = ["dataset.root", "dataset.download"]


def write_run(
    path: Path,
    config: dict,
    joint: dict[str, float] | None = None,
    single: dict[str, float] | None = None,
    epoch_seconds=(1.0, 1.0),
    status: str = "complete",
    error: str | None = None,
) -> Path:
    """A Hydra job dir: ``.hydra/config.yaml``, ``.hydra/overrides.yaml`` and a ``/2``
    ``results.json`` (two classification tasks)."""
    single = single if single is not None else {"fine": 0.40, "coarse": 0.50}
    runs = [_run(records.single_run_name(t), {t: a}) for t, a in single.items()]
    if joint is not None:
        runs.append(_run(records.JOINT_RUN, joint, epoch_seconds))
    results = records.new_results(config, {"git_commit": "abc123"}, location_keys=LOCATION)
    results.update(status=status, error=error, tasks=TASKS, runs=runs)
    if status == "complete":
        results["comparison"] = records.compare(runs, TASKS)
    write_hydra_dir(path, config)
    records.write(path / "results.json", results)
    return path


def write_hydra_dir(path: Path, config: dict) -> Path:
    (path / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(config), path / ".hydra" / "config.yaml")
    overrides = [f"weighting={config['weighting']['name']}", f"seed={config['seed']}"]
    OmegaConf.save(OmegaConf.create(overrides), path / ".hydra" / "overrides.yaml")
    return path


def write_hydra_mode(path: Path, mode: str) -> Path:
    """``.hydra/hydra.yaml`` as Hydra writes it, reduced to ``hydra.mode`` (RUN or MULTIRUN)."""
    (path / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create({"hydra": {"mode": mode}}), path / ".hydra" / "hydra.yaml")
    return path


def edit_results(job: Path, change) -> Path:
    """Apply ``change(results)`` to the job's ``results.json``: fields a test adds by hand."""
    results = json.loads((job / "results.json").read_text())
    change(results)
    (job / "results.json").write_text(json.dumps(results))
    return job


# joint fine accuracy per seed of the ew row; everything else is constant
EW_FINE = {0: 0.40, 1: 0.42, 2: 0.47}


def write_ew_seeds(sweep: Path, seeds=(0, 1, 2)) -> None:
    for index, seed in enumerate(seeds):
        write_run(
            sweep / str(index),
            _config(seed),
            joint={"fine": EW_FINE[seed], "coarse": 0.50},
            epoch_seconds=(1.0 + seed, 3.0 + seed),  # seconds per epoch 2 + seed
        )


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """ew x seeds 0-2, static x seeds 0-1, ew at lr 0.01 with one seed."""
    root = tmp_path / "sweep"
    write_ew_seeds(root)
    for index, seed in enumerate((0, 1)):
        write_run(
            root / str(3 + index), _config(seed, "static"), joint={"fine": 0.5, "coarse": 0.6}
        )
    write_run(root / "5", _config(0, lr=0.01), joint={"fine": 0.30, "coarse": 0.45})
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def _rows_by_name(board) -> dict:
    return {
        (row.identity["weighting.name"], row.identity["trainer.learning_rate"]): row
        for row in board.rows
    }


# ---------------------------------------------------------------------------------- statistics
def test_summary_statistics_match_hand_computation():
    stat = summarize([1.0, 2.0, 3.0, 4.0])
    std = math.sqrt((1.5**2 + 0.5**2 + 0.5**2 + 1.5**2) / 3)
    half = T_975[3] * std / 2
    assert stat.n == 4 and stat.mean == pytest.approx(2.5) and stat.std == pytest.approx(std)
    assert (stat.ci_low, stat.ci_high) == (pytest.approx(2.5 - half), pytest.approx(2.5 + half))
    two = summarize([0.0, 2.0])
    assert two.ci_high == pytest.approx(1.0 + T_975[1] * math.sqrt(2) / math.sqrt(2))


def test_one_value_has_no_spread_and_no_interval():
    assert summarize([7.0]) == leaderboard.Stat(1, 7.0, None, None, None)
    assert summarize([]) == leaderboard.Stat(0, None, None, None, None)


# ------------------------------------------------------------------------------------ grouping
def test_runs_are_grouped_by_config_without_seed(sweep):
    board = build([sweep])
    rows = _rows_by_name(board)
    assert set(rows) == {("ew", 0.001), ("static", 0.001), ("ew", 0.01)}
    # dataset.root, trainer.progress and resume differ between seeds but are not part of the
    # configuration's identity
    assert [r.seed for r in rows[("ew", 0.001)].runs] == [0, 1, 2]
    assert rows[("static", 0.001)].seeds == [0, 1] and rows[("ew", 0.01)].seeds == [0]
    assert "seed" not in rows[("ew", 0.001)].identity
    assert "dataset.root" not in rows[("ew", 0.001)].identity
    assert board.tasks == ["fine", "coarse"] and not board.failed


def test_varying_keys_are_the_columns_and_shared_keys_are_listed(sweep):
    board = build([sweep])
    # a plugin's name first, then its options (absent for ew), then the trainer's key
    assert board.varying == [
        "weighting.name",
        "weighting.weights",
        "weighting.default",
        "trainer.learning_rate",
    ]
    assert board.shared["backbone.name"] == "seed_cnn"
    headers, rows = leaderboard.main_table(board)
    # the Markdown shows a plugin and its differing options in one column
    assert headers[:5] == ["#", "rank", "weighting", "trainer.learning_rate", "seeds"]
    assert [r[2:4] for r in rows] == [
        ["static(weights={}, default=1.0)", "0.001"],
        ["ew", "0.001"],  # ew has no weights/default options
        ["ew", "0.01"],
    ]
    assert (
        board.label(0)
        == "#1 weighting=static(weights={}, default=1.0), trainer.learning_rate=0.001"
    )


def test_row_statistics_are_mean_std_and_t_interval_over_seeds(sweep):
    board = build([sweep])
    row = _rows_by_name(board)[("ew", 0.001)]
    metric = {m.column: m for m in board.quantities}
    fine = row.stat(metric["fine_joint_accuracy_pct"])
    half = T_975[2] * math.sqrt(13) / math.sqrt(3)  # deviations -3, -1, +4 points
    assert fine.n == 3 and fine.mean == pytest.approx(43.0)
    assert fine.std == pytest.approx(math.sqrt(13))
    assert fine.ci_low == pytest.approx(43.0 - half) and fine.ci_high == pytest.approx(43.0 + half)
    # fine 40 % -> 40, 42, 47 %: +0, +5, +17.5 %; coarse unchanged; delta_m the mean of the two
    gains = [0.0, 2.5, 8.75]
    assert [r.delta_m for r in row.runs] == pytest.approx(gains)
    assert row.stat(metric["delta_m_pct"]).mean == pytest.approx(sum(gains) / 3)
    seconds = row.stat(metric["joint_seconds_per_epoch"])
    assert seconds.mean == pytest.approx(3.0) and seconds.std == pytest.approx(1.0)
    single = row.stat(metric["fine_single_accuracy_pct"])
    assert single.mean == pytest.approx(40.0) and single.std == pytest.approx(0.0)


def test_rows_are_ranked_by_mean_delta_m(sweep):
    board = build([sweep])
    means = [
        row.stat(m).mean
        for row in board.rows
        for m in board.quantities
        if m.column == "delta_m_pct"
    ]
    assert means == sorted(means, reverse=True)
    assert board.rows[0].identity["weighting.name"] == "static"


def test_one_seed_interval_is_shown_as_undefined(sweep, tmp_path):
    board = write_leaderboard([sweep], tmp_path / "out")
    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    lone = next(line for line in markdown.splitlines() if "| 0.01 " in line)
    assert "30.00 ± n/a [undefined]" in lone and "± 0.00 [" not in lone
    assert "43.00 ± 3.61 [34.04, 51.96]" in markdown
    rows = list(csv.DictReader((tmp_path / "out" / "leaderboard.csv").open()))
    one = next(r for r in rows if r["trainer.learning_rate"] == "0.01")
    assert one["fine_joint_accuracy_pct_mean"] == "30.0"
    assert one["fine_joint_accuracy_pct_n"] == "1"
    for column in ("std", "ci95_low", "ci95_high"):
        assert one[f"fine_joint_accuracy_pct_{column}"] == ""
    assert len(board.rows) == 3


# -------------------------------------------------------------------------------- failed runs
def test_failed_and_incomplete_runs_are_listed_and_not_counted(sweep, tmp_path):
    write_run(
        sweep / "6", _config(3), single={"fine": 0.99, "coarse": 0.99}, status="failed",
        error="RuntimeError: in user code:\n\n    weighting exploded",
    )  # fmt: skip
    write_run(sweep / "7", _config(4), single={"fine": 0.99}, status="running")
    write_hydra_dir(sweep / "8", _config(5))  # died before writing results.json
    write_hydra_dir(sweep / "9", _config(6))
    (sweep / "9" / "results.json").write_text("{truncated")
    board = write_leaderboard([sweep], tmp_path / "out")

    statuses = {run.path.name: run.status for run in board.failed}
    assert statuses == {"6": "failed", "7": "running", "8": "no results", "9": "unreadable"}
    ew = _rows_by_name(board)[("ew", 0.001)]
    assert ew.seeds == [0, 1, 2] and len(ew.failed) == 4
    single = next(m for m in board.quantities if m.column == "fine_single_accuracy_pct")
    assert ew.stat(single).mean == pytest.approx(40.0)  # the failed runs' 99 % is not averaged in
    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    failed_section = markdown.split("## Failed and incomplete runs")[1].split("## ")[0]
    assert "RuntimeError: in user code: … weighting exploded" in failed_section
    assert f"cannot read {sweep / '9' / 'results.json'}" in failed_section
    assert "no results.json" in failed_section and "| running " in failed_section
    assert "4 failed or incomplete run(s)" in markdown
    rows = list(csv.DictReader((tmp_path / "out" / "leaderboard.csv").open()))
    assert {r["n_failed"] for r in rows} == {"4", "0"}


def test_a_failed_training_run_inside_a_complete_benchmark_is_listed(sweep, tmp_path):
    job = write_run(sweep / "6", _config(3), joint={"fine": 0.9, "coarse": 0.9})
    results = records.load(job / "results.json")
    joint = results["runs"][-1]
    joint.update(status="failed", error="FloatingPointError: non-finite loss", test=None)
    results["comparison"] = None
    records.write(job / "results.json", results)
    board = write_leaderboard([sweep], tmp_path / "out")

    ew = _rows_by_name(board)[("ew", 0.001)]
    assert ew.seeds == [0, 1, 2, 3] and len(ew.failed) == 1  # seed 3's baselines count
    metric = {m.column: m for m in board.quantities}
    assert ew.stat(metric["fine_joint_accuracy_pct"]).n == 3  # its joint run does not
    assert ew.stat(metric["fine_single_accuracy_pct"]).n == 4
    (failed,) = board.failed
    assert failed.part == "joint" and "non-finite loss" in failed.error
    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "43.00 ± 3.61 [34.04, 51.96] (n=3)" in markdown and "(joint)" in markdown


def test_a_sweep_where_every_run_failed_still_gets_a_leaderboard(tmp_path):
    write_run(tmp_path / "sweep" / "0", _config(0), status="failed", error="OSError: disk full")
    board = write_leaderboard([tmp_path / "sweep"], tmp_path / "out")
    assert not board.rows and len(board.failed) == 1
    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "0 configuration(s)" in markdown and "OSError: disk full" in markdown
    assert not list((tmp_path / "out").glob("*.png"))


def test_a_repeated_seed_is_counted_once_and_noted(sweep, tmp_path):
    again = tmp_path / "again"
    write_run(again / "0", _config(1), joint={"fine": 0.42, "coarse": 0.50}, epoch_seconds=(2, 4))
    later = (sweep / "1" / "results.json").stat().st_mtime + 60
    os.utime(again / "0" / "results.json", (later, later))
    board = write_leaderboard([sweep, again], tmp_path / "out")
    ew = _rows_by_name(board)[("ew", 0.001)]
    assert ew.seeds == [0, 1, 2] and len(ew.duplicates) == 1
    assert ew.runs[1].path == (again / "0").resolve()  # the most recently finished one counts
    assert ew.duplicates[0].path == (sweep / "1").resolve()
    assert "repeats seed 1" in (tmp_path / "out" / "leaderboard.md").read_text()


# ------------------------------------------------------------------------------ files and plots
def test_csv_has_one_row_per_configuration_with_every_statistic(sweep, tmp_path):
    write_leaderboard([sweep], tmp_path / "out")
    rows = list(csv.DictReader((tmp_path / "out" / "leaderboard.csv").open()))
    assert [r["row"] for r in rows] == ["1", "2", "3"]
    assert [r["rank"] for r in rows] == ["1", "2", ""]  # the one-seed row is not ranked
    assert rows[2]["not_ranked"] == "1 seed: not ranked"
    ew = next(
        r for r in rows if r["weighting.name"] == "ew" and r["trainer.learning_rate"] == "0.001"
    )
    assert ew["n_seeds"] == "3" and ew["seeds"] == "0 1 2" and ew["n_failed"] == "0"
    half = T_975[2] * math.sqrt(13) / math.sqrt(3)
    assert float(ew["fine_joint_accuracy_pct_mean"]) == pytest.approx(43.0)
    assert float(ew["fine_joint_accuracy_pct_std"]) == pytest.approx(math.sqrt(13))
    assert float(ew["fine_joint_accuracy_pct_ci95_low"]) == pytest.approx(43.0 - half)
    assert float(ew["fine_joint_accuracy_pct_ci95_high"]) == pytest.approx(43.0 + half)
    # the other metric of each task follows the primary ones, delta_m and the times
    assert float(ew["fine_joint_top5_accuracy_pct_mean"]) == pytest.approx(86.0)
    header = list(rows[0])
    assert header.index("fine_joint_accuracy_pct_mean") < header.index("delta_m_pct_mean")
    assert header.index("delta_m_pct_mean") < header.index("fine_joint_top5_accuracy_pct_mean")
    assert float(ew["joint_seconds_per_epoch_mean"]) == pytest.approx(3.0)
    assert ew["weighting.weights"] == "" and ew["run_dirs"].count(";") == 2


def test_markdown_states_the_formulas(sweep, tmp_path):
    write_leaderboard([sweep], tmp_path / "out")
    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "100/K" in markdown and "scipy.stats.t" in markdown and "n - 1" in markdown
    assert "![primary_vs_time.png](primary_vs_time.png)" in markdown
    # the location options are those the runs' results.json list, not names mtbench knows
    assert "`seed`, `dataset.download`, `dataset.root` (mtbench.records.identity" in markdown
    others = markdown.split("## Other metrics")[1].split("## ")[0]
    assert "joint fine top5_accuracy (% ↑)" in others


def test_plots_are_written_atomically_and_dropped_when_they_would_be_empty(sweep, tmp_path):
    out = tmp_path / "out"
    write_leaderboard([sweep], out)
    for name in ("primary_vs_time.png", "single_vs_joint.png"):
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
    assert not list(out.glob(".*tmp"))  # no temporary file left behind
    no_baselines = tmp_path / "joint_only"
    write_run(no_baselines / "0", _config(0), joint={"fine": 0.4, "coarse": 0.5}, single={})
    board = write_leaderboard([no_baselines], out)
    assert board.rows[0].runs[0].delta_m is None
    assert (out / "primary_vs_time.png").exists() and not (out / "single_vs_joint.png").exists()


# ---------------------------------------------------------------- ranking and paired comparison
def test_every_file_gets_the_mode_the_umask_gives(sweep, tmp_path):
    import os
    import stat

    previous = os.umask(0o022)
    try:
        write_leaderboard([sweep], tmp_path / "out")
    finally:
        os.umask(previous)
    written = sorted((tmp_path / "out").iterdir())
    assert {p.suffix for p in written} == {".md", ".csv", ".png"}
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name


def _index(board) -> dict:
    return {
        (row.identity["weighting.name"], row.identity["trainer.learning_rate"]): index
        for index, row in enumerate(board.rows)
    }


def test_rows_with_one_seed_are_listed_after_the_ranked_rows_unranked(sweep, tmp_path):
    # one lucky seed has the highest delta_m of all, but one value says nothing about the spread
    write_run(sweep / "6", _config(0, lr=0.1), joint={"fine": 0.9, "coarse": 0.9})
    board = write_leaderboard([sweep], tmp_path / "out")
    ranks = [(r.identity["trainer.learning_rate"], r.rank, r.not_ranked) for r in board.rows]
    assert ranks == [
        (0.001, 1, None),  # static
        (0.001, 2, None),  # ew
        (0.1, None, "1 seed: not ranked"),  # then the unranked rows, by mean delta_m
        (0.01, None, "1 seed: not ranked"),
    ]
    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    lucky = next(line for line in markdown.splitlines() if "| 0.1 " in line)
    assert lucky.startswith("| 3 ") and "| 1 seed: not ranked " in lucky


def test_rows_are_compared_paired_with_ew_on_their_shared_seeds(sweep, tmp_path):
    write_run(sweep / "6", _config(0, "static", lr=0.01), joint={"fine": 0.32, "coarse": 0.45})
    board = write_leaderboard([sweep], tmp_path / "out")
    index = _index(board)

    static = board.paired(index[("static", 0.001)])
    assert static.reference == index[("ew", 0.001)] and static.seeds == (0, 1)
    # static's delta_m is 22.5 on both seeds; ew's is 0.0 on seed 0 and 2.5 on seed 1
    gain = static.gains["delta_m_pct"]
    half = T_975[1] * (1.25 * math.sqrt(2)) / math.sqrt(2)
    assert gain.n == 2 and gain.mean == pytest.approx(21.25)
    assert (gain.ci_low, gain.ci_high) == (pytest.approx(21.25 - half), pytest.approx(21.25 + half))
    fine = static.gains["fine_joint_accuracy_pct"]  # 50 - 40 and 50 - 42 points
    assert fine.mean == pytest.approx(9.0) and fine.n == 2
    assert board.paired(index[("ew", 0.001)]).why == "reference"
    lone = board.paired(index[("static", 0.01)])  # paired with ew at lr 0.01 on seed 0 only
    assert lone.reference == index[("ew", 0.01)] and lone.seeds == (0,)
    assert lone.gains["delta_m_pct"].n == 1

    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    section = markdown.split("## Paired gains over the reference")[1].split("## ")[0]
    assert "`weighting.name=ew`" in section and "`weighting.*`" in section
    assert "+21.25 [+5.37, +37.13]" in section and "n/a (1 paired seed)" in section
    assert "paired gain" in markdown.split("## How the numbers are computed")[1]
    rows = {r["row"]: r for r in csv.DictReader((tmp_path / "out" / "leaderboard.csv").open())}
    row = rows[str(index[("static", 0.001)] + 1)]
    assert row["reference_row"] == str(index[("ew", 0.001)] + 1) and row["paired_seeds"] == "0 1"
    assert row["delta_m_pct_gain_vs_ref_mean"] == "21.25"
    assert float(row["delta_m_pct_gain_vs_ref_ci95_low"]) == pytest.approx(21.25 - half, abs=1e-6)
    assert row["delta_m_pct_gain_vs_ref_n"] == "2"
    row = rows[str(index[("static", 0.01)] + 1)]
    assert row["delta_m_pct_gain_vs_ref_mean"] == "" and row["delta_m_pct_gain_vs_ref_n"] == "1"
    assert rows[str(index[("ew", 0.001)] + 1)]["paired_note"] == "reference"


def test_the_reference_row_can_be_chosen_on_the_command_line(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out), "--reference", "weighting.name=static"]) == 0
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    by_name = {(r["weighting.name"], r["trainer.learning_rate"]): r for r in rows}
    ew, static = by_name[("ew", "0.001")], by_name[("static", "0.001")]
    assert ew["reference_row"] == static["row"] and static["paired_note"] == "reference"
    assert float(ew["delta_m_pct_gain_vs_ref_mean"]) == pytest.approx(-21.25)
    assert by_name[("ew", "0.01")]["paired_note"] == "no reference row"
    assert "`weighting.name=static`" in (out / "leaderboard.md").read_text()
    # a key that names no plugin frees only itself: ew at lr 0.01 against ew at lr 0.001
    board = build([sweep], reference=["trainer.learning_rate=0.001"])
    paired = board.paired(_index(board)[("ew", 0.01)])
    assert paired.reference == _index(board)[("ew", 0.001)] and paired.seeds == (0,)
    with pytest.raises(SystemExit) as info:
        main([str(sweep), "--out", str(out), "--reference", "weighting"])
    assert info.value.code == 2 and "expected KEY=VALUE" in capsys.readouterr().err


# -------------------------------------------------------------------- identity: what really ran
def test_resolved_precision_and_device_class_separate_rows(tmp_path):
    cpu, gpu = "CPU AMD EPYC [avx2 avx512f avx512_bf16]", "GPU NVIDIA H100 (cc 9.0) x1"
    resolved = {0: ("float32", cpu), 1: ("float32", cpu), 2: ("mixed_bfloat16", cpu)}
    resolved[3] = ("float32", gpu)
    root = tmp_path / "sweep"
    for seed in range(5):
        config = _config(seed)
        config["trainer"]["precision"] = "auto"  # says nothing about what ran
        job = write_run(root / str(seed), config, joint={"fine": 0.4, "coarse": 0.5})
        if seed in resolved:  # seed 4: a results.json from before the record existed
            precision, device = resolved[seed]
            record = {"precision": precision, "precision_native": True, "device_class": device}
            edit_results(job, lambda results, record=record: results.update(resolved=record))
    board = build([root])
    rows = {
        (r.identity["trainer.precision"], r.identity.get("device_class")): r.seeds
        for r in board.rows
    }
    assert rows == {
        ("float32", cpu): [0, 1],
        ("mixed_bfloat16", cpu): [2],
        ("float32", gpu): [3],
        ("auto", None): [4],
    }
    assert {"trainer.precision", "device_class"} <= set(board.varying)

    # a job that died before results.json has only its Hydra config (precision auto, no device
    # class): it belongs to the one row that equals it apart from what was resolved
    sweep = tmp_path / "other"
    for seed in (0, 1):
        config = _config(seed)
        config["trainer"]["precision"] = "auto"
        job = write_run(sweep / str(seed), config, joint={"fine": 0.4, "coarse": 0.5})
        record = {"precision": "float32", "precision_native": True, "device_class": cpu}
        edit_results(job, lambda results, record=record: results.update(resolved=record))
    config = _config(2)
    config["trainer"]["precision"] = "auto"
    write_hydra_mode(write_hydra_dir(sweep / "2", config), "MULTIRUN")
    (row,) = build([sweep]).rows
    assert row.seeds == [0, 1] and [run.seed for run in row.failed] == [2]


# ------------------------------------------------------------------------- machine load and cost
def _load(flagged: bool) -> dict:
    return {
        "cpu_seconds": 1.0, "wall_seconds": 5.0 if flagged else 1.1,
        "cpu_share": 0.2 if flagged else 0.9, "load_average": None, "flagged": flagged,
        "reasons": ["cpu_share 0.20 below 0.50"] if flagged else [],
    }  # fmt: skip


def test_flagged_load_is_marked_and_the_load_robust_cost_is_shown(tmp_path):
    root = tmp_path / "sweep"
    write_ew_seeds(root)
    ratio = {0: 0.6, 1: 0.62, 2: 0.64}

    def record(results: dict, seed: int) -> None:
        for run in results["runs"]:
            run["load"] = _load(seed == 1 and run["name"] == "joint")
        results["comparison"]["cost"] = {
            "method": "interleaved steps in one process",
            "step_seconds": {"single:fine": 0.1, "single:coarse": 0.1, "joint": 0.12},
            "joint_over_singles": ratio[seed],
            "joint_over_single": {"fine": 1.2, "coarse": 1.2},
        }

    for seed in ratio:
        edit_results(root / str(seed), lambda results, seed=seed: record(results, seed))
    write_run(root / "3", _config(0, "static"), joint={"fine": 0.5, "coarse": 0.6})  # old file
    out = tmp_path / "out"
    board = write_leaderboard([root], out)

    headers, rows = leaderboard.main_table(board)
    by_name = {row[2]: dict(zip(headers, row, strict=True)) for row in rows}
    assert by_name["ew"]["load"] == "flagged: seed 1"
    assert by_name["static(weights={}, default=1.0)"]["load"] == "n/a"
    seconds = headers.index("s/epoch (joint; load-dependent)")
    assert headers[seconds + 1] == "joint/singles step cost (load-robust)"
    assert by_name["ew"][headers[seconds + 1]].startswith("0.62 ± 0.02 [")
    markdown = (out / "leaderboard.md").read_text()
    notes = markdown.split("## Notes")[1].split("## ")[0]
    assert f"`{os.path.relpath(root / '1', out)}`" in notes
    assert "joint: cpu_share 0.20 below 0.50" in notes
    formulas = markdown.split("## How the numbers are computed")[1]
    assert "joint_over_singles" in formulas and "Load-dependent" in formulas
    csv_rows = {r["weighting.name"]: r for r in csv.DictReader((out / "leaderboard.csv").open())}
    assert csv_rows["ew"]["load_flagged"] == "true" and csv_rows["ew"]["load_flagged_seeds"] == "1"
    assert (
        csv_rows["static"]["load_flagged"] == "" and csv_rows["static"]["load_flagged_seeds"] == ""
    )
    assert float(csv_rows["ew"]["joint_over_singles_cost_mean"]) == pytest.approx(0.62)
    assert csv_rows["ew"]["joint_over_singles_cost_n"] == "3"
    assert csv_rows["static"]["joint_over_singles_cost_n"] == "0"


# ------------------------------------------------------------------ architectures: rows and size
MMOE = {"name": "mmoe", "num_experts": 4, "expert_stages": None, "gate_temperature": 1.0}
#: parameter_counts of the joint model per architecture (numbers of trainable scalars)
COUNTS = {
    "hard_sharing": {"trainable": 12_345, "shared": 10_000, "task_specific": 2_345,
                     "per_task": {"fine": 2_000, "coarse": 345}, "task_specific_unattributed": 0},
    "mmoe": {"trainable": 50_123, "shared": 47_778, "task_specific": 2_345,
             "per_task": {"fine": 2_000, "coarse": 300}, "task_specific_unattributed": 45},
}  # fmt: skip
#: the mmoe row's joint step over hard sharing's, per seed: mean 2.2, std 0.2
OVER_HARD_SHARING = {0: 2.0, 1: 2.2, 2: 2.4}


def _architecture_config(seed: int, architecture: dict | None) -> dict:
    """``_config`` with an architecture; ``None``: a file written before architectures existed
    (no ``architecture`` key in its config or runs)."""
    config = _config(seed)
    return config if architecture is None else {**config, "architecture": architecture}


def _size_and_cost(architecture: str, seed: int, scope: str = "run"):
    """What results.json records of the joint model's size and cost, per architecture."""

    def change(results: dict) -> None:
        joint = next(r for r in results["runs"] if r["name"] == "joint")
        joint.update(
            architecture=architecture,
            parameter_counts=COUNTS[architecture],
            peak_memory_mb=1000.0 + 100 * seed + (500 if architecture == "mmoe" else 0),
            peak_memory_scope=scope,
            peak_device_memory_mb=None,
        )
        hard = architecture == "hard_sharing"
        results["comparison"]["cost"] = {
            "method": "interleaved", "rounds": 3, "steps": 2,
            "step_seconds": {"single:fine": 0.1, "single:coarse": 0.1, "joint": 0.12},
            "joint_over_singles": 0.6, "joint_over_single": {"fine": 1.2, "coarse": 1.2},
            "joint_architecture": architecture,
            "hard_sharing_step_seconds": None if hard else 0.12 / OVER_HARD_SHARING[seed],
            "joint_over_hard_sharing": None if hard else OVER_HARD_SHARING[seed],
            "joint_over_hard_sharing_undefined": "1 by definition" if hard else None,
        }  # fmt: skip

    return change


@pytest.fixture
def architectures(tmp_path: Path) -> Path:
    """ew with hard sharing (seeds 0 and 1 written before architectures existed, seed 2 with
    ``architecture: {name: hard_sharing}``) and ew with mmoe (seeds 0-2), equal in everything
    else; mmoe's joint accuracies are those of hard sharing + 10 points."""
    root = tmp_path / "sweep"
    for seed in (0, 1, 2):
        old = None if seed < 2 else {"name": "hard_sharing"}
        joint = {"fine": EW_FINE[seed], "coarse": 0.50}
        write_run(root / f"hs{seed}", _architecture_config(seed, old), joint=joint)
        edit_results(root / f"hs{seed}", _size_and_cost("hard_sharing", seed))
        better = {t: a + 0.10 for t, a in joint.items()}
        write_run(root / f"mmoe{seed}", _architecture_config(seed, MMOE), joint=better)
        scope = "process" if seed == 1 else "run"  # a peak of the whole process: left out
        edit_results(root / f"mmoe{seed}", _size_and_cost("mmoe", seed, scope))
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_architectures_are_rows_and_old_results_read_as_hard_sharing(architectures, tmp_path):
    # a job that died before results.json, from before architectures existed: hard sharing's
    write_hydra_dir(architectures / "dead", _config(3))
    board = build([architectures])
    by_architecture = {row.identity["architecture.name"]: row for row in board.rows}
    assert set(by_architecture) == {"hard_sharing", "mmoe"}  # never pooled
    hard, mmoe = by_architecture["hard_sharing"], by_architecture["mmoe"]
    assert [r.path.name for r in hard.runs] == ["hs0", "hs1", "hs2"]  # old and new pooled
    assert [r.path.name for r in mmoe.runs] == ["mmoe0", "mmoe1", "mmoe2"]
    assert [r.path.name for r in hard.failed] == ["dead"] and not mmoe.failed
    assert board.varying[0] == "architecture.name"
    assert {"architecture.num_experts", "architecture.gate_temperature"} <= set(board.varying)
    fine = next(q for q in board.quantities if q.column == "fine_joint_accuracy_pct")
    assert mmoe.stat(fine).mean == pytest.approx(53.0)  # 43 + 10 points: no hard-sharing run
    assert hard.stat(fine).mean == pytest.approx(43.0)  # 40, 42, 47: no mmoe run
    headers, rows = leaderboard.main_table(board)
    assert headers[2] == "architecture"
    assert sorted(r[2] for r in rows) == [
        "hard_sharing",
        "mmoe(num_experts=4, expert_stages=null, gate_temperature=1.0)",
    ]
    # each architecture against hard sharing, seed by seed: +10 points on every seed
    board = build([architectures], ["architecture.name=hard_sharing"])
    index = {row.identity["architecture.name"]: i for i, row in enumerate(board.rows)}
    paired = board.paired(index["mmoe"])
    assert paired.reference == index["hard_sharing"] and paired.seeds == (0, 1, 2)
    assert paired.gains["fine_joint_accuracy_pct"].mean == pytest.approx(10.0)


def test_size_and_cost_of_each_architecture_are_columns(architectures, tmp_path):
    out = tmp_path / "out"
    board = write_leaderboard([architectures], out)
    index = {row.identity["architecture.name"]: i for i, row in enumerate(board.rows)}
    headers, rows = leaderboard.size_table(board)
    assert headers == [
        "#",
        "architecture",
        "trainable params (joint)",
        "shared params (joint)",
        "own params per task",
        "joint/hard-sharing step (load-robust)",
        "peak host MiB (joint)",
    ]  # fmt: skip  (no GPU column: no run used one)
    hard = dict(zip(headers, rows[index["hard_sharing"]], strict=True))
    mmoe = dict(zip(headers, rows[index["mmoe"]], strict=True))
    assert (hard["trainable params (joint)"], hard["shared params (joint)"]) == ("12,345", "10,000")
    assert (mmoe["trainable params (joint)"], mmoe["shared params (joint)"]) == ("50,123", "47,778")
    assert hard["own params per task"] == "fine 2,000; coarse 345"
    assert mmoe["own params per task"] == "fine 2,000; coarse 300; several 45"
    assert hard["joint/hard-sharing step (load-robust)"] == "1 (hard sharing)"
    half = T_975[2] * 0.2 / math.sqrt(3)
    assert mmoe["joint/hard-sharing step (load-robust)"] == (
        f"2.20 ± 0.20 [{2.2 - half:.2f}, {2.2 + half:.2f}]"
    )
    # peaks of the joint runs whose scope is the run: hard sharing 1000, 1100, 1200; mmoe 1500,
    # 1700 (seed 1's peak covers the whole process: left out)
    assert hard["peak host MiB (joint)"].startswith("1100 ± 100 [")
    assert mmoe["peak host MiB (joint)"].startswith("1600 ± 141 [")
    assert mmoe["peak host MiB (joint)"].endswith("(n=2)")
    # size and cost stay out of the ranking table
    ranking, _ = leaderboard.main_table(board)
    assert not {"joint/hard-sharing step (load-robust)", "peak host MiB (joint)"} & set(ranking)
    markdown = (out / "leaderboard.md").read_text()
    assert "## Size and cost" in markdown and "2.20 ± 0.20" in markdown
    formulas = markdown.split("## How the numbers are computed")[1]
    assert "joint_over_hard_sharing" in formulas and "parameter_counts" in formulas

    csv_rows = {
        r["joint_architecture"]: r for r in csv.DictReader((out / "leaderboard.csv").open())
    }
    assert set(csv_rows) == {"hard_sharing", "mmoe"}
    expected = {
        "joint_params_trainable": ("12345", "50123"),
        "joint_params_shared": ("10000", "47778"),
        "joint_params_task_specific": ("2345", "2345"),
        "fine_joint_params_own": ("2000", "2000"),
        "coarse_joint_params_own": ("345", "300"),
        "joint_params_unattributed": ("0", "45"),
        "joint_over_hard_sharing_cost_n": ("0", "3"),
        "joint_peak_host_memory_MiB_mean": ("1100.0", "1600.0"),
        "joint_peak_host_memory_MiB_n": ("3", "2"),
    }
    for column, (hs, mo) in expected.items():
        assert (csv_rows["hard_sharing"][column], csv_rows["mmoe"][column]) == (hs, mo), column
    assert float(csv_rows["mmoe"]["joint_over_hard_sharing_cost_mean"]) == pytest.approx(2.2)
    assert float(csv_rows["mmoe"]["joint_over_hard_sharing_cost_std"]) == pytest.approx(0.2)
    assert csv_rows["hard_sharing"]["joint_over_hard_sharing_cost_mean"] == ""
    assert "1 by definition" in csv_rows["hard_sharing"]["joint_over_hard_sharing_note"]
    assert csv_rows["mmoe"]["joint_over_hard_sharing_note"] == ""


def test_differing_counts_and_an_unmeasured_step_say_so(architectures, tmp_path):
    def changed(results: dict) -> None:
        joint = next(r for r in results["runs"] if r["name"] == "joint")
        joint["parameter_counts"] = {**COUNTS["mmoe"], "trainable": 50_000}
        results["comparison"]["cost"] = None
        results["comparison"]["cost_undefined"] = "benchmark.cost_rounds=0: the probe is off"

    for seed in (0, 1, 2):
        edit_results(architectures / f"mmoe{seed}", changed if seed == 1 else lambda r: None)
    out = tmp_path / "out"
    board = write_leaderboard([architectures], out)
    mmoe = next(i for i, r in enumerate(board.rows) if r.identity["architecture.name"] == "mmoe")
    headers, rows = leaderboard.size_table(board)
    cells = dict(zip(headers, rows[mmoe], strict=True))
    assert cells["trainable params (joint)"] == "differs: 50,000–50,123"
    assert cells["joint/hard-sharing step (load-robust)"].startswith("2.20 ± 0.28 [")
    assert cells["joint/hard-sharing step (load-robust)"].endswith("(n=2)")
    notes = (out / "leaderboard.md").read_text().split("## Notes")[1].split("## ")[0]
    assert f"#{mmoe + 1}: its runs record different trainable params (joint): 50,000, 50,123" in (
        notes
    )
    row = next(
        r for r in csv.DictReader((out / "leaderboard.csv").open())
        if r["joint_architecture"] == "mmoe"
    )  # fmt: skip
    assert row["joint_params_trainable"] == "" and row["joint_params_shared"] == "47778"
    # a row none of whose runs timed the step says why
    for seed in (0, 2):
        edit_results(architectures / f"mmoe{seed}", changed)
    board = build([architectures])
    mmoe_row = next(r for r in board.rows if r.identity["architecture.name"] == "mmoe")
    assert leaderboard.size.hard_sharing_note(mmoe_row) == (
        "benchmark.cost_rounds=0: the probe is off"
    )


def test_results_without_size_or_architecture_get_no_size_table(sweep):
    board = build([sweep])
    assert {row.identity["architecture.name"] for row in board.rows} == {"hard_sharing"}
    assert "architecture.name" not in board.varying
    assert leaderboard.size_table(board) is None


# --------------------------------------------------------------------- directories never started
def test_single_run_dirs_without_results_are_skipped_and_multirun_jobs_are_failures(tmp_path):
    outputs = tmp_path / "outputs"
    day = outputs / "2026-01-01"
    done = write_run(day / "10-00-00", _config(0), joint={"fine": 0.4, "coarse": 0.5})
    write_hydra_mode(done, "RUN")
    refused = write_hydra_mode(write_hydra_dir(day / "10-05-00", _config(1)), "RUN")
    write_hydra_dir(day / "10-10-00", _config(2))  # no hydra.yaml (older Hydra), not in a sweep
    died = write_hydra_mode(
        write_hydra_dir(outputs / "multirun" / "x" / "0", _config(3)), "MULTIRUN"
    )
    write_hydra_dir(outputs / "multirun" / "y" / "0", _config(4))  # no mode, but in a sweep:
    (outputs / "multirun" / "y" / "multirun.yaml").write_text("hydra: {}\n")
    out = tmp_path / "out"
    board = write_leaderboard([outputs], out)

    assert sorted(p.name for p in board.skipped) == ["10-05-00", "10-10-00"]
    assert sorted(run.path for run in board.failed) == [
        died.resolve(),
        (died.parent.parent / "y" / "0").resolve(),
    ]
    markdown = (out / "leaderboard.md").read_text()
    assert "2 failed or incomplete run(s)" in markdown
    assert "2 single-run director(y/ies) without results.json skipped" in markdown
    assert f"`{os.path.relpath(refused.resolve(), out.resolve())}`" in markdown
    with pytest.raises(LeaderboardError, match="never started a benchmark"):
        build([refused])


# ------------------------------------------------------------------------- numbers in the files
def test_csv_numbers_have_no_float_noise(tmp_path):
    root = tmp_path / "sweep"
    for seed in (0, 1):
        write_run(root / str(seed), _config(seed), joint={"fine": 0.143, "coarse": 0.5})
    assert 100 * 0.143 == 14.299999999999999  # the noise a CSV must not show
    write_leaderboard([root], tmp_path / "out")
    text = (tmp_path / "out" / "leaderboard.csv").read_text()
    (row,) = csv.DictReader(io.StringIO(text))
    assert row["fine_joint_accuracy_pct_mean"] == "14.3"
    assert row["fine_joint_accuracy_pct_ci95_low"] == "14.3"
    assert not re.search(r"\d\.\d{7,}", text)


def _error_bars(ax) -> list[tuple[float, float, float]]:
    """(x, y low, y high) of every vertical error bar in ``ax``."""
    from matplotlib.container import ErrorbarContainer

    bars = []
    for container in ax.containers:
        if isinstance(container, ErrorbarContainer):
            vertical = container.lines[2][-1]  # xerr's bars first, then yerr's
            for (x, low), (_, high) in vertical.get_segments():
                bars.append((x, low, high))
    return bars


def test_plots_show_intervals_and_start_accuracy_axes_at_zero(sweep):
    board = build([sweep])
    half = T_975[2] * math.sqrt(13) / math.sqrt(3)  # the ew row's fine joint accuracy

    figure = leaderboard.plot_primary_vs_time(board)
    fine = figure.axes[0]
    for ax in figure.axes:
        assert ax.get_ylim()[0] == 0 and ax.get_xlim()[0] == 0
        assert "from 0" in ax.get_ylabel() and "95% CI" in ax.get_title()
        assert len(_error_bars(ax)) == 2  # the rows with several seeds; none for one seed
    (ew,) = [bar for bar in _error_bars(fine) if bar[1] < 40]
    assert (ew[1], ew[2]) == (pytest.approx(43.0 - half), pytest.approx(43.0 + half))

    figure = leaderboard.plot_single_vs_joint(board)
    for ax in figure.axes:
        assert ax.get_xlim()[0] == 0 and ax.get_ylim()[0] == 0
        assert "from 0" in ax.get_xlabel() and "from 0" in ax.get_ylabel()
        assert len(_error_bars(ax)) == 2


# --------------------------------------------------------------- schema /1 and generic metrics
def test_a_v1_sweep_still_builds_a_leaderboard(tmp_path):
    """results.json files written by mtbench 0.1 (schema /1) are read through records.load."""
    v1 = json.loads((DATA / "results_v1.json").read_text())
    assert v1["schema"] == "mtbench.results/1"
    root = tmp_path / "sweep"
    for seed, fine in ((0, None), (1, 0.06)):
        results = json.loads(json.dumps(v1))
        results["config"].update(seed=seed)
        results["config"]["dataset"]["root"] = f"/data/{seed}"  # /1: a location option
        if fine is not None:
            results["runs"][2]["test"]["fine"]["accuracy"] = fine
        (root / str(seed)).mkdir(parents=True)
        (root / str(seed) / "results.json").write_text(json.dumps(results))
    out = tmp_path / "out"
    board = write_leaderboard([root], out)
    (row,) = board.rows
    assert row.seeds == [0, 1] and not board.failed
    metric = {q.column: q for q in board.quantities}
    joint_fine = 100 * v1["runs"][2]["test"]["fine"]["accuracy"]
    assert row.stat(metric["fine_joint_accuracy_pct"]).mean == pytest.approx((joint_fine + 6) / 2)
    assert row.stat(metric["delta_m_pct"]).mean == pytest.approx(
        v1["comparison"]["delta_m_percent"]
    )
    assert "coarse_single_top5_accuracy_pct" in metric
    markdown = (out / "leaderboard.md").read_text()
    assert "2 run(s) were read from an older results schema" in markdown
    assert "`dataset.root`" in markdown.split("## Configurations")[1]


def test_location_options_are_those_the_runs_record(tmp_path):
    root = tmp_path / "sweep"
    for seed in (0, 1):  # dataset.root differs per seed (see _config)
        write_run(root / str(seed), _config(seed), joint={"fine": 0.4, "coarse": 0.5})
    assert [r.seeds for r in build([root]).rows] == [[0, 1]]
    # a job that died before results.json: its Hydra config's root differs, it still belongs
    write_hydra_mode(write_hydra_dir(root / "2", _config(2)), "MULTIRUN")
    (row,) = build([root]).rows
    assert [run.seed for run in row.failed] == [2]
    # without the record, dataset.root is an option like any other: two configurations
    for seed in (0, 1):
        edit_results(root / str(seed), lambda results: results.update(location_keys=[]))
    assert sorted(r.seeds for r in build([root]).rows) == [[0], [1]]


ENERGY = {
    "kind": "regression",
    "primary": "mae",
    "metrics": {"mae": {"unit": "eV", "higher_is_better": False, "description": "MAE"}},
    "labelled": {},
    "examples": {},
}


def write_regression_run(path: Path, config: dict, joint_mae: float) -> Path:
    """fine (classification) and energy (regression in eV): single-task MAE 0.20, accuracy 40 %;
    the joint model keeps fine's 40 % and has ``joint_mae``."""
    tasks = {"fine": TASKS["fine"], "energy": ENERGY}
    runs = [
        _run("single:fine", {"fine": 0.40}),
        {**_run("single:energy", {}), "tasks": ["energy"], "test": {"energy": {"mae": 0.20}}},
        _run("joint", {"fine": 0.40}),
    ]
    runs[2]["tasks"].append("energy")
    runs[2]["test"]["energy"] = {"mae": joint_mae}
    results = records.new_results(config, {"git_commit": "abc"}, location_keys=LOCATION)
    results.update(status="complete", tasks=tasks, runs=runs)
    results["comparison"] = records.compare(runs, tasks)
    write_hydra_dir(path, config)
    records.write(path / "results.json", results)
    return path


def test_lower_is_better_metrics_rank_and_pair_by_their_direction(tmp_path):
    root = tmp_path / "sweep"
    maes = {("ew", 0): 0.20, ("ew", 1): 0.20, ("static", 0): 0.15, ("static", 1): 0.10}
    for index, ((weighting, seed), mae) in enumerate(maes.items()):
        write_regression_run(root / str(index), _config(seed, weighting), mae)
    out = tmp_path / "out"
    board = write_leaderboard([root], out)
    # static's lower joint MAE is better: delta_m (fine 0, energy +25 or +50 %) = 12.5 and 25
    assert [row.identity["weighting.name"] for row in board.rows] == ["static", "ew"]
    assert [r.delta_m for r in board.rows[0].runs] == pytest.approx([12.5, 25.0])
    mae = next(q for q in board.quantities if q.column == "energy_joint_mae_eV")
    assert mae.label == "joint energy mae (eV ↓)" and not mae.higher_is_better
    paired = board.paired(0)
    gain = paired.gains["energy_joint_mae_eV"]  # ew's MAE minus static's: 0.05 and 0.10 eV
    half = T_975[1] * (0.025 * math.sqrt(2)) / math.sqrt(2)
    assert gain.mean == pytest.approx(0.075) and gain.ci_high == pytest.approx(0.075 + half)
    markdown = (out / "leaderboard.md").read_text()
    assert "0.125 ± 0.035 [" in markdown  # static's joint MAE: 3 significant digits
    assert "+0.0750 [" in markdown.split("## Paired gains over the reference")[1]
    rows = {r["weighting.name"]: r for r in csv.DictReader((out / "leaderboard.csv").open())}
    assert rows["static"]["energy_joint_mae_eV_gain_vs_ref_mean"] == "0.075"
    figure = leaderboard.plot_single_vs_joint(board)
    energy = figure.axes[1]
    assert "below the diagonal" in energy.get_title() and "↓ better" in energy.get_ylabel()


def test_task_records_of_runs_are_merged_and_conflicts_reported():
    from mtbench.records import TaskRecord

    first = TaskRecord.from_dict("energy", ENERGY)
    rmse = {"unit": "eV", "higher_is_better": False, "description": ""}
    wider = TaskRecord.from_dict(
        "energy", {**ENERGY, "metrics": {**ENERGY["metrics"], "rmse": rmse}}
    )
    upside = {"mae": {"unit": "meV", "higher_is_better": True, "description": ""}}
    flipped = TaskRecord.from_dict("energy", {**ENERGY, "metrics": upside})
    merged, conflicts = leaderboard.merge_task_records(
        [{"energy": first}, {"energy": wider}, {"energy": flipped}]
    )
    assert [m.name for m in merged["energy"].metrics] == ["mae", "rmse"]
    assert merged["energy"].metric("mae").unit == "eV"  # the first declaration is kept
    (conflict,) = conflicts
    assert "task 'energy' metric 'mae'" in conflict and "meV, higher is better" in conflict


# ------------------------------------------------------------------------------------- command
def test_rebuild_command_combines_two_sweeps(tmp_path):
    first, second = tmp_path / "multirun" / "a", tmp_path / "multirun" / "b"
    write_ew_seeds(first, seeds=(0, 1))
    write_ew_seeds(second, seeds=(2,))
    write_run(second / "1", _config(0, "static"), joint={"fine": 0.5, "coarse": 0.6})
    result = subprocess.run(
        [sys.executable, "-m", "mtbench.leaderboard", str(first), str(second), "--out", "board"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "2 configuration(s), 4 complete run(s)" in result.stdout
    rows = list(csv.DictReader((tmp_path / "board" / "leaderboard.csv").open()))
    assert {r["weighting.name"]: r["seeds"] for r in rows} == {"ew": "0 1 2", "static": "0"}


def test_a_single_run_dir_is_a_leaderboard_of_one(tmp_path):
    run = write_run(tmp_path / "run", _config(0), joint={"fine": 0.4, "coarse": 0.5})
    assert main([str(run)]) == 0
    assert (run / "leaderboard.md").exists()


def test_command_errors_are_clear(tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    with pytest.raises(SystemExit) as info:
        main([str(empty)])
    assert info.value.code == 2 and "no runs found under" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing"), "--out", str(tmp_path)])
    assert "missing is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(empty), str(empty)])
    assert "give --out" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ callback
def _hydra_cfg(sweep_dir: Path):
    return OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})


def test_callback_is_registered_in_the_config():
    cfg = OmegaConf.load(REPO / "conf" / "config.yaml")
    from hydra.utils import instantiate

    callback = instantiate(cfg.hydra.callbacks.leaderboard)
    assert isinstance(callback, LeaderboardCallback)


@pytest.fixture
def exit_hooks(monkeypatch) -> list:
    """The callback's at-exit writes, captured instead of registered (others pass through)."""
    hooks: list = []
    register, unregister = atexit.register, atexit.unregister

    def fake_register(func, *args, **kwargs):
        if isinstance(getattr(func, "__self__", None), LeaderboardCallback):
            hooks.append(func)
            return func
        return register(func, *args, **kwargs)

    def fake_unregister(func):
        if func in hooks:
            hooks.remove(func)
        unregister(func)

    monkeypatch.setattr(atexit, "register", fake_register)
    monkeypatch.setattr(atexit, "unregister", fake_unregister)
    return hooks


def test_callback_writes_the_leaderboard_when_the_multirun_ends(sweep, exit_hooks):
    callback = LeaderboardCallback()
    callback.on_multirun_start(_hydra_cfg(sweep))
    assert len(exit_hooks) == 1
    callback.on_multirun_end(_hydra_cfg(sweep))
    assert not exit_hooks and (sweep / "leaderboard.md").exists()


def test_callback_writes_at_exit_when_a_failed_job_skips_multirun_end(sweep, exit_hooks):
    write_run(sweep / "6", _config(3), status="failed", error="ValueError: boom")
    LeaderboardCallback().on_multirun_start(_hydra_cfg(sweep))
    exit_hooks.pop()()  # what the interpreter runs at exit
    assert "ValueError: boom" in (sweep / "leaderboard.md").read_text()


def test_callback_logs_instead_of_raising(tmp_path, sweep, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="mtbench.callbacks")
    callback = LeaderboardCallback()
    callback.on_multirun_end(_hydra_cfg(tmp_path / "nothing_ran"))
    assert "no leaderboard" in caplog.text

    def explode(*args, **kwargs):
        raise RuntimeError("plotting exploded")

    monkeypatch.setattr(leaderboard, "write_leaderboard", explode)
    callback.on_multirun_end(_hydra_cfg(sweep))
    assert "plotting exploded" in caplog.text and "the runs are unaffected" in caplog.text
    callback.on_multirun_end(OmegaConf.create({"hydra": {}}))
    assert "hydra.sweep.dir" in caplog.text


def test_disabled_callback_writes_nothing(sweep):
    callback = LeaderboardCallback(enabled=False)
    callback.on_multirun_start(_hydra_cfg(sweep))
    callback.on_multirun_end(_hydra_cfg(sweep))
    assert not (sweep / "leaderboard.md").exists()


# -------------------------------------------------------------------------- end to end, tiny data
def _tiny(npz_root: Path) -> list[str]:
    return [
        "+experiment=cifar100_mtl",
        f"dataset.root={npz_root}",
        "dataset.val_size=100",
        "trainer.epochs=1",
        "trainer.batch_size=128",
        "trainer.progress=false",
    ]


def _check_job_dirs(sweep: Path, jobs: int, runs: list[str]) -> list[dict]:
    """Every job wrote its own complete results, matching the overrides Hydra gave it."""
    results = []
    for num in range(jobs):
        job = sweep / str(num)
        data = json.loads((job / "results.json").read_text())
        overrides = OmegaConf.load(job / ".hydra" / "overrides.yaml")
        assert data["status"] == "complete", data["error"]
        assert f"seed={data['config']['seed']}" in overrides
        assert f"weighting={data['config']['weighting']['name']}" in overrides or all(
            not o.startswith("weighting=") for o in overrides
        )
        assert [r["name"] for r in data["runs"]] == runs
        results.append(data)
    return results


@pytest.mark.slow  # whole benchmarks in subprocesses; opt in with -m slow
def test_multirun_writes_the_leaderboard_into_the_sweep_dir(npz_root, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_mtbench(
        ["-m", *_tiny(npz_root), "weighting=ew,static", "seed=0,1", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _check_job_dirs(sweep, 4, ["single:fine", "single:coarse", "joint"])
    rows = list(csv.DictReader((sweep / "leaderboard.csv").open()))
    assert sorted(r["weighting.name"] for r in rows) == ["ew", "static"]
    for row in rows:
        assert row["n_seeds"] == "2" and row["seeds"] == "0 1"
        for metric in ("fine_joint_accuracy_pct", "coarse_single_accuracy_pct", "delta_m_pct"):
            low, mean, high = (
                float(row[f"{metric}_{s}"]) for s in ("ci95_low", "mean", "ci95_high")
            )
            assert low <= mean <= high
    markdown = (sweep / "leaderboard.md").read_text()
    assert "2 configuration(s) from 4 complete run(s); 0 failed" in markdown
    for name in ("primary_vs_time.png", "single_vs_joint.png"):
        assert (sweep / name).read_bytes().startswith(PNG_MAGIC)


@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None,
    reason="hydra-joblib-launcher is not installed (pip install hydra-joblib-launcher)",
)
@pytest.mark.slow  # whole benchmarks in subprocesses; opt in with -m slow
def test_parallel_joblib_multirun_loses_no_result(npz_root, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_mtbench(
        [
            "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            *_tiny(npz_root), "benchmark.single_task=false", "seed=0,1",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    results = _check_job_dirs(sweep, 2, ["joint"])
    (row,) = csv.DictReader((sweep / "leaderboard.csv").open())
    assert row["n_seeds"] == "2" and row["seeds"] == "0 1" and row["n_failed"] == "0"
    fine = [100 * r["runs"][0]["test"]["fine"]["accuracy"] for r in results]
    assert float(row["fine_joint_accuracy_pct_mean"]) == pytest.approx(sum(fine) / 2)
    assert not list(sweep.rglob(".*.tmp"))
    assert "launched in parallel (n_jobs 2)" in (sweep / "leaderboard.md").read_text()


@pytest.mark.slow
def test_a_failed_job_is_listed_in_the_sweep_leaderboard(npz_root, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_mtbench(
        ["-m", *_tiny(npz_root), "seed=0", "dataset.train_limit=null,100000",
         f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0  # Hydra reports the failed job...
    markdown = (sweep / "leaderboard.md").read_text()  # ...and the leaderboard is still written
    assert "1 configuration(s) from 1 complete run(s); 1 failed" in markdown
    # a plugin's differing options are shown with its name: dataset=cifar100(train_limit=100000)
    assert "(train_limit=100000)" in markdown.split("## Failed and incomplete runs")[1]
