"""What the machine is and can do: devices, precision support, memory use, and how much of the
machine a process is getting (so that a cost measured under load says so)."""

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


#: CPU flags that decide how fast training runs (vector width, native low precision).
VECTOR_EXTENSIONS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "fma")


def cpu_extensions() -> list[str]:
    """The :data:`VECTOR_EXTENSIONS` this CPU has, in that order."""
    flags = cpu_flags()
    return [flag for flag in VECTOR_EXTENSIONS if flag in flags]


def device_class() -> str:
    """The hardware class that training speed and low-precision numerics depend on: GPU models
    with their compute capability, or the CPU model with its vector extensions. Runs compare (and
    pool) only within one class."""
    devices = gpus()
    if devices:
        kinds = sorted(
            {
                f"{d['name']} (cc {'.'.join(map(str, d['compute_capability'] or ()))})"
                for d in devices
            }
        )
        return f"GPU {', '.join(kinds)} x{len(devices)}"
    return f"CPU {cpu_name()} [{' '.join(cpu_extensions()) or 'no AVX2'}]"


def precision_is_native(precision: str) -> bool:
    """Whether the devices that train compute ``precision`` natively (float32 always is).

    On CPUs, mixed bfloat16 is native with AVX512-BF16 or AMX-BF16 and emulated (several times
    slower) otherwise; mixed float16 is never native on a CPU. On GPUs, bfloat16 needs compute
    capability 8.0, float16 5.3.
    """
    if precision == "float32":
        return True
    devices = gpus()
    if devices:
        needed = (8, 0) if precision == "mixed_bfloat16" else (5, 3)
        return all(tuple(d["compute_capability"] or (0, 0)) >= needed for d in devices)  # type: ignore[arg-type]
    return precision == "mixed_bfloat16" and cpu_supports_bfloat16()


def usable_cores() -> int:
    """Logical cores this process may run on (its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class MachineSample:
    """A snapshot of this process's and the machine's CPU use (see :func:`machine_share`)."""

    wall: float  # time.perf_counter()
    cpu: float  # this process's CPU seconds, all threads (user + system)
    busy: float | None  # CPU seconds every process spent on the cores this one may use (Linux)
    load: float | None  # the machine's 1-minute load average


def sample_machine() -> MachineSample:
    import time

    try:
        load: float | None = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    return MachineSample(time.perf_counter(), time.process_time(), _busy_seconds(), load)


def machine_share(before: MachineSample, after: MachineSample) -> dict[str, float | None]:
    """How much of the machine the process had between two samples.

    - ``cpu_seconds``: CPU time this process used; ``wall_seconds``: elapsed time.
    - ``cpu_utilisation``: ``cpu_seconds / (wall_seconds * usable cores)``: how much of the
      cores it used (depends on how parallel its work is as well as on load).
    - ``others_utilisation``: the fraction of the usable cores' capacity that *other* processes
      (and the hypervisor: steal time) used meanwhile, from ``/proc/stat``; 0 on an idle machine.
    - ``share``: ``1 - others_utilisation``, the part of the machine left to this process:
      1.0 on an idle machine whatever the workload, about 0.5 beside one busy process on two
      cores. ``None`` where not measurable.
    """
    wall = max(after.wall - before.wall, 1e-9)
    cpu = max(after.cpu - before.cpu, 0.0)
    cores = usable_cores()
    others = None
    if before.busy is not None and after.busy is not None:
        others = min(max((after.busy - before.busy - cpu) / (wall * cores), 0.0), 1.0)
    return {
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "cpu_utilisation": min(cpu / (wall * cores), 1.0),
        "others_utilisation": others,
        "share": None if others is None else 1.0 - others,
        "load_average": after.load,
    }


def _busy_seconds() -> float | None:
    """CPU seconds spent busy (user, nice, system, irq, softirq, steal) on the cores this
    process may use, from ``/proc/stat``; ``None`` off Linux."""
    try:
        text = Path("/proc/stat").read_text()
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    try:
        mine = {f"cpu{i}" for i in os.sched_getaffinity(0)}
    except (AttributeError, OSError):
        mine = None
    busy = 0
    found = False
    for line in text.splitlines():
        fields = line.split()
        if not fields or not fields[0].startswith("cpu") or fields[0] == "cpu":
            continue
        if mine is not None and fields[0] not in mine:
            continue
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
        busy += user + nice + system + irq + softirq + steal
        found = True
    return busy / ticks if found else None


def gpu_utilisation() -> float | None:
    """Mean utilisation (0-1) of the visible NVIDIA GPUs now, from ``nvidia-smi``; ``None`` where
    there is none."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout  # fmt: skip
        values = [float(v) for v in out.split()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return sum(values) / len(values) / 100 if values else None


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
