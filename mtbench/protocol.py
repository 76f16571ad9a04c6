"""The benchmark protocol: single-task baselines against one joint model, under one protocol.

Every run uses the same data splits, data order, backbone, hyper-parameters, budget and seed (the
model is initialised from the same seed in each run). Single-task baselines train one task with
the plain loss; the joint model trains all tasks with the chosen weighting method.

Runs survive faults: ``results.json`` is rewritten (atomically) after every run, each run
checkpoints as it trains, and running the same config again in the same run directory (or with
``resume=<run dir>``) reuses the finished runs and continues the unfinished one from its last
checkpoint. Ctrl-C or SIGTERM saves a checkpoint of the moment and says how to resume. A run
whose loss or gradient becomes NaN or infinite is recorded as failed, not as a number.
"""

from __future__ import annotations

import functools
import logging
import shlex
import signal
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf

from mtbench import architecture as architecture_module
from mtbench import model as model_module
from mtbench import records, registry
from mtbench.baselines import BaselineCache, load_predictions, predictions_path
from mtbench.config import (
    DEFAULT_ARCHITECTURE,
    BenchmarkConfig,
    ConfigError,
    TrainerConfig,
    check_keys,
    check_one_task_trains,
    check_values,
)
from mtbench.cost import (
    HARD_SHARING_PROBE,
    cost_comparison,
    flag_load,
    interleaved_step_seconds,
    load_summary,
    not_measured,
)
from mtbench.data import DatasetError, DatasetSplits, Split, validate
from mtbench.distribute import describe as describe_strategy
from mtbench.distribute import is_chief, make_strategy
from mtbench.hardware import (
    PeakMemory,
    describe_device,
    device_class,
    precision_is_native,
    resolve_precision,
)
from mtbench.inputs import Inputs
from mtbench.io import atomic_save_npz, atomic_write_text
from mtbench.model import MultiTaskNetwork
from mtbench.results import (
    environment,
    hierarchy_consistency,
    plot_curves,
    render_report,
    summary_text,
)
from mtbench.tasks import TaskKind
from mtbench.trainer import SELECTION_RULE, Budget, FitResult, Interrupted, NonFiniteError, Trainer
from mtbench.weighting import EqualWeights, Weighting

log = logging.getLogger(__name__)


class BenchmarkFailed(RuntimeError):
    """At least one run failed; the others' results and the failure are in results.json."""


class _Setup(NamedTuple):
    data: DatasetSplits
    tasks: list[str]
    precision: str
    kinds: dict[str, TaskKind]  #: every task's kind, fitted on the training split
    inputs: Inputs
    preprocessing: dict[str, Any] | None  #: the preprocessing layer's serialised form


@dataclass(frozen=True)
class RunPlan:
    name: str
    tasks: tuple[str, ...]
    joint: bool

    @property
    def slug(self) -> str:
        return records.run_slug(self.name)


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Treat SIGTERM (a pre-empted job) like Ctrl-C, so that a checkpoint is saved."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def plan_runs(tasks: Sequence[str], single_task: bool) -> list[RunPlan]:
    plans = [RunPlan(records.single_run_name(t), (t,), False) for t in tasks] if single_task else []
    if len(tasks) > 1:
        plans.append(RunPlan(records.JOINT_RUN, tuple(tasks), True))
    return plans


def build_model(
    cfg: DictConfig,
    data: DatasetSplits,
    tasks: Sequence[str],
    precision: str,
    seed: int,
    preprocessing: dict[str, Any] | None = None,
    *,
    joint: bool = True,
    architecture: Any = None,
) -> MultiTaskNetwork:
    """The model of ``cfg`` for ``tasks`` of ``data`` (see :func:`model.build_model`) after the
    dataset's preprocessing layer (given serialised: each model gets its own copy): the joint
    run's with ``cfg.architecture`` (or ``architecture``, a plugin config, where given: the cost
    probe's hard-sharing counterpart), a single-task run's with hard sharing (every architecture
    is compared with the same single-task networks).

    Heads that ask for the dataset's hierarchy see it even when this run trains one of its tasks.
    """
    import keras

    layer = None if preprocessing is None else keras.saving.deserialize_keras_object(preprocessing)
    chosen = None  # single-task runs: hard sharing
    if joint:
        chosen = cfg.architecture if architecture is None else architecture
    example = tf.nest.map_structure(lambda a: np.zeros_like(a[:1]), data.train.x)
    return model_module.build_model(
        cfg.backbone,
        cfg.head,
        [data.task(t) for t in tasks],
        example,
        architecture=chosen,
        hierarchy=data.hierarchy,
        precision=precision,
        seed=seed,
        preprocessing=layer,
    )


class Benchmark:
    """Runs the protocol for one composed config and writes its results into ``output_dir``.

    Args:
        cfg: The composed config.
        output_dir: The run directory (``resume=<dir>`` in the config replaces it).
        command: How the run was started, for the "how to resume" message.
    """

    def __init__(self, cfg: DictConfig, output_dir: Path, command: str | None = None) -> None:
        check_keys(cfg)
        self.cfg = cfg
        self.trainer_config: TrainerConfig = OmegaConf.to_object(cfg.trainer)  # type: ignore[assignment]
        self.benchmark_config: BenchmarkConfig = OmegaConf.to_object(cfg.benchmark)  # type: ignore[assignment]
        check_values(self.trainer_config, self.benchmark_config)
        self.output_dir = Path(cfg.resume).expanduser() if cfg.resume else Path(output_dir)
        self.command = command or "python -m mtbench <your overrides>"
        config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        location = records.location_keys(
            {k: registry.get(k, str(cfg[k].name)).config for k in registry.CONFIG_KINDS}
        )
        self.results: dict[str, Any] = records.new_results(config, environment(), location)
        self._predictions: dict[str, dict[str, np.ndarray]] = {}
        #: trainers of the runs trained in this process, kept for the interleaved cost probe
        self._trainers: dict[str, Trainer] = {}
        self._prebuilt: dict[tuple[str, ...], tuple[MultiTaskNetwork, Weighting]] = {}

    # ---------------------------------------------------------------------------------- public
    def run(self) -> dict[str, Any]:
        trainer_config = self.trainer_config
        # the first TensorFlow work: splitting the CPU and joining a cluster must come first
        self.strategy = make_strategy(trainer_config.distribute.value, trainer_config.cpu_replicas)
        if trainer_config.deterministic:
            tf.config.experimental.enable_op_determinism()
        if not is_chief(self.strategy):  # other workers of a cluster keep their files apart
            resolver = self.strategy.cluster_resolver
            self.output_dir = self.output_dir / f"{resolver.task_type}-{resolver.task_id}"
        self._check_output_dir()
        previous = self._previous_results()
        if previous is not None and previous["status"] == "complete":
            log.info("%s already holds complete results; nothing to do", self.output_dir)
            self.results = previous
            print(summary_text(self.results))
            return self.results
        if previous is not None:
            self.results["runs"] = [r for r in previous["runs"] if r.get("status") == "complete"]
            log.info(
                "resuming %s: finished runs %s are kept",
                self.output_dir, [r["name"] for r in self.results["runs"]] or "none",
            )  # fmt: skip
        # Everything that can refuse the config happens before results.json exists: a refused
        # config leaves no benchmark behind (the CLI removes its empty run directory).
        setup = self._setup()
        self._write()  # from now on the directory says what state the benchmark is in
        try:
            with sigterm_interrupts():
                self._run(setup)
        except (Interrupted, KeyboardInterrupt) as exc:
            self.results["status"] = "interrupted"
            self.results["error"] = str(exc) or "interrupted"
            self._write()
            hint = f"{self.command} resume={shlex.quote(str(self.output_dir))}"
            log.warning(
                "%s. Checkpoints and results are in %s; resume with:\n  %s",
                self.results["error"], self.output_dir, hint,
            )  # fmt: skip
            raise
        except BaseException as exc:
            self.results["status"] = "failed"
            self.results["error"] = "".join(traceback.format_exception_only(exc)).strip()
            self._write()
            raise
        failed = [r for r in self.results["runs"] if r.get("status") == "failed"]
        self.results["status"] = "failed" if failed else "complete"
        if failed:
            self.results["error"] = "; ".join(r["error"] for r in failed)
        self._write()
        print(summary_text(self.results))
        log.info("results written to %s", self.output_dir / "results.json")
        if failed:
            raise BenchmarkFailed(self.results["error"])
        return self.results

    # ------------------------------------------------------------------------------- internals
    def _check_output_dir(self) -> None:
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.output_dir):
                pass
        except OSError as exc:
            raise OSError(
                f"cannot write to the run directory {self.output_dir} ({exc.strerror}); choose "
                "another with hydra.run.dir=DIR (or hydra.sweep.dir=DIR for -m)"
            ) from exc

    def _previous_results(self) -> dict[str, Any] | None:
        path = self.output_dir / "results.json"
        if not path.is_file():
            if self.cfg.resume:
                raise FileNotFoundError(
                    f"resume={self.cfg.resume}: no results.json in {path.parent}"
                )
            return None
        previous = records.load(path)
        differing = records.differing_keys(
            previous["config"],
            self.results["config"],
            "resume",
            location=set(previous["location_keys"]) | set(self.results["location_keys"]),
        )
        if differing:
            raise ConfigError(
                f"{path} was written by a different config (differs in {', '.join(differing)}); "
                "resume with the same config, or choose another run directory "
                "(hydra.run.dir=DIR)"
            )
        return previous

    def _setup(self) -> _Setup:
        """Resolve the precision, load the data and check that every plugin accepts it."""
        cfg, trainer_config, strategy = self.cfg, self.trainer_config, self.strategy
        precision = resolve_precision(trainer_config.precision.value)
        native = precision_is_native(precision)
        hardware = device_class()
        self.results["resolved"] = {
            "precision": precision,
            "precision_native": native,
            "device_class": hardware,
        }
        if not native:
            log.warning(
                "trainer.precision=%s: %s is not computed natively by this machine (%s); it is "
                "emulated and typically several times slower than float32. Use "
                "trainer.precision=float32 (or auto, which picks what is native).",
                trainer_config.precision.value, precision, hardware,
            )  # fmt: skip
        # Build the joint weighting first: a bad option fails before any data is read; so does
        # a bad architecture option.
        with strategy.scope():
            check = self._make_weighting(joint=True)
        architecture_module.check_config(cfg.architecture)
        check_network = functools.partial(
            architecture_module.check_weighting,
            weighting=check,
            architecture=str(cfg.architecture.name),
            weighting_name=str(cfg.weighting.name),
        )
        network = registry.get("architecture", str(cfg.architecture.name)).factory
        # a network class declares what its heads read; a function's network is checked once
        # built, below
        if isinstance(network, type) and issubclass(network, MultiTaskNetwork):
            check_network(network)
        dataset = str(cfg.dataset.name)
        try:
            plugin = registry.build("dataset", cfg.dataset)
        except ValueError as exc:  # an option the dataset refuses: its message names it
            raise registry.PluginError(f"dataset '{dataset}': {exc}") from exc
        data = plugin.load()
        # what the dataset returned must fit its tasks' kinds: refused now, not in a compiled step
        smoothing = {"label_smoothing": trainer_config.label_smoothing}
        kinds = validate(data, dataset, defaults=smoothing)
        tasks = self._select_tasks(data, kinds)
        if len(tasks) > 1:
            check.setup(tasks)  # options that depend on the tasks fail before training, too
        else:  # also a dataset of one task, which check_values could not see
            check_one_task_trains(tasks[0], self.benchmark_config.single_task)
            if not isinstance(check, EqualWeights):
                raise ConfigError(
                    f"weighting={cfg.weighting.name} combines several tasks, but this benchmark "
                    f"trains one ({tasks[0]}): there is no joint model to weight. Choose "
                    "benchmark.tasks with at least two of the dataset's tasks "
                    f"({', '.join(kinds)}), or weighting=ew."
                )
        inputs = data.inputs if data.inputs is not None else Inputs()
        if not isinstance(inputs, Inputs):
            raise DatasetError(
                f"dataset '{dataset}' declares inputs={inputs!r}: use a mtbench.inputs.Inputs "
                "(e.g. ImageInputs) or None"
            )
        if data.inputs is None and _looks_like_uint8_images(data.train.x):
            raise DatasetError(
                f"dataset '{dataset}' returns uint8 images [N, H, W, C] but declares no input "
                "preprocessing, and mtbench no longer scales pixels on its own (since the task "
                "contract of mtbench 0.2). Declare it: DatasetSplits(..., "
                "inputs=mtbench.inputs.ImageInputs(divisor=255.0)), with normalize, augmentation "
                "and eval_flip as wanted (see the README's 'Migrating a plugin')"
            )
        layer = inputs.layer(data.train.x)
        preprocessing = None
        if layer is not None:
            import keras

            preprocessing = keras.saving.serialize_keras_object(layer)
        splits = {"train": data.train, "val": data.val, "test": data.test}
        self.results["tasks"] = {
            t: records.task_record(
                kinds[t],
                {name: int(kinds[t].labelled(split.y[t]).sum()) for name, split in splits.items()},
                {name: len(split) for name, split in splits.items()},
            )
            for t in tasks
        }
        self.results["inputs"] = inputs.describe()
        hierarchy = data.hierarchy
        self.results["hierarchy"] = (
            {"child": hierarchy.child, "parent": hierarchy.parent} if hierarchy else None
        )
        setup = _Setup(data, tasks, precision, kinds, inputs, preprocessing)
        for plan in plan_runs(tasks, bool(self.benchmark_config.single_task)):
            examples = len(self._training_examples(plan, setup))
            if trainer_config.batch_size > examples:
                raise ConfigError(
                    f"trainer.batch_size={trainer_config.batch_size} is larger than the training "
                    f"examples of run {plan.name} ({examples}: those labelled for "
                    f"{', '.join(plan.tasks)}); lower trainer.batch_size or train on more data "
                    f"(see the options of dataset '{dataset}')"
                )
        with strategy.scope():  # the model and heads must fit the tasks: fail now, not later
            try:
                model = build_model(cfg, data, tasks, precision, int(cfg.seed), preprocessing,
                                    joint=len(tasks) > 1)  # fmt: skip
            except ConfigError:  # an architecture refusing its options or plugins: it says why
                raise
            except ValueError as exc:  # a plugin refusing this dataset: its message says why
                raise registry.PluginError(
                    f"backbone '{cfg.backbone.name}' with head '{cfg.head.name}' and "
                    f"architecture '{cfg.architecture.name}' cannot be built for dataset "
                    f"'{dataset}': {exc}"
                ) from exc
            self._check_outputs(model, data, tasks, kinds, dataset, str(cfg.head.name))
            if len(tasks) > 1:
                check_network(model)
        # what was built to check the config is the joint run's, not thrown away
        self._prebuilt = {tuple(tasks): (model, check)}
        return setup

    @staticmethod
    def _check_outputs(
        model: MultiTaskNetwork,
        data: DatasetSplits,
        tasks: Sequence[str],
        kinds: dict[str, TaskKind],
        dataset: str,
        head: str,
    ) -> None:
        """Each head output must have the shape its task's kind expects."""
        example = tf.nest.map_structure(lambda a: tf.constant(a[:2]), data.train.x)
        outputs = model(example, training=False)
        for t in tasks:
            if t not in outputs:
                raise registry.PluginError(
                    f"the head produced no output for task '{t}' (it produced {sorted(outputs)})"
                )
            got, expected = tuple(outputs[t].shape[1:]), kinds[t].output_shape
            if got != tuple(expected):
                raise registry.PluginError(
                    f"head '{head}' outputs {got} per example for task '{t}' of "
                    f"dataset '{dataset}'; its kind '{kinds[t].spec.kind}' needs {tuple(expected)} "
                    "(a head sizes its outputs from each TaskSpec's output_shape)"
                )

    def _run(self, setup: _Setup) -> None:
        strategy = self.strategy
        data, tasks, precision = setup.data, setup.tasks, setup.precision
        log.info(
            "data: %d train, %d validation, %d test examples; tasks %s; precision %s%s; %s",
            len(data.train), len(data.val), len(data.test), ", ".join(tasks), precision,
            "" if self.results["resolved"]["precision_native"] else " (emulated, slow)",
            describe_strategy(strategy),
        )  # fmt: skip
        if self.benchmark_config.time_budget_s is not None:
            log.info(
                "equal-budget mode: every run trains %.0f s of wall-clock training time (at most "
                "trainer.epochs epochs); steps per run depend on the step cost and on machine load",
                self.benchmark_config.time_budget_s,
            )  # fmt: skip
        done = {r["name"] for r in self.results["runs"]}
        cache = BaselineCache.for_config(self.benchmark_config.baseline_cache, self.results)
        for plan in plan_runs(tasks, bool(self.benchmark_config.single_task)):
            if plan.name in done:
                self._predictions[plan.name] = load_predictions(self.output_dir, plan.name)
                continue
            cached = cache.get(plan.name) if cache and not plan.joint else None
            if cached is not None:
                log.info("run %s: reused from %s", plan.name, cache.folder)
                run, self._predictions[plan.name] = cached
                self._save_predictions(plan, self._predictions[plan.name])
            else:
                run = self._train(plan, setup)
                if cache and not plan.joint and run["status"] == "complete":
                    cache.put(plan.name, run, self._predictions[plan.name])
            self.results["runs"].append(run)
            self._write()
        flagged = flag_load(self.results["runs"])
        if flagged:
            log.warning(
                "the machine was busy: the wall-clock times of %s are not comparable with the "
                "other runs' (see results.json runs[].load); the interleaved cost ratio is not "
                "affected", ", ".join(flagged),
            )  # fmt: skip
        self.results["budget"] = self._budget_record()
        self.results["comparison"] = self._compare(tasks, data)
        if self.results["comparison"] is not None:
            config = self.benchmark_config
            cost = self._measure_cost(setup)
            why = None
            if not self._wants_cost():
                why = not_measured(config.cost_rounds, config.cost_steps)
            elif cost is None:
                why = "the probe timed no joint run or not a single-task run of every task"
            self.results["comparison"]["cost"] = cost
            self.results["comparison"]["cost_undefined"] = why
        self._trainers.clear()

    def _select_tasks(self, data: DatasetSplits, kinds: dict[str, TaskKind]) -> list[str]:
        available = [t.name for t in data.tasks]
        wanted = list(self.benchmark_config.tasks or available)
        unknown = [t for t in wanted if t not in available]
        if unknown or not wanted:
            raise DatasetError(
                f"benchmark.tasks={wanted} is not a non-empty subset of the dataset's tasks "
                f"{available}"
            )
        unknown_targets = sorted(set(self.benchmark_config.target) - set(wanted))
        if unknown_targets:
            raise ConfigError(
                f"benchmark.target names tasks {unknown_targets}; the tasks are {wanted}"
            )
        for task, value in self.benchmark_config.target.items():
            metric = kinds[task].primary
            if metric.unit == "fraction" and not 0 < value <= 1:
                raise ConfigError(
                    f"benchmark.target.{task}={value} is out of range: the target is task "
                    f"'{task}''s {metric.name}, a fraction in (0, 1]"
                )
        return wanted

    def _make_weighting(self, joint: bool) -> Weighting:
        if not joint:
            return EqualWeights()
        weighting = registry.build("weighting", self.cfg.weighting)
        if not isinstance(weighting, Weighting):
            raise registry.PluginError(
                f"weighting '{self.cfg.weighting.name}' built a {type(weighting).__name__}, "
                "not a mtbench.weighting.Weighting"
            )
        return weighting

    def _train(self, plan: RunPlan, setup: _Setup) -> dict[str, Any]:
        checkpoints = self.output_dir / "checkpoints" / plan.slug
        resume = self.trainer_config.checkpoint_every > 0 and (checkpoints / "last.npz").is_file()
        log.info("run %s: tasks %s%s", plan.name, ", ".join(plan.tasks), " (resuming)" * resume)
        memory = PeakMemory()
        memory.start()
        data, precision, strategy = setup.data, setup.precision, self.strategy
        train = self._training_examples(plan, setup)
        trainer = self._trainer(
            plan,
            setup,
            logdir=self.output_dir / "tensorboard" / plan.slug,
            checkpoint_dir=checkpoints if self.trainer_config.checkpoint_every else None,
        )
        model = trainer.model
        run: dict[str, Any] = {
            "name": plan.name,
            "tasks": list(plan.tasks),
            "weighting": self.cfg.weighting.name if plan.joint else "plain loss",
            "status": "complete",
            "error": None,
        }
        try:
            fit = trainer.fit(train, data.val, resume=resume)
        except NonFiniteError as exc:
            log.error("%s", exc)
            memory.stop()
            return run | {"status": "failed", "error": str(exc), "test": None}
        test_seconds, test_metrics = self._test(trainer, plan, data)
        memory.stop()
        if self._wants_cost():
            self._trainers[plan.name] = trainer
        described = self._describe(fit, model, memory, precision, strategy)
        with strategy.scope():
            sizes = architecture_module.parameter_counts(
                model, tf.nest.map_structure(lambda a: tf.constant(a[:1]), data.train.x)
            )
        described |= {
            "architecture": str(self.cfg.architecture.name) if plan.joint else DEFAULT_ARCHITECTURE,
            "parameter_counts": sizes,
        }
        return (
            run
            | described
            | {
                "test": test_metrics,
                "timing": _timing(fit) | {"test_seconds": test_seconds},
                "selection": {"rule": SELECTION_RULE, "score": fit.best_score},
                "load": load_summary(described["history"]),
            }
        )

    @staticmethod
    def _training_examples(plan: RunPlan, setup: _Setup) -> Split:
        """A single-task run trains on the examples labelled for its task; the joint run on
        every example labelled for any of its tasks."""
        train = setup.data.train
        labelled = np.zeros(len(train), bool)
        for t in plan.tasks:
            labelled |= setup.kinds[t].labelled(train.y[t])
        return train if labelled.all() else train.take(np.flatnonzero(labelled))

    def _trainer(
        self,
        plan: RunPlan,
        setup: _Setup,
        logdir: Path | None = None,
        checkpoint_dir: Path | None = None,
        architecture: Any = None,
    ) -> Trainer:
        """A fresh model (initialised from the seed) and its trainer for ``plan``; a joint
        ``plan`` with ``architecture`` (a plugin config) gets that architecture instead of the
        config's (the cost probe's hard-sharing counterpart)."""
        data, precision, strategy = setup.data, setup.precision, self.strategy
        own = plan.joint and architecture is None
        prebuilt = self._prebuilt.pop(plan.tasks, None) if own else None
        if prebuilt is not None:  # built from the same seed by _setup and never trained
            model, weighting = prebuilt
        else:
            with strategy.scope():
                model = build_model(self.cfg, data, plan.tasks, precision, int(self.cfg.seed),
                                    setup.preprocessing, joint=plan.joint,
                                    architecture=architecture)  # fmt: skip
                weighting = self._make_weighting(plan.joint)
        budget = self.benchmark_config
        return Trainer(
            self.trainer_config,
            model,
            weighting,
            [setup.kinds[t] for t in plan.tasks],
            inputs=setup.inputs,
            precision=precision,
            seed=int(self.cfg.seed),
            strategy=strategy,
            budget=Budget(budget.time_budget_s, dict(budget.target), budget.stop_at_target),
            logdir=logdir,
            checkpoint_dir=checkpoint_dir,
            name=plan.name,
        )

    def _wants_cost(self) -> bool:
        config = self.benchmark_config
        return config.cost_rounds > 0 and config.cost_steps > 0

    def _measure_cost(self, setup: _Setup) -> dict[str, Any] | None:
        """The load-robust cost ratio (see :mod:`mtbench.cost`): every run's training step timed
        in interleaved rounds in this process. Runs trained here are reused (already compiled);
        runs resumed or taken from the baseline cache are built afresh. A joint run whose
        architecture is not hard sharing is also timed against a hard-sharing joint model built
        here (:data:`~mtbench.cost.HARD_SHARING_PROBE`, never trained), in the same rounds."""
        if not self._wants_cost():
            return None
        config = self.benchmark_config
        tasks = setup.tasks
        architecture = str(self.cfg.architecture.name)
        tick = time.perf_counter()  # the probe's whole cost: building what it times, and timing
        steppers, steps_per_epoch = {}, {}
        for plan in plan_runs(tasks, single_task=True):
            trainer = self._trainers.get(plan.name)
            if trainer is None:
                trainer = self._trainer(plan, setup)
                batches = trainer.prepare(self._training_examples(plan, setup))
            else:
                batches = trainer.batches
            iterator = trainer.step_iterator(batches)
            # updates, as run_steps counts them (a sampling method's update reads 3 batches)
            steps_per_epoch[plan.name] = int(trainer.updates_per_epoch(batches))
            steppers[plan.name] = lambda count, t=trainer, it=iterator: t.run_steps(it, count)
        unavailable = None
        if architecture != DEFAULT_ARCHITECTURE and records.JOINT_RUN in steppers:
            stepper, unavailable = self._hard_sharing_stepper(setup)
            if stepper is not None:
                steppers[HARD_SHARING_PROBE] = stepper
        # at most about a tenth of a run's training steps, so small benchmarks stay small
        rounds = config.cost_rounds
        run_steps = steps_per_epoch[records.JOINT_RUN] * self.trainer_config.epochs
        steps = min(config.cost_steps, max(1, run_steps // (10 * (rounds + 1))))
        seconds = interleaved_step_seconds(steppers, rounds=rounds, steps=steps)
        record = cost_comparison(
            seconds, tasks, rounds=rounds, steps=steps, steps_per_epoch=steps_per_epoch,
            architecture=architecture, hard_sharing_undefined=unavailable,
        )  # fmt: skip
        if record is not None:
            record["probe_seconds"] = time.perf_counter() - tick
            log.info(
                "cost (interleaved steps, load-robust): joint step = %.2f x the sum of the "
                "single-task steps", record["joint_over_singles"],
            )  # fmt: skip
            if record["joint_over_hard_sharing"] is not None:
                log.info(
                    "cost: a joint step of %s = %.2f x a joint step of %s",
                    architecture, record["joint_over_hard_sharing"], DEFAULT_ARCHITECTURE,
                )  # fmt: skip
        return record

    def _hard_sharing_stepper(self, setup: _Setup) -> tuple[Any, str | None]:
        """A stepper of a hard-sharing joint model with this config's backbone, heads, weighting,
        batch size, data and precision (compiled, never trained), or ``None`` and why it could
        not be built (the ratio is then recorded as undefined; the benchmark goes on)."""
        plan = RunPlan(records.JOINT_RUN, tuple(setup.tasks), True)
        try:
            trainer = self._trainer(plan, setup, architecture={"name": DEFAULT_ARCHITECTURE})
            batches = trainer.prepare(self._training_examples(plan, setup))
        except (ConfigError, registry.PluginError, ValueError) as exc:
            why = f"the hard-sharing joint model could not be built for the cost probe: {exc}"
            log.warning("cost: %s", why)
            return None, why
        iterator = trainer.step_iterator(batches)
        return (lambda count: trainer.run_steps(iterator, count)), None

    def _budget_record(self) -> dict[str, Any] | None:
        budget = self.benchmark_config.time_budget_s
        if budget is None:
            return None
        return {
            "time_budget_s": budget,
            "steps": {r["name"]: r.get("timing", {}).get("steps") for r in self.results["runs"]},
            "load_dependent": True,
            "note": "every run trained for the same wall-clock time; the steps it got depend on "
            "its step cost and on the machine's load (see runs[].load)",
        }

    def _test(
        self, trainer: Trainer, plan: RunPlan, data: DatasetSplits
    ) -> tuple[float, dict[str, dict[str, float]]]:
        tick = time.perf_counter()
        metrics, predictions = trainer.evaluate(data.test)
        seconds = time.perf_counter() - tick
        self._predictions[plan.name] = predictions
        self._save_predictions(plan, predictions)
        return seconds, metrics

    def _save_predictions(self, plan: RunPlan, predictions: dict[str, np.ndarray]) -> None:
        atomic_save_npz(predictions_path(self.output_dir, plan.name), predictions)

    @staticmethod
    def _describe(
        fit: FitResult,
        model: MultiTaskNetwork,
        memory: PeakMemory,
        precision: str,
        strategy: tf.distribute.Strategy,
    ) -> dict[str, Any]:
        return {
            "best_epoch": fit.best_epoch,
            "val": fit.best_val,
            "stopped_by": fit.stopped_by,
            "time_to_target": fit.time_to_target,
            "skipped_steps": fit.skipped_steps,
            "resumed_from": fit.resumed_from,
            "history": [
                {
                    "epoch": r.epoch,
                    "train_loss": r.train_loss,
                    "loss_weights": r.weights,
                    "val": r.val,
                    "seconds": r.seconds,
                    "steps": r.steps,
                    "train_seconds_so_far": r.train_seconds_so_far,
                    "learning_rate": r.learning_rate,
                    "skipped_steps": r.skipped_steps,
                    "cpu_seconds": r.cpu_seconds,
                    "others_utilisation": r.others_utilisation,
                    "share": r.share,
                    "cpu_utilisation": r.cpu_utilisation,
                    "load_average": r.load_average,
                    "gpu_utilisation": r.gpu_utilisation,
                }
                for r in fit.history
            ],
            "parameters": int(model.count_params()),
            "peak_memory_mb": memory.host_mb,
            "peak_memory_scope": memory.scope,
            "peak_device_memory_mb": memory.device_mb,
            "device": describe_device(),
            "distribution": describe_strategy(strategy),
            "precision": precision,
        }

    def _compare(self, tasks: list[str], data: DatasetSplits) -> dict[str, Any] | None:
        complete = [r for r in self.results["runs"] if r.get("status") == "complete"]
        if len(tasks) == 1:
            self.results["notes"].append(records.one_task_note(tasks[0]))
            log.warning("%s", self.results["notes"][-1])
            return None
        comparison = records.compare(
            complete, self.results["tasks"], metrics=self.benchmark_config.delta_m_metrics
        )
        if comparison is None:
            return None
        comparison.update(
            hierarchy=None, hierarchy_consistency=None, hierarchy_consistency_single=None
        )
        hierarchy = data.hierarchy
        if hierarchy is None or not {hierarchy.child, hierarchy.parent} <= set(tasks):
            return comparison
        child, parent = hierarchy.child, hierarchy.parent
        comparison["hierarchy"] = {"child": child, "parent": parent}
        joint = self._predictions.get(records.JOINT_RUN, {})
        if child in joint and parent in joint:
            comparison["hierarchy_consistency"] = hierarchy_consistency(
                joint[child], joint[parent], hierarchy.parent_of
            )
        singles = (
            self._predictions.get(records.single_run_name(child), {}),
            self._predictions.get(records.single_run_name(parent), {}),
        )
        if child in singles[0] and parent in singles[1]:
            comparison["hierarchy_consistency_single"] = hierarchy_consistency(
                singles[0][child], singles[1][parent], hierarchy.parent_of
            )
        return comparison

    def _write(self) -> None:
        records.write(self.output_dir / records.FILENAME, self.results)
        atomic_write_text(self.output_dir / "report.md", render_report(self.results))
        try:
            plot_curves(self.results, self.output_dir / "curves.png")
        except Exception as exc:  # a plot must never cost the results
            log.warning("could not draw curves.png: %s", exc)


def _looks_like_uint8_images(x: Any) -> bool:
    """Inputs ``[N, H, W, C]`` of uint8 with 1, 3 or 4 channels."""
    return (
        isinstance(x, np.ndarray)
        and x.dtype == np.uint8
        and x.ndim == 4
        and x.shape[-1] in (1, 3, 4)
    )


def _timing(fit: FitResult) -> dict[str, Any]:
    return {
        "epoch_seconds": fit.epoch_seconds,
        "seconds_per_epoch": fit.seconds_per_epoch,
        "steps": fit.steps,
        "steps_per_epoch": fit.steps_per_epoch,
        "train_seconds": fit.train_seconds,
        "examples_per_second": fit.images_per_second,
        "trace_seconds": fit.trace_seconds,
        "eval_seconds": fit.eval_seconds,
    }


def run_benchmark(cfg: DictConfig, output_dir: Path, command: str | None = None) -> dict[str, Any]:
    """Run the benchmark that ``cfg`` describes; write ``results.json`` and ``report.md``."""
    return Benchmark(cfg, output_dir, command).run()
