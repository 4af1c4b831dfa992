"""The device a run measures on and the fingerprint of its software and hardware.

The device decides the baseline file (identical GPUs share one); the fingerprint is stored with every baseline
entry so that a later run can say exactly what changed since (driver, CUDA, torch, onnxruntime, rfdetr, clocks,
precision) instead of blaming the code for it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class DeviceError(ValueError):
    """The requested device does not exist here; the message says what does."""


@dataclass(frozen=True)
class Device:
    spec: str  # "cpu" or "cuda:N", what torch is given
    name: str  # "NVIDIA H200", or the CPU's model name
    kind: str  # "cuda" or "cpu"
    index: int | None = None

    @property
    def slug(self) -> str:
        from pytest_rfdetr_latency.store.baselines import slugify

        return slugify(self.name)

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5, check=False
            )
            if out.stdout.strip():
                return out.stdout.strip()
        except OSError:
            pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def resolve_device(requested: str) -> Device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a concrete device, or raise :class:`DeviceError`.

    An explicit ``cuda`` request on a machine without a visible GPU is an error, not a quiet fall back to the
    CPU: a GPU gate that silently measured the CPU would compare against nothing and mislead.
    """
    import torch

    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return Device("cpu", cpu_name(), "cpu")
    if not torch.cuda.is_available():
        raise DeviceError(
            f"--rfdetr-device {requested}: no CUDA device is visible here (torch {torch.__version__}, "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}); run on a GPU machine "
            "or pass --rfdetr-device cpu"
        )
    count = torch.cuda.device_count()
    index = 0 if requested in ("auto", "cuda") else int(requested.split(":", 1)[1])
    if index >= count:
        visible = ", ".join(f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(count))
        raise DeviceError(f"--rfdetr-device {requested}: this host shows {count} GPU(s): {visible}")
    return Device(f"cuda:{index}", torch.cuda.get_device_name(index), "cuda", index)


def _version(*dists: str) -> str | None:
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def nvml() -> Any:
    """pynvml, initialised (nvidia-ml-py), or None where NVML does not answer (no driver, a container without it)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    return pynvml


def nvml_handle(index: int) -> tuple[Any, Any] | None:
    """(pynvml, handle) for torch's CUDA device ``index``, matched by UUID (NVML counts every GPU of the host, CUDA
    only the visible ones), or None where NVML does not answer."""
    pynvml = nvml()
    if pynvml is None:
        return None
    try:
        import torch

        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        if uuid is not None:
            text = str(uuid)
            return pynvml, pynvml.nvmlDeviceGetHandleByUUID(text if text.startswith("GPU-") else f"GPU-{text}")
    except Exception:
        pass
    try:
        return pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:
        return None


def _nvml_facts(device: Device) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    found = nvml_handle(device.index or 0)
    if found is None:
        return {"nvml": "unavailable"}
    pynvml, handle = found
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        facts["driver"] = driver.decode() if isinstance(driver, bytes) else str(driver)
        facts["max_sm_clock_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)
        facts["max_mem_clock_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM)
        try:
            facts["power_limit_w"] = round(pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0)
        except pynvml.NVMLError:
            pass
        try:
            facts["app_sm_clock_mhz"] = pynvml.nvmlDeviceGetApplicationsClock(handle, pynvml.NVML_CLOCK_SM)
        except pynvml.NVMLError:
            pass
        serial = None
        try:
            serial = pynvml.nvmlDeviceGetUUID(handle)
        except pynvml.NVMLError:
            pass
        if serial is not None:
            facts["gpu_uuid"] = serial.decode() if isinstance(serial, bytes) else str(serial)
    except Exception as exc:  # NVML is optional: a container without it still measures
        facts["nvml"] = f"unavailable ({type(exc).__name__})"
    return facts


# Fields whose change makes a comparison with the baseline suspect. Others are recorded for the reader only.
DRIFT_FIELDS: tuple[str, ...] = (
    "device",
    "driver",
    "cuda",
    "cudnn",
    "torch",
    "onnxruntime",
    "rfdetr",
    "max_sm_clock_mhz",
    "max_mem_clock_mhz",
    "power_limit_w",
    "app_sm_clock_mhz",
    "cpu",
    "cpu_count",
    "python",
    "precision",
    "provider",
    "detections",
)


def fingerprint(device: Device) -> dict[str, Any]:
    """What this process runs on. Per-case facts (precision, provider) are added by the case."""
    import torch

    facts: dict[str, Any] = {
        "device": device.name,
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "rfdetr": _version("rfdetr"),
        "onnxruntime": _version("onnxruntime-gpu", "onnxruntime"),
        "onnxruntime_build": "gpu" if _version("onnxruntime-gpu") else ("cpu" if _version("onnxruntime") else None),
        "numpy": _version("numpy"),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpu": cpu_name(),
        "cpu_count": cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "plugin": _version("pytest-rfdetr-latency"),
    }
    if device.is_cuda:
        facts["cuda"] = torch.version.cuda
        facts["cudnn"] = torch.backends.cudnn.version()
        props = torch.cuda.get_device_properties(device.index or 0)
        facts["sm_count"] = props.multi_processor_count
        facts["memory_gib"] = round(props.total_memory / 2**30, 1)
        facts.update(_nvml_facts(device))
    return facts


# Fields that cannot change what a backend measures: a PyTorch case does not run ONNX Runtime.
_IRRELEVANT = {"torch": ("onnxruntime", "provider")}


def drift(
    baseline: Mapping[str, Any], current: Mapping[str, Any], extra_fields: tuple[str, ...] = (), backend: str = ""
) -> list[str]:
    """Human-readable lines for each drift field whose value differs: ``torch: 2.10.0 -> 2.11.0``."""
    lines = []
    skip = _IRRELEVANT.get(backend.split("-", 1)[0], ())
    for key in (*DRIFT_FIELDS, *extra_fields):
        if key in skip:
            continue
        if key not in baseline and key not in current:
            continue
        before, after = baseline.get(key), current.get(key)
        if before != after:
            shown = ["<none>" if v is None else v for v in (before, after)]
            lines.append(f"{key}: {shown[0]} -> {shown[1]}")
    return lines


def git_commit(root: Path) -> str | None:
    """The checked-out commit of ``root``'s repository, or None where there is none (or no git)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None


def yardstick_ms(loops: int = 4000) -> float:
    """Milliseconds of one run of a fixed pure-Python loop: the host's speed right now, as the launching thread sees
    it. Timed after every sampled block (about 0.2 ms), so that a slow spell of the host shows beside the blocks it
    slowed."""
    import time

    start = time.perf_counter_ns()
    total = 0
    for i in range(loops):
        total += i * i % 7
    return (time.perf_counter_ns() - start) / 1e6


def host_probe_ms() -> float:
    """The median of five yardsticks of 20000 loops: this process's host speed, for the record and core choice."""
    times = sorted(yardstick_ms(20000) for _ in range(5))
    return times[len(times) // 2]


def steal_jiffies() -> int | None:
    """The host's CPU time stolen by the hypervisor so far (the ``steal`` column of /proc/stat), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    return int(fields[8]) if len(fields) > 8 and fields[0] == "cpu" else None
