"""The command line: ``python -m mtbench [overrides]``, a Hydra application.

Besides handing the overrides to Hydra, the command line:
- keeps TensorFlow's start-up chatter (absl lines printed before its logging is configured, such
  as ``failed call to cuInit`` on machines without a GPU) off the terminal, which
  ``TF_CPP_MIN_LOG_LEVEL`` does not do; everything else written to stderr meanwhile is passed on;
- when a key is mistyped, lists the valid keys of the node after Hydra's own message;
- imports the selected plugins' modules first, so that a plugin two installed packages provide,
  or whose module does not import, is refused before anything else starts;
- prints a config refused before training as one line (no traceback) and removes the run
  directory Hydra made for it, which holds no benchmark (single runs; a multirun job is kept and
  recorded as failed by the sweep);
- continues a resumed benchmark in its own run directory (``resume=DIR`` implies
  ``hydra.run.dir=DIR``), so that one directory holds one benchmark and one log.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

CONFIG_NAME = "config"

#: Lines TensorFlow and XLA print to stderr at start-up regardless of TF_CPP_MIN_LOG_LEVEL.
_TF_NOISE = re.compile(
    r"^([IWE]\d{4} [\d:.]+ +\d+ \S+:\d+\]|WARNING: All log messages before "
    r"absl::InitializeLog|To enable the following instructions:|This TensorFlow binary is "
    r"optimized|.*rebuild TensorFlow with the appropriate compiler flags)"
)
_task_started = False


def config_dir() -> Path:
    """``conf/`` of a source checkout (editable install), or the copy shipped inside the package."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / "conf", package / "conf"):
        if (candidate / f"{CONFIG_NAME}.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"mtbench's config folder is missing (looked next to {package})")


def prepare() -> None:
    """Fill Hydra's ConfigStore: every plugin's schema and mtbench's own (before composing).

    Imports the plugins' options modules, not the modules of their factories (those are imported
    when a run builds the plugins it selected), except modules named by the older form of entry
    point, whose import registers their plugins.
    """
    from mtbench import registry
    from mtbench.config import store_schema

    with quiet_tensorflow():  # a module of the older form of entry point may import TensorFlow
        registry.load_entry_points()
        registry.store_schemas(config_dir())
    store_schema()


@contextmanager
def quiet_tensorflow() -> Iterator[None]:
    """Drop TensorFlow's start-up lines from stderr (file descriptor 2) within the block; pass
    every other line on when the block ends (also when it raises)."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to filter
        yield
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines(keepends=True) if not _TF_NOISE.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _task(cfg: Any) -> Any:
    import shlex
    import sys

    from hydra.core.hydra_config import HydraConfig

    from mtbench.config import ConfigError
    from mtbench.registry import PluginError

    global _task_started
    _task_started = True
    hydra_config = HydraConfig.get()
    overrides = [o for o in hydra_config.overrides.task if not o.startswith("resume=")]
    command = " ".join(["python -m mtbench", *map(shlex.quote, overrides)])
    output_dir = Path(hydra_config.runtime.output_dir)
    try:
        with quiet_tensorflow():
            # the selected plugins' modules first: one that two packages provide, or that does
            # not import, is refused before anything else starts
            _load_selected_plugins(cfg)
            from mtbench.data import DatasetError
            from mtbench.hardware import gpus
            from mtbench.protocol import run_benchmark
            from mtbench.trainer import Interrupted

            gpus()  # the first device query prints TensorFlow's CUDA probing
    except PluginError as exc:
        _refuse(exc, hydra_config.mode, output_dir, status=2)
    try:
        results = run_benchmark(cfg, output_dir, command)
    except (Interrupted, KeyboardInterrupt):
        sys.exit(130)  # the resume command was logged
    except (ConfigError, PluginError, DatasetError) as exc:
        # a config that cannot work, or missing, corrupt or unreachable data: the message says
        # what to do; a traceback through the protocol, urllib or tarfile would only bury it
        _refuse(exc, hydra_config.mode, output_dir, 1 if isinstance(exc, DatasetError) else 2)
    comparison = results.get("comparison") or {}
    return comparison.get("delta_m_percent")


def _load_selected_plugins(cfg: Any) -> None:
    """Import the factory of the plugin each group of ``cfg`` selects (raises PluginError)."""
    from mtbench import registry

    for kind in registry.CONFIG_KINDS:
        if kind in cfg:
            _ = registry.get(kind, str(cfg[kind][registry.NAME_FIELD])).factory


def _refuse(exc: Exception, mode: Any, output_dir: Path, status: int) -> NoReturn:
    """End a run refused before training with one line (a multirun job raises: the sweep records
    it as failed and goes on)."""
    from hydra.types import RunMode

    if mode == RunMode.MULTIRUN:
        raise exc
    print(f"mtbench: {exc}", file=sys.stderr)
    if not (output_dir / "results.json").exists():
        _remove_unstarted(output_dir)
    sys.exit(status)


def _remove_unstarted(output_dir: Path) -> None:
    """Remove a run directory that holds no benchmark: only Hydra's ``.hydra/`` and the log."""
    import logging

    if not output_dir.is_dir():
        return
    if not {p.name for p in output_dir.iterdir()} <= {".hydra", "mtbench.log"}:
        return
    logging.shutdown()  # closes the log file before its folder goes
    shutil.rmtree(output_dir, ignore_errors=True)
    parent = output_dir.parent  # Hydra's default nests runs in a folder per day
    if parent != Path.cwd() and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()


def _explain_compose_error(argv: Sequence[str]) -> str | None:
    """The valid keys of the node a mistyped override names, or ``None`` (not a key error)."""
    if any(a.startswith("-") for a in argv):
        return None  # multirun, --help, --cfg ...: Hydra's message stands alone
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    from mtbench import registry

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        try:
            compose(CONFIG_NAME, overrides=list(argv))
            return None
        except ConfigCompositionException as exc:
            cause = exc.__cause__
            if not isinstance(cause, ConfigKeyError | ConfigAttributeError):
                return None
            full_key = str(getattr(cause, "full_key", "") or "")
        except Exception:  # anything else: Hydra has said what it is
            return None
        if not full_key:
            return None
        from mtbench.config import MOVED_TO_DATASET

        for old, new in MOVED_TO_DATASET.items():
            if full_key == old or full_key.startswith(old + "."):
                moved = new + full_key[len(old) :]
                return (
                    f"mtbench: {old} moved to the dataset, which declares how its inputs are "
                    f"preprocessed: use {moved} (for a dataset that has that option, e.g. "
                    f"cifar100) instead of {full_key}"
                )
        parent = full_key.rpartition(".")[0]
        rest = [a for a in argv if a.lstrip("+~").partition("=")[0] != full_key]
        try:
            node = OmegaConf.select(compose(CONFIG_NAME, overrides=rest), parent)
        except Exception:
            return None
    if node is None or not OmegaConf.is_dict(node):
        return None
    if parent in registry.CONFIG_KINDS and registry.NAME_FIELD in node:
        try:  # the options of a plugin that two packages provide are unknown: say so instead
            registry.get(parent, str(node[registry.NAME_FIELD]))
        except registry.DuplicatePluginError as exc:
            return f"mtbench: {exc}"
        except registry.PluginError:
            pass
    keys = ", ".join(str(k) for k in node.keys())
    return f"mtbench: '{full_key}' is not a key of '{parent or 'the config'}'; its keys are: {keys}"


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out
    import hydra

    prepare()
    argv = sys.argv[1:]
    resume = [a.partition("=")[2] for a in argv if a.startswith("resume=")]
    if resume and resume[-1] and not any(a.startswith("hydra.run.dir=") for a in argv):
        # continue in the resumed directory: its log goes on, and no empty directory is left
        sys.argv.append(f"hydra.run.dir={resume[-1]}")
    try:
        hydra.main(config_path=str(config_dir()), config_name=CONFIG_NAME, version_base="1.3")(
            _task
        )()
    except SystemExit as exc:
        if exc.code == 1 and not _task_started:
            hint = _explain_compose_error(argv)
            if hint:
                print(hint, file=sys.stderr)
        raise


if __name__ == "__main__":
    main()
