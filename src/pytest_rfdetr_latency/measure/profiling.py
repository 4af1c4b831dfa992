"""A window of one scope's calls under the profiler that ships with PyTorch (--rfdetr-profile): the operators it ran
on the host, the kernels the GPU ran (CUPTI), and the work this plugin labels (an injected slowdown), each as time per
call. Taken after the scope's timed blocks, never inside them, and its cost is reported apart. ONNX Runtime runs
its graph out of the profiler's sight: its time shows as host time outside any profiled operator."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from pytest_rfdetr_latency.measure.timing import Fn

WINDOW_CALLS = 5  # calls profiled per scope: enough for a stable table, cheap beside the timed blocks
MAX_ROWS = 25  # rows kept per scope, by time per call: a baseline entry stays a few kilobytes
INJECTED = "rfdetr_latency.injected_work"  # how the self-test's injected work is labelled (injection.py)
OUTSIDE = "(host time outside profiled operators)"


def labelled(fn: Fn, name: str = INJECTED) -> Fn:
    """``fn`` run inside a profiler label, where PyTorch is already loaded (else as it is)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return fn
    record = torch.profiler.record_function

    def run() -> object:
        with record(name):
            return fn()

    return run


def take(details: dict[str, Any], scope: str, fn: Fn, cuda: bool) -> None:
    """Profile ``scope`` into ``details["profile"]``; where no profile can be taken, say why in
    ``details["profile_errors"]`` and leave the measurement as it is."""
    try:
        details.setdefault("profile", {})[scope] = capture(fn, cuda)
    except Exception as exc:  # a profiler that cannot start here: the verdict stands without a diagnosis
        details.setdefault("profile_errors", {})[scope] = f"{type(exc).__name__}: {str(exc)[:300]}"


def capture(fn: Fn, cuda: bool, calls: int = WINDOW_CALLS) -> dict[str, Any]:
    """Profile ``calls`` calls of ``fn``: ``{"calls", "wall_ms", "cpu_ms", "gpu_ms", "rows", "seconds"}``, each row
    ``{"name", "kind" (cpu, gpu, label or host), "ms"}`` per call, the largest first."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    start = time.perf_counter()
    with _stderr_silenced(), profile(activities=activities) as prof:
        began = time.perf_counter()
        for _ in range(calls):
            fn()
        if cuda:
            torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - began) * 1000.0 / calls
    rows = rows_of(prof.key_averages(), calls)
    cpu_ms = sum(r["ms"] for r in rows if r["kind"] in ("cpu", "label"))
    gpu_ms = sum(r["ms"] for r in rows if r["kind"] == "gpu")
    rows.append({"name": OUTSIDE, "kind": "host", "ms": round(max(0.0, wall_ms - cpu_ms), 4)})
    rows.sort(key=lambda r: -r["ms"])
    return {"calls": calls, "wall_ms": round(wall_ms, 4), "cpu_ms": round(cpu_ms, 4), "gpu_ms": round(gpu_ms, 4),
            "rows": rows[:MAX_ROWS], "seconds": round(time.perf_counter() - start, 3)}


def rows_of(events: Any, calls: int) -> list[dict[str, Any]]:
    """The profiler's averages as rows of time per call: a kernel's device time, an operator's or a label's own
    (self) host time, so that the rows add up without counting nested work twice."""
    rows = []
    for event in events:
        on_gpu = "CUDA" in str(getattr(event, "device_type", ""))
        kind = "label" if getattr(event, "is_user_annotation", False) else ("gpu" if on_gpu else "cpu")
        if kind == "label" and on_gpu:
            continue  # the GPU-side span of a label: its kernels are counted as kernels
        us = getattr(event, "self_device_time_total", 0.0) if on_gpu else event.self_cpu_time_total
        if us > 0:
            rows.append({"name": str(event.key), "kind": kind, "ms": round(float(us) / 1000.0 / calls, 4)})
    return rows


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """The profiler's C++ side logs its start and stop to the process's stderr: out of the way while it runs."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
