"""``leaderboard.md``: the ranking, the other metrics, the paired gains, the failed runs, notes,
the configurations and how every number is computed."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mtbench import records
from mtbench.leaderboard import identities, size
from mtbench.leaderboard.board import Leaderboard
from mtbench.leaderboard.paired import Reference
from mtbench.leaderboard.plots import AXIS_START, SINGLE_JOINT_PLOT, TIME_PLOT
from mtbench.leaderboard.quantities import Quantity
from mtbench.leaderboard.rows import Row, row_of
from mtbench.leaderboard.stats import CONFIDENCE, Stat

MARKDOWN = "leaderboard.md"


def format_stat(stat: Stat, seeds: int, digits: int = 2) -> str:
    """``mean ± std [ci_low, ci_high]``; ``n/a`` and ``undefined`` where one seed has no spread."""
    if stat.mean is None:
        return "n/a"
    text = f"{stat.mean:.{digits}f}"
    if stat.std is None or stat.ci_low is None or stat.ci_high is None:
        text += " ± n/a [undefined]"
    else:
        text += f" ± {stat.std:.{digits}f} [{stat.ci_low:.{digits}f}, {stat.ci_high:.{digits}f}]"
    return text + (f" (n={stat.n})" if stat.n != seeds else "")


def one_line(error: str, limit: int = 300) -> str:
    """An error message in one table cell: its first and last lines, at most ``limit`` long."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    text = lines[0] if len(lines) < 2 else f"{lines[0]} … {lines[-1]}"
    return (text[: limit - 1] + "…" if len(text) > limit else text).replace("|", "\\|")


def _where(path: Path, out_dir: Path) -> str:
    return os.path.relpath(path, out_dir.resolve())


def format_difference(stat: Stat, digits: int = 2) -> str:
    """``+mean [ci_low, ci_high]`` of paired gains; ``n/a`` with fewer than two pairs."""
    if stat.mean is None or stat.ci_low is None or stat.ci_high is None:
        return "n/a" + (" (1 paired seed)" if stat.n == 1 else "")
    return f"{stat.mean:+.{digits}f} [{stat.ci_low:+.{digits}f}, {stat.ci_high:+.{digits}f}]"


def _rank_cell(row: Row) -> str:
    return str(row.rank) if row.rank is not None else str(row.not_ranked)


def _has_load(board: Leaderboard) -> bool:
    return any(run.load_recorded for row in board.rows for run in row.runs)


def _load_cell(row: Row) -> str:
    """``flagged: seed 0, 2`` (see the notes), ``ok``, or ``n/a`` where nothing was recorded."""
    flagged = row.load_flagged
    if flagged:
        return "flagged: seed " + ", ".join(str(r.seed) for r in flagged)
    recorded = sum(r.load_recorded for r in row.runs)
    if not recorded:
        return "n/a"
    return "ok" if recorded == len(row.runs) else f"ok ({recorded} of {len(row.runs)} recorded)"


def main_table(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    """The leaderboard's Markdown table: row number, rank, varying keys, seeds, one column per
    primary quantity (each task's primary metric, delta_m, time and cost)."""
    with_failed, with_load = bool(board.failed), _has_load(board)
    columns = board.columns
    quantities = [q for q in board.quantities if q.primary and not q.cost]
    headers = ["#", "rank", *(c[0] for c in columns), "seeds"]
    headers += ["failed"] if with_failed else []
    headers += ["load"] if with_load else []
    headers += [q.label for q in quantities] + ["seed values"]
    rows = []
    for index, row in enumerate(board.rows):
        cells = [str(index + 1), _rank_cell(row)]
        cells += [identities.column_cell(row.identity, c) for c in columns]
        cells.append(str(len(row.runs)))
        if with_failed:
            cells.append(str(len(row.failed)))
        if with_load:
            cells.append(_load_cell(row))
        cells += [_stat_cell(row, q) for q in quantities]
        cells.append(", ".join(str(s) for s in row.seeds))
        rows.append(cells)
    return headers, rows


def _stat_cell(row: Row, quantity: Quantity) -> str:
    stat = row.stat(quantity)
    return format_stat(stat, len(row.runs), quantity.digits(stat))


def size_table(board: Leaderboard) -> tuple[list[str], list[list[str]]] | None:
    """The joint model's size and cost per row (see :mod:`~.size`): architecture, parameters
    (trainable, shared, each task's own), its step against hard sharing's and its peak memory;
    ``None`` when no run records any of them."""
    quantities = [q for q in board.quantities if q.cost]
    with_size = size.has_size(board.rows)
    if not with_size and not quantities:
        return None
    columns = board.columns
    named = any(header == "architecture" for header, _ in columns)
    headers = ["#", *(c[0] for c in columns)] + ([] if named else ["architecture"])
    if with_size:
        headers += ["trainable params (joint)", "shared params (joint)", "own params per task"]
    headers += [q.label for q in quantities]
    rows = []
    for index, row in enumerate(board.rows):
        cells = [str(index + 1), *(identities.column_cell(row.identity, c) for c in columns)]
        cells += [] if named else [size.architecture(row)]
        if with_size:
            cells += [
                size.count_cell(row, "trainable"),
                size.count_cell(row, "shared"),
                size.per_task_cell(row, board.tasks),
            ]
        for quantity in quantities:
            hard = quantity.attribute == "over_hard_sharing" and size.is_hard_sharing(row)
            cells.append(size.BY_DEFINITION if hard else _stat_cell(row, quantity))
        rows.append(cells)
    return headers, rows


def other_metrics_table(board: Leaderboard) -> tuple[list[str], list[list[str]]] | None:
    """The tasks' other metrics (not primary) per row, or ``None`` when there are none."""
    quantities = [q for q in board.quantities if not q.primary and not q.cost]
    if not quantities:
        return None
    headers = ["#", *(c[0] for c in board.columns), *(q.label for q in quantities)]
    rows = [
        [str(index + 1), *(identities.column_cell(row.identity, c) for c in board.columns)]
        + [_stat_cell(row, q) for q in quantities]
        for index, row in enumerate(board.rows)
    ]
    return headers, rows


def _shown_paired(board: Leaderboard) -> list[Quantity]:
    """The paired quantities of the Markdown table: delta_m and the joint primary metrics (the
    CSV has every joint metric)."""
    return [q for q in board.paired_quantities if q.primary]


def paired_table(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    """Each row against its reference row, seed by seed: reference, paired seeds, gains."""
    quantities = _shown_paired(board)
    columns = board.columns
    headers = ["#", *(c[0] for c in columns), "reference", "paired seeds"]
    headers += [f"gain {q.label}" for q in quantities]
    rows = []
    for index, row in enumerate(board.rows):
        paired = board.paired(index)
        cells = [str(index + 1), *(identities.column_cell(row.identity, c) for c in columns)]
        if paired.why == "reference":
            cells += ["this row", "–", *("–" for _ in quantities)]
        elif paired.reference is None:
            cells += [paired.why, "–", *("n/a" for _ in quantities)]
        else:
            cells += [f"#{paired.reference + 1}", ", ".join(map(str, paired.seeds)) or "none"]
            for q in quantities:
                gain = paired.gains[q.column]
                cells.append(format_difference(gain, q.digits(gain)))
        rows.append(cells)
    return headers, rows


def failed_table(board: Leaderboard, out_dir: Path) -> tuple[list[str], list[list[str]]]:
    """The failed runs: where, why, and which configuration (the row it belongs to, if any)."""
    known = [r.identity for r in board.failed if r.identity is not None]
    every = [row.identity for row in board.rows] + known
    columns = identities.columns(identities.varying(every), every)
    headers = ["run", "seed", "status", "row", "configuration", "error"]
    rows = []
    for run in board.failed:
        if run.identity is None:  # no readable config: Hydra's overrides say what was asked
            config = " ".join(f"`{o}`" for o in run.overrides) or "unknown"
        else:
            config = identities.describe(run.identity, columns)
        index = row_of(run.identity, board.rows)
        rows.append(
            [
                f"`{_where(run.path, out_dir)}`" + (f" ({run.part})" if run.part else ""),
                "n/a" if run.seed is None else str(run.seed),
                run.status,
                "–" if index is None else f"#{index + 1}",
                config or "–",
                one_line(run.error),
            ]
        )
    return headers, rows


def _markdown_table(table: tuple[list[str], list[list[str]]]) -> str:
    from tabulate import tabulate

    headers, rows = table
    # config values verbatim: no number parsing (it would print 1.0 as 1 and 1e-4 as 0.0001)
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def render_markdown(board: Leaderboard, out_dir: Path, plots: Sequence[str] = ()) -> str:
    """``leaderboard.md``: the table, what was left out, how every number is computed."""
    runs = sum(len(r.runs) for r in board.rows)
    lines = [
        "# mtbench leaderboard",
        "",
        f"{len(board.rows)} configuration(s) from {runs} complete run(s); "
        f"{len(board.failed)} failed or incomplete run(s)"
        + (" (listed below, not counted)" if board.failed else "")
        + ". Sources: "
        + ", ".join(f"`{_where(s, out_dir)}`" for s in board.sources)
        + ".",
        "",
        "## Ranking",
        "",
        "Ranked by mean delta_m (highest first). A row with fewer than two seeds of delta_m is "
        "not ranked (`1 seed: not ranked`) and is listed after the ranked rows: one value says "
        "nothing about the spread between seeds. `#` numbers the rows for the sections below. "
        "Each cell is **mean ± standard deviation [95% confidence interval]** over the row's "
        "seeds; with one seed the standard deviation and the interval are undefined "
        "(`± n/a [undefined]`), not zero. `(n=k)`: only k seeds have this number. These "
        "intervals are per row (unpaired); rows share their baselines per seed, so compare "
        "rows with the paired gains below, which are sharper. Each task's primary metric is "
        "shown here (↑ higher is better, ↓ lower is better; fractions in %); its other metrics "
        "follow in their own table. s/epoch is wall-clock time and depends on the machine's "
        "load; the joint/singles step cost is the load-robust cost figure.",
        "",
        _markdown_table(main_table(board)),
        "",
    ]
    sizes = size_table(board)
    if board.rows and sizes is not None:
        lines += [
            "## Size and cost",
            "",
            "The joint model of each row: its architecture, its trainable parameters (the "
            "joint model's total, those shared between tasks, and each task's own; counts its "
            "runs record, not statistics), the median time of its training step over the "
            "median time of a hard-sharing joint model's step timed beside it "
            f"(`{size.BY_DEFINITION}` for hard sharing itself: not measured), and its peak "
            "memory (same cells as the ranking). A soft-sharing model with N times the "
            "parameters of hard sharing is compared knowing that. The CSV has every count.",
            "",
            _markdown_table(sizes),
            "",
        ]
    others = other_metrics_table(board)
    if board.rows and others is not None:
        lines += [
            "## Other metrics",
            "",
            "The tasks' other test metrics, as their kinds report them (same cells as above; the "
            "primary metrics are in the ranking).",
            "",
            _markdown_table(others),
            "",
        ]
    if board.rows and _shown_paired(board):
        lines += [
            "## Paired gains over the reference",
            "",
            f"Reference of each row: the row with `{board.reference}` whose config is otherwise "
            "the same (except "
            + ", ".join(f"`{k}`" for k in _freed(board.reference))
            + "). Each cell is the **mean gain of the row over the reference [95% confidence "
            "interval]** over the seeds both rows have: row − reference where higher is better "
            "(↑), reference − row where lower is better (↓), so **positive means this row is "
            "better**; in the quantity's unit (delta_m in points of delta_m, fractions in "
            "percentage points). `n/a` with fewer than two paired seeds. An interval that "
            "excludes 0 separates the two rows on these seeds. The gains of the other joint "
            "metrics are in the CSV. Choose another reference with "
            "`python -m mtbench.leaderboard DIR --reference KEY=VALUE`.",
            "",
            _markdown_table(paired_table(board)),
            "",
        ]
    lines += _notes(board, out_dir)
    if board.failed:
        headers, rows = failed_table(board, out_dir)
        lines += [
            "## Failed and incomplete runs",
            "",
            "Not counted in any statistic. `row`: the configuration's row above, if it has "
            "complete runs; `configuration`: its values of the keys that differ between all runs "
            "(or Hydra's overrides when no config could be read). The full error is in each "
            "run's `results.json` (`error`) or its `mtbench.log`.",
            "",
            _markdown_table((headers, rows)),
            "",
        ]
    lines += _configuration_section(board)
    lines += _formulas()
    for name in plots:
        lines += [f"![{name}]({name})", ""]
    return "\n".join(lines)


def _freed(reference: Reference) -> list[str]:
    """How the keys a reference frees are written in the text: ``weighting.*`` for a plugin."""
    return [k[: -len("name")] + "*" if k.endswith(".name") else k for k in reference.values]


def _notes(board: Leaderboard, out_dir: Path) -> list[str]:
    notes = []
    if board.skipped:
        shown = ", ".join(f"`{_where(p, out_dir)}`" for p in board.skipped[:10])
        more = f" and {len(board.skipped) - 10} more" if len(board.skipped) > 10 else ""
        notes.append(
            f"- {len(board.skipped)} single-run director(y/ies) without results.json skipped: "
            "they never started a benchmark (a config refused before training, or the folder of "
            f"a `resume=` invocation, which writes into the resumed run's folder): {shown}{more}."
        )
    notes += [f"- The runs declare a metric differently: {c}." for c in board.conflicts]
    for index, label, values in size.differing(board.rows, board.tasks):
        notes.append(
            f"- #{index + 1}: its runs record different {label}: "
            + ", ".join(f"{v:,}" for v in values)
            + " (the code changed between them?); the CSV cell is empty."
        )
    old = sorted(
        {str(r.path) for row in board.rows for r in row.runs if r.schema != records.SCHEMA}
    )
    if old:
        notes.append(
            f"- {len(old)} run(s) were read from an older results schema and upgraded "
            "(mtbench.records.load: their tasks are classification tasks reporting accuracy and "
            "top5_accuracy)."
        )
    for index, row in enumerate(board.rows):
        for run in row.load_flagged:
            reasons = "; ".join(
                f"{part}: {', '.join(why) or 'no reason recorded'}" for part, why in run.load_flags
            )
            notes.append(
                f"- #{index + 1}: machine load flagged in `{_where(run.path, out_dir)}` (seed "
                f"{run.seed}; {reasons}): its wall-clock times, s/epoch included, are not a clean "
                "measurement; the joint/singles step cost is measured load-robustly."
            )
        for run in row.duplicates:
            notes.append(
                f"- #{index + 1}: `{_where(run.path, out_dir)}` repeats seed {run.seed}; the most "
                "recently finished run of that seed is counted, this one is not."
            )
        commits = sorted({str(r.git_commit) for r in row.runs})
        devices = sorted({str(r.device) for r in row.runs})
        parallel = sorted({r.parallel_jobs for r in row.runs} - {1})
        if parallel:
            notes.append(
                f"- #{index + 1} has runs launched in parallel (n_jobs "
                f"{', '.join(map(str, parallel))}): jobs shared the machine, so its times are "
                "not comparable with runs trained one at a time."
            )
        if len(commits) > 1 or len(devices) > 1:
            notes.append(
                f"- #{index + 1} pools runs from different code or machines (git commits "
                f"{', '.join(commits)}; devices {', '.join(devices)}): compare its times with care."
            )
    return ["## Notes", "", *notes, ""] if notes else []


def _configuration_section(board: Leaderboard) -> list[str]:
    shared = "\n".join(f"{k}: {identities.cell(v)}" for k, v in board.shared.items())
    free = [*records.FREE["leaderboard"], *sorted(board.location)]
    return [
        "## Configurations",
        "",
        "A configuration is a run's resolved config without "
        + ", ".join(f"`{k}`" for k in free)
        + " (mtbench.records.identity for the leaderboard: the seed varies within a row; the "
        "others say where a run resumed from, how progress is shown, how often checkpoints are "
        "saved, where baselines are cached or, as the dataset's and other plugins' configs "
        "declare, where data is read from: not what is trained). Where results.json records "
        "them (`resolved`), `trainer.precision` is the "
        "precision the run actually used (not `auto`) and `device_class` the kind of machine: "
        "runs that differ in either are different rows. The columns left of `seeds` are the "
        "keys whose "
        f"values differ between rows (`{identities.ABSENT}`: the row's config has no such key); a "
        "plugin's name and those of its options that differ share one column named after the "
        "plugin kind, e.g. `weighting`: `pcgrad(reduction=sum)` (the CSV keeps one column per "
        "key). "
        "Shared by every row:",
        "",
        "```yaml",
        shared,
        "```",
        "",
    ]


def _formulas() -> list[str]:
    return [
        "## How the numbers are computed",
        "",
        "- **Task metrics**: each task's test metrics as its kind reports them (results.json "
        "`tasks`: unit, direction, primary metric), of the weights of each run's best validation "
        "epoch; `joint` is the multitask model, `single` the single-task baseline of that task. "
        "Fractions are shown in %, other units as recorded; ↑ higher is better, ↓ lower is "
        "better.",
        "- **delta_m**: computed per run (results.json `comparison.delta_m_percent`), then "
        "summarized over seeds: " + records.DELTA_M_FORMULA + ". Older results "
        f"({records.SCHEMA_V1}) computed it on test top-1 accuracy, which is the same formula "
        "for accuracy as each task's primary metric.",
        "- **s/epoch (joint)**: the joint run's training wall-clock seconds per epoch (training "
        "steps only; tracing and evaluation are timed apart): its training seconds divided by "
        "the steps it ran, times the steps of a full epoch (older results: the mean of its "
        "epochs' seconds). "
        "Load-dependent: it grows with whatever else the machine runs (see `load`); compare it "
        "only between runs trained one at a time on the same hardware.",
        "- **joint/singles step cost**: `comparison.cost.joint_over_singles` of results.json = "
        "median seconds per training step of the joint model / Σ_t median seconds per step of "
        "the single-task model of task t, measured with their steps interleaved in one process "
        "so that machine load slows both sides alike (load-robust); summarized over seeds like "
        "every number. Below 1: one joint model trains faster than all single-task models.",
        "- **parameters (joint)**: `runs[joint].parameter_counts` of results.json, numbers of "
        "trainable scalars of the joint model (mtbench.architecture.parameter_counts): "
        "`trainable`: all of them; `shared`: variables the architecture declares shared (more "
        "than one task's loss reaches them); a task's own: task variables only its "
        "loss reaches; `several`: task variables several tasks' losses reach (e.g. a "
        "hierarchical head). A property of the configuration, shown as recorded (not averaged). "
        "`n/a`: results written before architectures existed.",
        "- **joint/hard-sharing step**: `comparison.cost.joint_over_hard_sharing` of "
        "results.json = median seconds per training step of the joint model / median seconds "
        "per training step of a hard-sharing joint model with the same backbone, heads, "
        "weighting method, batch size, data and precision (built for the cost probe, never "
        "trained), both timed in the same interleaved rounds as the joint/singles step cost "
        "(load-robust); summarized over seeds. Above 1: a step of the row's architecture costs "
        f"more than hard sharing's. `{size.BY_DEFINITION}`: a hard-sharing row, 1 by "
        "definition and not measured; `n/a`: not measured (the CSV's "
        "`joint_over_hard_sharing_note` says why, e.g. `benchmark.cost_rounds=0`).",
        "- **peak MiB (joint)**: `runs[joint].peak_memory_mb`, the process's resident-memory "
        "high-water mark during the joint run (reset at its start, so earlier runs do not count; "
        "it includes the data and the framework, not the model alone; runs whose peak covers "
        "the whole process, `peak_memory_scope: process`, are left out), and "
        "`peak_device_memory_mb`, TensorFlow's peak GPU allocation during the run, where a GPU "
        "was used; summarized over seeds.",
        "- **load**: `flagged: seed k` when a training run of that seed was flagged in "
        "results.json (`load.flagged`: other processes used more than 20% of the machine while "
        "it trained, i.e. its machine share = 1 − others' share of the usable cores' capacity "
        "was below 80%, or more than 15 points below a sibling run's; see mtbench.cost); the "
        "run directories and reasons are in the notes. `n/a`: not recorded.",
        "- **paired gain** over the reference row: g_s = x_row,s − x_reference,s for every seed "
        "s both rows have where higher is better, x_reference,s − x_row,s where lower is better "
        "(positive: the row is better), then the mean and interval below over the n paired "
        "seeds.",
        "- **rank**: by mean delta_m over at least two seeds; other rows are not ranked.",
        "- **mean** over the n seeds: x̄ = (1/n) Σ x_i.",
        "- **standard deviation** (sample, n - 1): s = sqrt(Σ (x_i - x̄)² / (n - 1)).",
        f"- **{CONFIDENCE:.0%} confidence interval** of the mean (Student t): "
        "x̄ ± t(0.975, n - 1) · s / √n, with the t quantile from `scipy.stats.t.ppf`; "
        "undefined for n = 1.",
        f"- **Plots**, one panel per task, of its primary metric: `{TIME_PLOT}`: the joint "
        "model's test value against the joint run's total training seconds (load-dependent); "
        f"`{SINGLE_JOINT_PLOT}`: joint against single-task test value (the joint model is better "
        "above the diagonal where higher is better, below it where lower is better). Small "
        "markers: one seed each; large markers: the mean over the row's seeds, with error bars "
        f"of its {CONFIDENCE:.0%} confidence interval in both directions (none with one seed). "
        f"Axes of values that cannot be negative start at {AXIS_START:g}, so distances are not "
        "exaggerated.",
        "",
    ]
