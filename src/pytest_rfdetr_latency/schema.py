"""The baseline file's schema, as pydantic models: checked when a file is read and before one is written.

``python -m pytest_rfdetr_latency.schema`` prints it as JSON Schema; the same text ships as
``baseline.schema.json`` beside this module, for other tools that read the files.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Milliseconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
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


class ScopeBaseline(_Model):
    """A scope's baseline: every recorded process, and their median, which a check is compared with."""

    statistic: str
    value_ms: Positive = Field(description="the median of the processes' value_ms")
    block_size: Annotated[int, Field(ge=1)] = Field(description="calls per block; a check samples the same way")
    spread: Milliseconds | None = Field(description="standard deviation of ln(value_ms) over the processes")
    processes: Annotated[list[ProcessFigures], Field(min_length=1)]


class Memory(_Model):
    kind: str = Field(description="torch-allocator or nvml-device-used")
    peak_mib: Milliseconds = Field(description="the median of the processes' peaks")
    processes: Annotated[list[Milliseconds], Field(min_length=1)]


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


class BaselineFile(_Model):
    """latency_baselines/<device>.json"""

    schema_version: Literal[2]
    device: Annotated[str, Field(min_length=1)]
    entries: dict[str, Entry]


def json_schema() -> str:
    return json.dumps(BaselineFile.model_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(json_schema(), end="")
