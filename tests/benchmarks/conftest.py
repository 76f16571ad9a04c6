"""pytest-benchmark set-up: machine information that makes saved results comparable.

Run with ``python -m pytest tests/benchmarks --benchmark-only`` (the default test run skips
benchmarks); add ``--benchmark-autosave`` to keep the JSON under ``.benchmarks/`` and
``--benchmark-compare`` to compare with the last saved run.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_benchmark_update_machine_info(config: Any, machine_info: dict[str, Any]) -> None:
    import keras
    import tensorflow as tf

    from mtbench import hardware

    flags = hardware.cpu_flags()
    machine_info["mtbench"] = {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "device": hardware.describe_device(),
        "precision_auto": hardware.resolve_precision("auto"),
        "cpu": hardware.cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_flags": sorted(
            f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")) or f == "f16c"
        ),
        "oneDNN": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
    }
