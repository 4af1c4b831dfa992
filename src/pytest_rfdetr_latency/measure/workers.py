"""Binding pytest-xdist workers to GPUs and CPU cores, so that several GPUs of one host measure at once.

Each worker gets one GPU of its own (``CUDA_VISIBLE_DEVICES`` set before CUDA initialises in that worker) and an
equal, disjoint slice of the CPU cores (affinity, and thread counts to match). Two workers never share a GPU: a
measurement disturbed by another one on the same device is worse than no measurement, so asking for more workers
than GPUs is a usage error, and so is mixing GPU models in one run (each model has its own baseline file; run one
pytest per model). Planning is pure; :func:`apply` changes the process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class WorkerPlanError(ValueError):
    """The requested workers cannot be bound as asked; the message says what the host has."""


@dataclass(frozen=True)
class Gpu:
    visible_id: str  # what CUDA_VISIBLE_DEVICES must say to show this GPU alone (an index or a UUID)
    name: str


@dataclass(frozen=True)
class Binding:
    worker: int
    cores: tuple[int, ...]
    gpu: Gpu | None = None

    def describe(self) -> str:
        where = f"GPU {self.gpu.visible_id} ({self.gpu.name})" if self.gpu else "no GPU"
        return f"worker gw{self.worker}: {where}, cores {','.join(map(str, self.cores))}"


def plan(workers: int, device: str, gpus: Sequence[Gpu], cores: Sequence[int]) -> list[Binding]:
    """One binding per worker; ``device`` is the resolved request (``auto``, ``cpu``, ``cuda``, ``cuda:N``)."""
    if workers < 1:
        raise WorkerPlanError(f"{workers} workers cannot be planned")
    use_gpu = device.startswith("cuda") or (device == "auto" and len(gpus) > 0)
    if use_gpu:
        if ":" in device:
            raise WorkerPlanError(
                f"--rfdetr-device {device} names one GPU, but with pytest-xdist each worker is given a GPU of its "
                "own: pass --rfdetr-device cuda (or leave it out), or run without -n"
            )
        if not gpus:
            raise WorkerPlanError("--rfdetr-device cuda with pytest-xdist: no GPU is visible on this host")
        if workers > len(gpus):
            listed = ", ".join(f"{g.visible_id} ({g.name})" for g in gpus)
            raise WorkerPlanError(
                f"-n {workers} asks for {workers} workers but this host shows {len(gpus)} GPU(s): {listed}. Two "
                f"workers on one GPU would disturb each other's measurements: use -n {len(gpus)} or fewer"
            )
        names = sorted({g.name for g in gpus[:workers]})
        if len(names) > 1:
            raise WorkerPlanError(
                f"the GPUs to be used are of different models ({', '.join(names)}); each model has its own "
                "baseline file and cases would land on either at random: run one pytest per model, selecting its "
                "GPUs with CUDA_VISIBLE_DEVICES"
            )
    if workers > len(cores):
        raise WorkerPlanError(f"-n {workers} asks for more workers than this process may use cores ({len(cores)})")
    share = len(cores) // workers
    return [
        Binding(
            worker=i,
            cores=tuple(cores[i * share:(i + 1) * share]),
            gpu=gpus[i] if use_gpu else None,
        )
        for i in range(workers)
    ]


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[Gpu]:
    """The GPUs this process may use, in CUDA's order, read through NVML (no CUDA context is created)."""
    from pytest_rfdetr_latency.measure.environment import nvml

    environ = os.environ if environ is None else environ
    pynvml = nvml()
    if pynvml is None:
        return []
    try:
        count = pynvml.nvmlDeviceGetCount()
        every = []
        for index in range(count):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            every.append((str(index), name.decode() if isinstance(name, bytes) else str(name),
                          uuid.decode() if isinstance(uuid, bytes) else str(uuid)))
    except Exception:
        return []
    mask = environ.get("CUDA_VISIBLE_DEVICES")
    if mask is None:
        return [Gpu(index, name) for index, name, _ in every]
    chosen = []
    for token in (t.strip() for t in mask.split(",")):
        if not token:
            continue
        for number, name, uuid in every:
            if token == number or (token.startswith("GPU-") and uuid.startswith(token)):
                chosen.append(Gpu(token, name))
                break
        else:
            break  # CUDA stops at the first entry it cannot resolve
    return chosen


def affinity() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def worker_index(workerinput: Mapping[str, object]) -> tuple[int, int]:
    """(this worker's index, the number of workers) from pytest-xdist's ``config.workerinput``."""
    worker_id = str(workerinput.get("workerid", "gw0"))
    count = int(str(workerinput.get("workercount", 1)))
    return int(worker_id.lstrip("gw") or 0), count


def apply(binding: Binding) -> dict[str, str]:
    """Bind this process; returns what was set, for the report. Call before CUDA initialises."""
    applied: dict[str, str] = {}
    if binding.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = binding.gpu.visible_id
        applied["CUDA_VISIBLE_DEVICES"] = binding.gpu.visible_id
    if hasattr(os, "sched_setaffinity") and binding.cores:
        os.sched_setaffinity(0, binding.cores)
        applied["cores"] = ",".join(map(str, binding.cores))
    threads = str(max(1, len(binding.cores)))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = threads
    applied["threads"] = threads
    return applied
