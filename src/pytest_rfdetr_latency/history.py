"""The run history: every check and recording appended, one line per case and scope, to one file per device.

``--rfdetr-history DIR`` appends to ``DIR/<device>.jsonl``. Lines are only ever added: a run's lines are written in
one ``write`` under a file lock, so that xdist (only the controller writes) and concurrent jobs that share the
folder never interleave or rewrite them. ``rfdetr-latency history DIR`` (cli.py) reads the files back, in the order
the runs ended, one series per device, case, scope and workload.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SUFFIX = ".jsonl"
VERSION = 1


class HistoryError(ValueError):
    """A history file that cannot be read; the message names the file, the line and what to do."""


def rows(results: Sequence[Mapping[str, Any]], kind: str, now: datetime | None = None) -> list[dict[str, Any]]:
    """The history lines of one run: per case, each judged scope (a check) or recorded scope (a recording), with
    the figure that was judged or recorded, every process's figure, and the baseline and threshold it met."""
    stamp = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    run = uuid.uuid4().hex[:12]
    lines: list[dict[str, Any]] = []
    for result in results:
        common = {
            "v": VERSION, "run": run, "time": stamp, "kind": kind, "commit": result.get("git_commit"),
            "device": result["device"], "case": result["id"], "model": result["model"],
            "backend": result["backend"], "batch": result["batch"], "resolution": result["resolution"],
            "outcome": result["outcome"], "workload": result.get("workload") or {},
            "fingerprint": result.get("fingerprint") or {},
        }
        if kind == "record":
            entry = result.get("baseline_entry") or {}
            for scope, stored in (entry.get("scopes") or {}).items():
                lines.append({**common, "scope": scope, "statistic": stored["statistic"], "unit": "ms",
                              "value": float(stored["value_ms"]),
                              "processes": [float(p["value_ms"]) for p in stored.get("processes", [])],
                              "verdict": "saved", "baseline": None, "threshold": None})
            memory = entry.get("memory") or {}
            if memory.get("processes"):
                lines.append({**common, "scope": "memory", "statistic": "peak", "unit": "MiB",
                              "value": float(memory["peak_mib"]),
                              "processes": [float(v) for v in memory["processes"]],
                              "verdict": "saved", "baseline": None, "threshold": None})
            continue
        for scope, verdict in (result.get("verdicts") or {}).items():
            processes = [float(v) for v in verdict.get("processes") or ()]
            lines.append({**common, "scope": scope, "statistic": verdict["statistic"],
                          "unit": verdict.get("unit", "ms"), "value": float(verdict["current"]),
                          "processes": processes, "verdict": verdict["kind"],
                          "baseline": float(verdict["baseline"]), "threshold": float(verdict["threshold"])})
    return lines


def file_for(folder: Path, device_slug: str) -> Path:
    return folder / f"{device_slug}{SUFFIX}"


def append(folder: Path, device_slug: str, lines: Iterable[Mapping[str, Any]]) -> Path:
    """Add ``lines`` to the device's history file in one write, under its lock; earlier lines stay as they are."""
    from filelock import FileLock

    text = "".join(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n" for line in lines)
    path = file_for(folder, device_slug)
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / f".{path.name}.lock")):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            if os.fstat(fd).st_size and not _ends_with_newline(path):
                text = "\n" + text  # a line cut short by a crash stays one bad line, never glued to a good one
            data = text.encode()
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


@dataclass(frozen=True)
class Point:
    """One run's figure in a series."""

    run: str
    time: str
    kind: str  # check or record
    commit: str | None
    value: float
    processes: tuple[float, ...]
    verdict: str
    baseline: float | None
    threshold: float | None
    fingerprint: Mapping[str, Any]


@dataclass(frozen=True)
class Series:
    device: str
    case: str
    scope: str
    statistic: str
    unit: str
    workload: str  # a short digest: runs of another workload measured other work and form a series of their own
    points: tuple[Point, ...]

    @property
    def name(self) -> str:
        return f"{self.case} {self.scope} ({self.statistic})"


def read(path: Path) -> list[dict[str, Any]]:
    """Every line of a history file, checked against schema.HistoryLine; a line that is not one is an error that
    names it."""
    from pydantic import ValidationError

    from pytest_rfdetr_latency.schema import HistoryLine

    lines: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError as exc:
                raise HistoryError(_bad(path, number, f"not JSON ({exc.msg})")) from None
            if isinstance(line, dict) and line.get("v") not in (None, VERSION):
                raise HistoryError(_bad(path, number, f"history version {line['v']!r}, and this plugin reads "
                                                      f"{VERSION}: upgrade pytest-rfdetr-latency"))
            try:
                HistoryLine.model_validate(line)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "the line"
                raise HistoryError(_bad(path, number, f"{where}: {first['msg']}")) from None
            lines.append(line)
    return lines


def _bad(path: Path, number: int, why: str) -> str:
    return (f"{path}, line {number}: {why}. History files are only ever appended to by --rfdetr-history; "
            "remove or repair that line (nothing was written)")


def series(folder: Path) -> list[Series]:
    """Every series of the history files in ``folder``, in the order their runs were appended."""
    if not folder.is_dir():
        raise HistoryError(f"{folder} is not a folder: give the folder that --rfdetr-history wrote to")
    files = sorted(folder.glob(f"*{SUFFIX}"))
    if not files:
        raise HistoryError(f"{folder} holds no history file (*{SUFFIX}): run pytest --rfdetr-latency "
                           f"--rfdetr-history={folder} first")
    grouped: dict[tuple[str, str, str, str, str, str], list[Point]] = {}
    for path in files:
        for line in read(path):
            workload = workload_digest(line.get("workload") or {})
            key = (line["device"], line["case"], line["scope"], line["statistic"], line.get("unit", "ms"), workload)
            grouped.setdefault(key, []).append(Point(
                run=line["run"], time=line["time"], kind=line["kind"], commit=line.get("commit"),
                value=float(line["value"]), processes=tuple(float(v) for v in line.get("processes") or ()),
                verdict=line["verdict"], baseline=line.get("baseline"), threshold=line.get("threshold"),
                fingerprint=line.get("fingerprint") or {},
            ))
    return [Series(*key, points=tuple(points)) for key, points in sorted(grouped.items())]


def workload_digest(workload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(workload, sort_keys=True).encode()).hexdigest()[:8]
