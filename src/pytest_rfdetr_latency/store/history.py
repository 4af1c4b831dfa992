"""The run history: every check and recording appended, one line per case and scope, to one file per device.

``--rfdetr-history DIR`` appends to ``DIR/<device>.jsonl``. Lines are only ever added: a run's lines are written in
one ``write`` under a file lock, so that xdist (only the controller writes) and concurrent jobs that share the
folder never interleave or rewrite them. ``rfdetr-latency history DIR`` (trends/cli.py) reads the files back, in
the order the runs ended, one series per device, case, scope and workload.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytest_rfdetr_latency.verdict import sessions
from pytest_rfdetr_latency.verdict.judge import median

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
            # A self-test's deliberate slowdown (--rfdetr-inject-slowdown): shown as such wherever the run appears.
            "injected_pct": (result.get("details") or {}).get("injected_slowdown_pct"),
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
        stored = (result.get("baseline") or {}).get("scopes") or {}
        for scope, verdict in (result.get("verdicts") or {}).items():
            if not verdict.get("processes"):
                continue  # not measured in this run (runner._unmeasured): no figure, not the baseline's
            # The figures as measured, like a recording's: a verdict's own may be host-normalized to its baseline.
            raw = [float(p["scopes"][scope]["value_ms"]) for p in [result, *(result.get("processes") or ())]
                   if scope in (p.get("scopes") or {})]
            if raw and scope in stored:
                value, processes, baseline = median(raw), raw, float(stored[scope]["value_ms"])
            else:  # memory: judged as measured
                value, baseline = float(verdict["current"]), float(verdict["baseline"])
                processes = [float(v) for v in verdict.get("processes") or ()]
            change, variance = sessions.standardized(verdict) or (None, None)
            lines.append({**common, "scope": scope, "statistic": verdict["statistic"],
                          "unit": verdict.get("unit", "ms"), "value": value, "processes": processes,
                          "verdict": verdict["kind"], "baseline": baseline, "threshold": float(verdict["threshold"]),
                          "change": None if change is None else round(change, 6),
                          "process_variance": None if variance is None else float(f"{variance:.6g}")})
    return [line for line in lines if line["value"] > 0]  # an NVML peak of 0 MiB is no figure


def file_for(folder: Path, device_slug: str) -> Path:
    return folder / f"{device_slug}{SUFFIX}"


def append(folder: Path, device_slug: str, lines: Iterable[Mapping[str, Any]]) -> Path:
    """Add ``lines`` to the device's history file in one write, under its lock; earlier lines stay as they are."""
    from filelock import FileLock
    from pydantic import ValidationError

    from pytest_rfdetr_latency.store.schema import HistoryLine

    lines = list(lines)
    for line in lines:
        try:
            HistoryLine.model_validate(line)
        except ValidationError as exc:  # a bug of this plugin: never write what the reader would refuse
            raise HistoryError(f"a history line of {line.get('case')} {line.get('scope')} does not fit "
                               f"history.schema.json, nothing was appended: {exc.errors()[0]['msg']}") from None
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
    kind: str  # check, record, or accept (rfdetr-latency accept: a shift accepted by hand, no figure of a run)
    commit: str | None
    value: float
    processes: tuple[float, ...]
    verdict: str
    baseline: float | None
    threshold: float | None
    fingerprint: Mapping[str, Any]
    injected_pct: float | None = None
    seq: int = 0  # the line's place in its device's file: the order the runs were appended in
    note: str | None = None  # an accept line's reason
    accepts: str | None = None  # an accept line's slowdown: the run it began at (it and every shift before it)


@dataclass(frozen=True)
class Series:
    device: str
    case: str
    scope: str
    statistic: str
    unit: str
    workload: str  # a short digest: runs of another workload measured other work and form a series of their own
    points: tuple[Point, ...]
    accepts: tuple[Point, ...] = ()  # accept lines: shifts before them were accepted by hand
    file: str = ""  # the history file's name stem (the device's slug) the series was read from
    newest_line: Mapping[str, Any] = field(default_factory=dict)  # the newest run's line, as read

    @property
    def name(self) -> str:
        return f"{self.case} {self.scope} ({self.statistic})"


def read(path: Path, skipped: list[str] | None = None) -> list[dict[str, Any]]:
    """Every line of a history file that fits schema.HistoryLine. A line that does not (one cut short when a writer
    died, say) is left out and named in ``skipped``, so that it cannot block every later reading; a line of a newer
    history version is an error, since this plugin cannot read what it means."""
    from pydantic import ValidationError

    from pytest_rfdetr_latency.store.schema import HistoryLine

    lines: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError as exc:
                _skip(skipped, path, number, f"not JSON ({exc.msg})")
                continue
            if isinstance(line, dict) and line.get("v") not in (None, VERSION):
                raise HistoryError(f"{path}, line {number}: history version {line['v']!r}, and this plugin reads "
                                   f"{VERSION}: upgrade pytest-rfdetr-latency (nothing was written)")
            try:
                HistoryLine.model_validate(line)
            except ValidationError as exc:
                first = exc.errors()[0]
                _skip(skipped, path, number, f"{'.'.join(str(p) for p in first['loc']) or 'the line'}: {first['msg']}")
                continue
            lines.append(line)
    return lines


def learn_sessions(folder: Path, device: str, entries: Mapping[str, Any]) -> list[str]:
    """At recording, from ``device``'s history in ``folder``: the spread between sessions its clean checks show per
    backend and scope (sessions.learned), stored in each recorded entry's scope (``session_spread``) where it rests
    on enough evidence (sessions.enough), so that checks against these entries use it; what was learned
    and what was too thin to learn from, as summary lines."""
    from pytest_rfdetr_latency.store.baselines import slugify

    path = file_for(folder, slugify(device))
    skipped: list[str] = []
    found = sessions.learned(line for line in read(path, skipped) if line["device"] == device) if path.exists() else {}
    used: dict[tuple[str, str], str] = {}
    thin: dict[tuple[str, str], str] = {}
    for entry in entries.values():
        for scope, stored in entry.get("scopes", {}).items():
            key = (str(entry.get("backend")), scope)
            spread = found.get(key)
            if spread is None:
                continue
            said = f"{spread['comparisons']} comparisons, {spread['checks']} checks, {spread['recordings']} recordings"
            if sessions.enough(spread):
                stored["session_spread"] = dict(spread)
                used[key] = f"{100 * spread['value']:.3g}% ({said})"
            else:
                thin[key] = said
    lines = [f"history: {line}" for line in skipped]
    if used:
        lines.append("history: the spread between sessions learned from this runner's checks, which its checks will "
                     "use: " + ", ".join(f"{b} {s} {said}" for (b, s), said in sorted(used.items())))
    if thin:
        lines.append(f"history: too little to learn the spread between sessions from (it takes "
                     f"{sessions.MIN_COMPARISONS} comparisons, {sessions.MIN_CHECKS} checks and "
                     f"{sessions.MIN_RECORDINGS} recordings), the built-in one stays: "
                     + ", ".join(f"{b} {s} ({n})" for (b, s), n in sorted(thin.items())))
    return lines


def _skip(skipped: list[str] | None, path: Path, number: int, why: str) -> None:
    if skipped is not None:
        skipped.append(f"{path}, line {number}: {why}; left out (remove or repair the line to silence this)")


def series(folder: Path, skipped: list[str] | None = None) -> list[Series]:
    """Every series of the history files in ``folder``, in the order their runs were appended (lines that cannot be
    read are named in ``skipped``)."""
    if not folder.is_dir():
        raise HistoryError(f"{folder} is not a folder: give the folder that --rfdetr-history wrote to")
    files = sorted(folder.glob(f"*{SUFFIX}"))
    if not files:
        raise HistoryError(f"{folder} holds no history file (*{SUFFIX}): run pytest --rfdetr-latency "
                           f"--rfdetr-history={folder} first")
    grouped: dict[tuple[str, str, str, str, str, str], list[Point]] = {}
    accepted: dict[tuple[str, str, str, str, str, str], list[Point]] = {}
    newest: dict[tuple[str, str, str, str, str, str], tuple[str, dict[str, Any]]] = {}
    for path in files:
        for seq, line in enumerate(read(path, skipped)):
            workload = workload_digest(line.get("workload") or {})
            key = (line["device"], line["case"], line["scope"], line["statistic"], line.get("unit", "ms"), workload)
            if line["kind"] != "accept":
                newest[key] = (path.stem, line)
            (accepted if line["kind"] == "accept" else grouped).setdefault(key, []).append(Point(
                run=line["run"], time=line["time"], kind=line["kind"], commit=line.get("commit"),
                value=float(line["value"]), processes=tuple(float(v) for v in line.get("processes") or ()),
                verdict=line["verdict"], baseline=line.get("baseline"), threshold=line.get("threshold"),
                fingerprint=line.get("fingerprint") or {}, injected_pct=line.get("injected_pct"), seq=seq,
                note=line.get("reason"), accepts=line.get("accepts_run"),
            ))
    return [Series(*key, points=tuple(points), accepts=tuple(accepted.get(key, ())), file=newest[key][0],
                   newest_line=newest[key][1]) for key, points in sorted(grouped.items())]


def accept_lines(
    found: Sequence[tuple[Series, str]], reason: str, commit: str | None = None, now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The lines that accept, by hand (``rfdetr-latency accept``), the slowdown of each series in ``found`` that began
    at the run named beside it, and every shift before it: one line per series, its figure the series' newest,
    ``reason`` kept beside it."""
    stamp = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    run = "accept-" + uuid.uuid4().hex[:12]
    return [{**s.newest_line, "run": run, "time": stamp, "kind": "accept", "commit": commit, "outcome": "accepted",
             "processes": [], "verdict": "accepted", "baseline": None, "threshold": None, "fingerprint": {},
             "injected_pct": None, "reason": reason, "accepts_run": began} for s, began in found]


def workload_digest(workload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(workload, sort_keys=True).encode()).hexdigest()[:8]
