"""A window of each scope's calls under the profiler that ships with PyTorch (--rfdetr-profile): the operators it
ran on the host, the kernels the GPU ran (CUPTI), and the work this plugin labels (a self-test's injected work), each
as time per call. Taken once the case's every scope is timed and its memory read, never inside a timed window, and
its cost is reported apart. ONNX Runtime runs its graph out of the profiler's sight: its operators come from its own
session profiling (ort_rows, add_operators), in a session of its own on the same input."""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pytest_rfdetr_latency.measure.timing import Fn
from pytest_rfdetr_latency.verdict.diagnosis import ORT_PREFIX, OUTSIDE  # the names the diagnosis reads rows by

WINDOW_CALLS = 5  # calls profiled per scope: enough for a stable table, cheap beside the timed blocks
MAX_TRACE_BYTES = 32 * 2**20  # a raw trace kept (gzipped): 5 calls of a model are a few MiB at most
MAX_ROWS = 40  # rows kept per scope, by time per call; the rest summed per kind: an entry stays a few kilobytes
INJECTED = "rfdetr_latency.injected_work"  # how the self-test's injected work is labelled (injection.py)


def labelled(fn: Fn, name: str = INJECTED) -> Fn:
    """``fn`` run inside a profiler label, where PyTorch is already loaded (else as it is). Only for runs that
    profile: a label costs microseconds a call inside the timed window."""
    torch = sys.modules.get("torch")
    if torch is None:
        return fn
    record = torch.profiler.record_function

    def run() -> object:
        with record(name):
            return fn()

    return run


def trace_folder(report: Path | None) -> Path | None:
    """Where the raw traces go: beside the JSON report (``--rfdetr-report``), in ``<report stem>-traces/``."""
    return None if report is None else report.parent / f"{report.stem}-traces"


def take_all(details: dict[str, Any], scopes: Sequence[tuple[str, Fn]], cuda: bool, traces: Path | None = None,
             case_id: str = "case") -> None:
    """Profile each ``(scope, callable)`` into ``details["profile"]``, its raw trace (Chrome's format, gzipped: it
    opens in Perfetto and chrome://tracing) into ``traces`` where given; where no profile can be taken, say why in
    ``details["profile_errors"]`` and leave the measurement as it is."""
    for scope, fn in scopes:
        try:
            trace = None if traces is None else traces / f"{case_id}.{scope}.trace.json.gz"
            details.setdefault("profile", {})[scope] = capture(fn, cuda, trace=trace)
        except Exception as exc:  # a profiler that cannot start here: the verdict stands without a diagnosis
            details.setdefault("profile_errors", {})[scope] = f"{type(exc).__name__}: {str(exc)[:300]}"


def capture(fn: Fn, cuda: bool, calls: int = WINDOW_CALLS, trace: Path | None = None) -> dict[str, Any]:
    """Profile ``calls`` calls of ``fn``: ``{"calls", "wall_ms", "cpu_ms", "gpu_ms", "rows", "seconds"}``, each row
    ``{"name", "kind" (cpu, gpu, label or host), "ms"}`` per call, the largest first; with ``trace``, the raw trace
    written there (``"trace"``: its path) unless it is over MAX_TRACE_BYTES compressed (``"trace_error"``: why).
    Raises where a GPU run's profile holds no kernel, with what the profiler said."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    start = time.perf_counter()
    with _stderr_kept() as said, profile(activities=activities) as prof:
        began = time.perf_counter()
        for _ in range(calls):
            fn()
        if cuda:
            torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - began) * 1000.0 / calls
    rows = rows_of(prof.key_averages(), calls)
    if cuda and not any(r["kind"] == "gpu" for r in rows):
        raise RuntimeError("the profiler recorded no GPU kernel (CUPTI unavailable here?)"
                           + (f": {said[-1][:300]}" if said else ""))
    cpu_ms = sum(r["ms"] for r in rows if r["kind"] in ("cpu", "label"))
    gpu_ms = sum(r["ms"] for r in rows if r["kind"] == "gpu")
    rows.append({"name": OUTSIDE, "kind": "host", "ms": round(max(0.0, wall_ms - cpu_ms), 4)})
    saved = {} if trace is None else _trace_kept(prof, trace)
    return {"calls": calls, "wall_ms": round(wall_ms, 4), "cpu_ms": round(cpu_ms, 4), "gpu_ms": round(gpu_ms, 4),
            "rows": kept(rows), "seconds": round(time.perf_counter() - start, 3), **saved}


def _trace_kept(prof: Any, path: Path) -> dict[str, str]:
    """write_trace, or why not: a trace that cannot be written leaves the table as it is."""
    try:
        return write_trace(prof, path)
    except OSError as exc:
        return {"trace_error": f"{type(exc).__name__}: {str(exc)[:200]}"}


def write_trace(prof: Any, path: Path) -> dict[str, str]:
    """The profiler's raw trace, gzipped, at ``path`` (replaced whole: written aside, then moved), or why not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as folder:
        raw = Path(folder) / "trace.json"
        prof.export_chrome_trace(str(raw))
        packed = Path(folder) / "trace.json.gz"
        with raw.open("rb") as source, gzip.open(packed, "wb", compresslevel=6) as sink:
            shutil.copyfileobj(source, sink)
        size = packed.stat().st_size
        if size > MAX_TRACE_BYTES:
            limit = MAX_TRACE_BYTES / 2**20
            return {"trace_error": f"{size / 2**20:.1f} MiB compressed, over the {limit:.0f} MiB kept"}
        os.replace(packed, path)
    return {"trace": str(path)}


OPERATOR_SCOPES = ("forward", "e2e", "iobinding")  # scopes whose every call is one run of the case's ONNX session


def ort_rows(events: Sequence[dict[str, Any]], runs: int) -> list[dict[str, Any]]:
    """ONNX Runtime's profile (its JSON events) as rows: each operator type's node time within the last ``runs``
    model runs, per run, named ``ort::<op>``; kind cpu (on the CUDA provider, the host's side of its kernels)."""
    spans = [(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in events
             if e.get("cat") == "Session" and e.get("name") == "model_run"][-runs:]
    totals: dict[str, float] = {}
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        at = float(event.get("ts", 0))
        if any(start <= at <= end for start, end in spans):
            name = f"{ORT_PREFIX}{event.get('args', {}).get('op_name', 'unknown')}"
            totals[name] = totals.get(name, 0.0) + float(event.get("dur", 0))
    count = max(1, len(spans))
    return [{"name": name, "kind": "cpu", "ms": round(us / 1000.0 / count, 4)} for name, us in totals.items() if us > 0]


def add_operators(table: dict[str, Any], rows: Sequence[dict[str, Any]]) -> None:
    """``rows`` (ort_rows of a session of its own, run on the same input) into a scope's ``table``: the host time
    outside profiled operators gives up what they account for (no more than it holds: the rows come from other runs,
    so they add up to the call only about)."""
    if not rows:
        return
    kept_rows = [dict(r) for r in table["rows"]]
    added = sum(r["ms"] for r in rows)
    for row in kept_rows:
        if row["name"] == OUTSIDE:
            taken = min(row["ms"], added)
            row["ms"] = round(row["ms"] - taken, 4)
            table["outside_taken_ms"] = round(taken, 4)  # what diagnosis gives back to a side without operators
    table["rows"] = kept([*kept_rows, *(dict(r) for r in rows)])
    table["cpu_ms"] = round(table["cpu_ms"] + added, 4)
    table["operators"] = "ONNX Runtime's session profiling, a session of its own on the same input"


def kept(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The MAX_ROWS largest rows, and per kind one row that sums the rest, so that a row falling below the cut on
    one side does not read as gone."""
    rows = sorted(rows, key=lambda r: -r["ms"])
    rest: dict[str, float] = {}
    for row in rows[MAX_ROWS:]:
        rest[row["kind"]] = rest.get(row["kind"], 0.0) + row["ms"]
    return rows[:MAX_ROWS] + [{"name": f"(other {kind} rows)", "kind": kind, "ms": round(ms, 4)}
                              for kind, ms in rest.items()]


def rows_of(events: Any, calls: int) -> list[dict[str, Any]]:
    """The profiler's averages as rows of time per call: a kernel's device time, an operator's or a label's own
    (self) host time, so that the rows add up without counting nested work twice."""
    rows = []
    for event in events:
        on_gpu = "CUDA" in str(getattr(event, "device_type", ""))
        label = getattr(event, "is_user_annotation", False) or str(event.key) == INJECTED
        if label and on_gpu:
            continue  # the GPU-side span of a label: its kernels are counted as kernels
        kind = "label" if label else ("gpu" if on_gpu else "cpu")
        if on_gpu:  # torch < 2.4 names it after CUDA
            found = getattr(event, "self_device_time_total", None)
            us = float(getattr(event, "self_cuda_time_total", 0.0) if found is None else found)
        else:
            us = float(event.self_cpu_time_total)
        if us > 0:
            rows.append({"name": str(event.key), "kind": kind, "ms": round(float(us) / 1000.0 / calls, 4)})
    return rows


@contextlib.contextmanager
def _stderr_kept() -> Iterator[list[str]]:
    """The profiler's C++ side logs its start and stop to the process's stderr: kept out of the way while it runs,
    and handed back (the last lines) so that a failure can say what it said."""
    said: list[str] = []
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield said
        return
    with tempfile.TemporaryFile("w+") as kept_text:
        try:
            os.dup2(kept_text.fileno(), 2)
            yield said
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            kept_text.seek(0)
            said += [line for line in kept_text.read().splitlines() if line.strip()][-5:]
