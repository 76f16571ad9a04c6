"""What the machine is and can do: devices, precision support, memory use."""

from __future__ import annotations

import os
import platform
import resource
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


@cache
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@cache
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_supports_bfloat16() -> bool:
    """True where the CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def gpus() -> list[dict[str, object]]:
    import tensorflow as tf

    found = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        found.append(
            {
                "name": details.get("device_name", device.name),
                "compute_capability": details.get("compute_capability"),
            }
        )
    return found


def resolve_precision(requested: str) -> str:
    """The Keras dtype policy for a ``trainer.precision`` setting.

    ``auto`` picks ``mixed_bfloat16`` where the accelerator that trains supports it natively
    (GPUs of compute capability 8.0 or newer; CPUs with AVX512-BF16 or AMX-BF16), mixed float16
    on older GPUs, and float32 otherwise.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"trainer.precision={requested!r}; choose one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    devices = gpus()
    if devices:
        capabilities = [d["compute_capability"] or (0, 0) for d in devices]
        if all(tuple(c) >= (8, 0) for c in capabilities):  # type: ignore[arg-type]
            return "mixed_bfloat16"
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_supports_bfloat16() else "float32"


def describe_device() -> str:
    devices = gpus()
    if devices:
        names = sorted({str(d["name"]) for d in devices})
        return f"{len(devices)} x GPU ({', '.join(names)})"
    return f"CPU ({cpu_name()}, {os.cpu_count()} logical cores)"


@dataclass
class PeakMemory:
    """Peak resident memory of this process during a block, in MiB.

    On Linux the kernel's high-water mark is reset at the start (``/proc/self/clear_refs``), so the
    peak belongs to this block alone; elsewhere it is the process's peak since it started, which
    ``scope`` says. GPU peaks come from TensorFlow's allocator statistics.
    """

    host_mb: float = 0.0
    scope: str = "run"
    device_mb: float | None = None

    def start(self) -> None:
        self.scope = "run" if _reset_rss_peak() else "process"
        self._reset_gpu_peaks()

    def stop(self) -> None:
        self.host_mb = _rss_peak_mb()
        self.device_mb = self._gpu_peak_mb()

    @staticmethod
    def _reset_gpu_peaks() -> None:
        import tensorflow as tf

        for i, _ in enumerate(tf.config.list_logical_devices("GPU")):
            try:
                tf.config.experimental.reset_memory_stats(f"GPU:{i}")
            except (ValueError, RuntimeError):
                pass

    @staticmethod
    def _gpu_peak_mb() -> float | None:
        import tensorflow as tf

        peaks = []
        for i, _ in enumerate(tf.config.list_logical_devices("GPU")):
            try:
                peaks.append(tf.config.experimental.get_memory_info(f"GPU:{i}")["peak"] / 2**20)
            except (ValueError, RuntimeError):
                pass
        return max(peaks) if peaks else None


def _reset_rss_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_peak_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
