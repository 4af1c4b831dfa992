"""The schemas of the files the plugin writes, as pydantic models: the baseline file (checked when read and before
written), the JSON report of --rfdetr-report (checked before written) and a line of --rfdetr-history (checked when
read).

``python -m pytest_rfdetr_latency.store.schema [baseline|report|history]`` prints one as JSON Schema; the same
texts ship as ``baseline.schema.json``, ``report.schema.json`` and ``history.schema.json`` beside this module, for
other tools that read the files.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Milliseconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
ScopeName = Literal["e2e", "forward", "iobinding", "device"]


class _Model(BaseModel):
    # Fields a later version adds within this schema version are kept, not refused.
    model_config = ConfigDict(extra="allow")


class ProcessFigures(_Model):
    """One process's measurement of one scope: its statistic over every kept sample, and its blocks."""

    statistic: str = Field(description="median, or pNN: the statistic of this scope")
    value_ms: Positive = Field(description="the statistic over every kept sample of the process")
    blocks_ms: Annotated[list[Milliseconds], Field(min_length=2)] = Field(description="each kept block's statistic")
    n: Annotated[int, Field(ge=1)] = Field(description="samples kept")
    median_ms: Milliseconds
    mean_ms: Milliseconds
    std_ms: Milliseconds
    min_ms: Milliseconds
    p10_ms: Milliseconds
    p90_ms: Milliseconds
    rel_uncertainty: Milliseconds = Field(description="relative standard error of value_ms within the process")
    dropped_blocks: Annotated[int, Field(ge=0)] = 0
    block_size: Annotated[int, Field(ge=1)] = Field(description="timed calls per block")
    host_ms: Milliseconds | None = Field(default=None, description="median host yardstick after each block")
    host_blocks_ms: list[Milliseconds] = Field(
        default_factory=list, description="the host yardstick after each kept block, in block order")


class SessionSpread(_Model):
    """The spread between sessions of one backend and scope, learned from a runner's checks (verdict/sessions.py)."""

    value: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(description="a log standard deviation")
    comparisons: Annotated[int, Field(ge=1)]
    checks: Annotated[int, Field(ge=1)] = Field(description="the runs those comparisons came from")
    recordings: Annotated[int, Field(ge=1)] = Field(description="the recordings they were judged against (of one case)")
    first: str = Field(description="when the first of them ran, ISO 8601 UTC")
    last: str = Field(description="when the last of them ran")


class ScopeBaseline(_Model):
    """A scope's baseline: every recorded process, and their median, which a check is compared with."""

    statistic: str
    value_ms: Positive = Field(description="the median of the processes' value_ms")
    block_size: Annotated[int, Field(ge=1)] = Field(description="calls per block; a check samples the same way")
    spread: Milliseconds | None = Field(description="standard deviation of ln(value_ms) over the processes")
    detectable: Milliseconds | None = Field(
        default=None, description="the smallest regression (a fraction) a check of the default processes could catch, "
                                  "as stated at recording")
    session_spread: SessionSpread | None = Field(
        default=None, description="the spread between sessions learned at recording from this runner's history")
    processes: Annotated[list[ProcessFigures], Field(min_length=1)]


class Memory(_Model):
    kind: str = Field(description="torch-allocator, ort-allocator (ONNX Runtime's CUDA provider through PyTorch's "
                                  "allocator) or nvml-device-used")
    peak_mib: Milliseconds = Field(description="the median of the processes' peaks")
    processes: Annotated[list[Milliseconds], Field(min_length=1)]


class ProfileRow(_Model):
    name: str = Field(description="an operator, a GPU kernel, a label, or the host time outside them")
    kind: Literal["cpu", "gpu", "label", "host"]
    ms: Milliseconds = Field(description="time a call: a kernel's on the GPU, an operator's or label's own on the host")


class Profile(_Model):
    """--rfdetr-profile: a window of one scope's calls under torch.profiler, after its timed blocks."""

    calls: Annotated[int, Field(ge=1)]
    wall_ms: Milliseconds = Field(description="time a call while profiled (the profiler's overhead included)")
    cpu_ms: Milliseconds
    gpu_ms: Milliseconds
    rows: Annotated[list[ProfileRow], Field(max_length=44)] = Field(
        description="the 40 largest, then one row per kind that sums the rest")
    seconds: Seconds = Field(description="what taking the profile cost, apart from the timed blocks")


class DiagnosisRow(_Model):
    name: str
    kind: Literal["cpu", "gpu", "label", "host"]
    before_ms: Milliseconds
    after_ms: Milliseconds
    delta_ms: float
    status: Literal["slower", "faster", "new", "gone"]


class Diagnosis(_Model):
    """A scope's profile at recording set against its profile now: the rows whose time a call changed most."""

    change_ms: float = Field(description="the scope's change as timed (now - baseline)")
    profiled_ms: list[float | None] = Field(description="time a call while profiled, then and now")
    gpu_ms: list[float | None] = Field(description="GPU kernel time a call, then and now")
    calls: list[int | None]
    explained: float | None = Field(description="the share of change_ms that the rows that grew add up to, on one "
                                                "timeline (explained_by); none where the scope got faster")
    explained_by: Literal["host", "gpu"] = Field(description="host: operators, labels and the time outside them; "
                                                             "gpu: kernels")
    rows: list[DiagnosisRow]


class Entry(_Model):
    """One case (model × backend × batch × resolution) on this device."""

    recorded_at: str
    git_commit: str | None = None
    backend: str | None = Field(default=None, description="torch-fp32, onnx-cuda, ...")
    fingerprint: dict[str, Any]
    detections: float = 0.0
    score_threshold: float = 0.0
    processes: Annotated[int, Field(ge=1)] = Field(description="fresh processes the baseline was recorded in")
    scopes: Annotated[dict[ScopeName, ScopeBaseline], Field(min_length=1)]
    memory: Memory | None = None
    parity: dict[str, Any] | None = None
    workload: dict[str, Any] | None = Field(
        default=None, description="seed, weights, images, detections, batch, resolution, sampling: a check is "
        "compared only with an entry of the same workload")
    profile: dict[ScopeName, Profile] | None = Field(default=None, description="--rfdetr-profile's tables")


class BaselineFile(_Model):
    """latency_baselines/<device>.json"""

    schema_version: Literal[2]
    device: Annotated[str, Field(min_length=1)]
    entries: dict[str, Entry]


class VerdictReport(_Model):
    kind: Literal["pass", "regression", "improvement", "inconclusive"]
    scope: str
    statistic: str
    unit: str
    baseline: float = Field(description="the median of the baseline's processes' figures")
    current: float = Field(description="the median of this check's processes' figures")
    delta: float
    threshold: float = Field(description="the effective threshold, a fraction")
    threshold_reason: str
    baseline_processes: list[float]
    processes: list[float]
    notes: list[str]
    detail: dict[str, Any]


class CaseReport(_Model):
    id: str
    model: str
    backend: str
    batch: int
    resolution: int | None
    device: str
    device_kind: str
    node: str
    outcome: str = Field(description="saved, not-saved, pass, improvement, regression, inconclusive, no-baseline, "
                                     "unavailable, refused, over-budget, parity-failure")
    scopes: dict[ScopeName, ProcessFigures] = Field(description="this process's figures")
    unavailable_scopes: dict[str, str]
    verdicts: dict[str, VerdictReport]
    fingerprint: dict[str, Any]
    drift: list[str]
    detections: float
    score_threshold: float
    details: dict[str, Any]
    baseline_file: str
    baseline: dict[str, Any] | None
    message: str
    memory: dict[str, Any] | None
    parity: dict[str, Any] | None
    budget_failures: list[str]
    samples_ms: dict[str, list[float]]
    processes: list[dict[str, Any]] = Field(description="the fresh processes that measured this case again")
    workload: dict[str, Any]
    baseline_entry: Entry | None = Field(default=None, description="what --save-baseline recorded")
    diagnosis: dict[ScopeName, Diagnosis] | None = Field(
        default=None, description="--rfdetr-profile: each scope's profile then and now, what changed most")


class Report(_Model):
    """--rfdetr-report PATH"""

    schema_version: Literal[2]
    created_at: str
    command: list[str]
    device: str | None
    fingerprint: dict[str, Any]
    baseline_file: str | None
    summary: dict[str, int] = Field(description="cases per outcome")
    drift: dict[str, list[str]]
    fps: dict[str, dict[str, float]] = Field(description="images per second end to end, model × backend")
    timings_seconds: dict[str, float] = Field(description="seconds of shared work: model builds, exports...")
    interrupted: bool = Field(default=False, description="the run was stopped (Ctrl-C, SIGTERM): nothing was saved")
    cases: list[CaseReport]


class HistoryLine(_Model):
    """One line of --rfdetr-history's DIR/<device>.jsonl: one case × scope of one run, or an accept line of
    ``rfdetr-latency accept`` (the shifts of that case × scope before it accepted by hand, with the reason)."""

    v: Literal[1] = Field(description="the history line's version")
    run: Annotated[str, Field(min_length=1)] = Field(description="the run's id: the lines of one run share it")
    time: Annotated[str, Field(min_length=1)] = Field(description="when the run ended, ISO 8601 UTC")
    kind: Literal["check", "record", "accept"]
    commit: str | None = None
    device: Annotated[str, Field(min_length=1)]
    case: Annotated[str, Field(min_length=1)]
    model: str
    backend: str
    batch: int
    resolution: int | None
    outcome: str = Field(description="the case's outcome in that run")
    scope: Literal["e2e", "forward", "iobinding", "device", "memory"]
    statistic: str
    unit: str = "ms"
    value: Positive = Field(description="the figure judged (the median over the run's processes) or recorded")
    processes: list[Positive] = Field(description="each process's figure")
    verdict: Literal["pass", "regression", "improvement", "inconclusive", "saved", "accepted"]
    baseline: Positive | None = Field(description="the baseline's figure it was judged against (checks only)")
    threshold: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        description="the effective threshold, a fraction (checks only)")
    workload: dict[str, Any] = Field(description="what was measured; another workload forms another series")
    fingerprint: dict[str, Any]
    injected_pct: float | None = Field(default=None, description="--rfdetr-inject-slowdown of a self-test run")
    reason: str | None = Field(default=None, description="an accept line's reason, as given to rfdetr-latency accept")
    change: Annotated[float, Field(allow_inf_nan=False)] | None = Field(
        default=None, description="a stored check's log change as judged, ln(1 + delta) (verdict/sessions.py)")
    process_variance: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        default=None, description="the variance of that change its threshold set aside for the processes")
    accepts_run: str | None = Field(default=None, description="an accept line's slowdown: the id of the run it began "
                                    "at; it and the shifts before it are accepted, none after")


SCHEMAS: dict[str, type[BaseModel]] = {"baseline": BaselineFile, "report": Report, "history": HistoryLine}


def json_schema(name: str = "baseline") -> str:
    return json.dumps(SCHEMAS[name].model_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    import sys

    print(json_schema(sys.argv[1] if len(sys.argv) > 1 else "baseline"), end="")
