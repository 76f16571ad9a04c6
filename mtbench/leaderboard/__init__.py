"""Leaderboards over many runs: one row per configuration, statistics over its seeds.

A *run directory* is a Hydra job directory holding ``results.json`` and ``.hydra/``; results are
read through :func:`mtbench.records.load`, so sweeps written with the older schema
``mtbench.results/1`` still build leaderboards. Runs are grouped by their *configuration*:
:func:`mtbench.records.identity` for the purpose ``leaderboard`` (the config without the seed,
which the statistics run over, and without options that do not change what is trained: where
data lives, how progress is shown...), with ``trainer.precision`` replaced by the precision the run
actually used and the machine's ``device_class`` added, where ``results.json`` records them
(``resolved``): runs in float32 and in bfloat16, or on two kinds of hardware, never pool into one
row. The location options are those the runs' ``results.json`` list (``location_keys``).

The numbers come from each run's ``tasks`` section: for every task, every metric its kind reports
(the primary metric first), of the joint and of the single-task model, with its unit (fractions
in %) and direction (higher or lower is better). For each configuration the leaderboard gives,
over its seeds, the mean, the sample standard deviation and a 95% Student-t confidence interval
of each of those, of delta_m, of the joint run's seconds per epoch (load-dependent) and of the
load-robust joint/single-task step-cost ratio.

The architecture (``architecture.name`` and its options) is part of a configuration, so runs of
two architectures are never one row; results written before architectures existed read as
``hard_sharing`` (:func:`mtbench.records.load`). Each row's joint model has its size and cost
(:mod:`~.size`): its parameters (trainable, shared, each task's own) as its runs record them,
and, over seeds, its training step against a hard-sharing joint model's step timed beside it
(``comparison.cost.joint_over_hard_sharing``) and its peak memory.

Rows with at least two seeds of delta_m are ranked by its mean (delta_m is positive when the joint
model is better, whatever each metric's direction); the others are listed after them, ``1 seed:
not ranked``. Baselines are shared per seed, so rows are also compared *paired*: each row against
its *reference row*, seed by seed, as the mean *gain* with its Student-t interval over the seeds
both rows have (``n/a`` with fewer than two). A gain is row minus reference for a higher-is-better
number and reference minus row for a lower-is-better one: positive means this row is better. The
reference of a row is the row whose config has the reference value (default
``weighting.name=ew``) and is otherwise equal, except for the options of the plugin the reference
names (for ``weighting.name``: every ``weighting.*`` key). ``--reference KEY=VALUE`` (repeatable)
chooses another, e.g. ``--reference weighting.name=static``; a ``KEY`` that does not end in
``.name`` frees only that key (``--reference trainer.learning_rate=0.001``).

Runs that failed, are still running or cannot be read are listed apart and never enter a
statistic. A directory without ``results.json`` is such a failed run only when it is a multirun
job (Hydra's ``hydra.mode`` is ``MULTIRUN``, or a folder above it holds ``multirun.yaml``); a
single run's directory without it never started a benchmark (a config refused before training,
the folder of a ``resume=`` invocation) and is skipped, with a count in the notes. Runs whose
machine load was flagged (``load.flagged`` in ``results.json``) are marked, with the reasons.

Files written into the output folder (each atomically): ``leaderboard.md``, ``leaderboard.csv``,
``primary_vs_time.png`` and ``single_vs_joint.png``.

One idea a module, from reading to writing: :mod:`~.runs` finds and reads run directories;
:mod:`~.identities` says which runs are one configuration and how configurations are told apart;
:mod:`~.stats` summarizes values over seeds; :mod:`~.quantities` names the numbers summarized;
:mod:`~.size` the joint model's parameters and cost;
:mod:`~.rows` groups runs into ranked rows; :mod:`~.paired` compares each row with its reference
row; :mod:`~.board` builds the :class:`Leaderboard`; :mod:`~.markdown`, :mod:`~.csvfile` and
:mod:`~.plots` render it; :mod:`~.files` writes its files; :mod:`~.cli` is the command line.

Usage::

    python -m mtbench.leaderboard outputs/multirun/2026-01-01/10-00-00
    python -m mtbench.leaderboard SWEEP_A SWEEP_B --out comparison/
    python -m mtbench.leaderboard SWEEP --reference weighting.name=static
"""

from mtbench.leaderboard.board import Leaderboard, build, merge_task_records
from mtbench.leaderboard.cli import main
from mtbench.leaderboard.csvfile import CSV, render_csv
from mtbench.leaderboard.errors import LeaderboardError
from mtbench.leaderboard.files import write, write_leaderboard
from mtbench.leaderboard.identities import Column
from mtbench.leaderboard.markdown import (
    MARKDOWN,
    failed_table,
    format_difference,
    format_stat,
    main_table,
    other_metrics_table,
    paired_table,
    render_markdown,
    size_table,
)
from mtbench.leaderboard.paired import DEFAULT_REFERENCE, Paired, Reference
from mtbench.leaderboard.plots import (
    AXIS_START,
    SINGLE_JOINT_PLOT,
    TIME_PLOT,
    atomic_save_figure,
    plot_primary_vs_time,
    plot_single_vs_joint,
)
from mtbench.leaderboard.quantities import SIDES, Quantity
from mtbench.leaderboard.rows import Row
from mtbench.leaderboard.runs import (
    FailedRun,
    MetricKey,
    Run,
    find_run_dirs,
    read_run,
    started_a_benchmark,
)
from mtbench.leaderboard.size import COST_QUANTITIES
from mtbench.leaderboard.stats import CONFIDENCE, Stat, summarize

__all__ = [
    "AXIS_START",
    "CONFIDENCE",
    "COST_QUANTITIES",
    "CSV",
    "Column",
    "DEFAULT_REFERENCE",
    "FailedRun",
    "Leaderboard",
    "LeaderboardError",
    "MARKDOWN",
    "MetricKey",
    "Paired",
    "Quantity",
    "Reference",
    "Row",
    "Run",
    "SIDES",
    "SINGLE_JOINT_PLOT",
    "Stat",
    "TIME_PLOT",
    "atomic_save_figure",
    "build",
    "failed_table",
    "find_run_dirs",
    "format_difference",
    "format_stat",
    "main",
    "main_table",
    "merge_task_records",
    "other_metrics_table",
    "paired_table",
    "plot_primary_vs_time",
    "plot_single_vs_joint",
    "read_run",
    "render_csv",
    "render_markdown",
    "size_table",
    "started_a_benchmark",
    "summarize",
    "write",
    "write_leaderboard",
]
