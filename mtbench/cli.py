"""The command line: ``python -m mtbench [overrides]``, a Hydra application."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CONFIG_NAME = "config"


def config_dir() -> Path:
    """``conf/`` of a source checkout (editable install), or the copy shipped inside the package."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / "conf", package / "conf"):
        if (candidate / f"{CONFIG_NAME}.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"mtbench's config folder is missing (looked next to {package})")


def prepare() -> None:
    """Load plugins (filling Hydra's ConfigStore) and store mtbench's own schema."""
    from mtbench import registry
    from mtbench.config import store_schema

    registry.load_entry_points()
    store_schema()


def _task(cfg: Any) -> Any:
    import shlex
    import sys

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from mtbench.data import DatasetError
    from mtbench.protocol import run_benchmark
    from mtbench.trainer import Interrupted

    hydra_config = HydraConfig.get()
    overrides = [o for o in hydra_config.overrides.task if not o.startswith("resume=")]
    command = " ".join(["python -m mtbench", *map(shlex.quote, overrides)])
    try:
        results = run_benchmark(cfg, Path(hydra_config.runtime.output_dir), command)
    except (Interrupted, KeyboardInterrupt):
        sys.exit(130)  # the resume command was logged
    except DatasetError as exc:
        if hydra_config.mode == RunMode.MULTIRUN:
            raise  # the sweep records the failed job and goes on
        # missing, corrupt or unreachable data: the message says what to do; a traceback
        # through urllib or tarfile would only bury it
        print(f"mtbench: {exc}", file=sys.stderr)
        sys.exit(1)
    comparison = results.get("comparison") or {}
    return comparison.get("delta_m_percent")


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out
    import hydra

    prepare()
    hydra.main(config_path=str(config_dir()), config_name=CONFIG_NAME, version_base="1.3")(_task)()


if __name__ == "__main__":
    main()
