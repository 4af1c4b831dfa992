"""A newcomer's stored-baseline flow on one GPU, summarized as the stored verdict's issue asks: the default matrix
recorded once, then clean checks of the same code spread over the session (benchmarks/gate_matrix.py ``run``, one
stream; its runs.jsonl gives when each process started and how long it took).

    python benchmarks/stored_gate.py RUNS_DIR --out benchmarks/results/stored-gate-nvidia-h200.json

Counted over the clean checks (no injection), as the runs printed their verdicts (nothing re-decided; from the JSON
report, or from the log's table where the report did not come back): the checks and
those that failed, how far apart the recording and the checks were, per scope the comparisons, false alarms, the
widest threshold of a comparison that gated (``max_threshold_pct``; an unresolved one does not gate) and the median
over comparisons of the threshold each stated (``mdr_pct``: the smallest regression it could have caught), every
unresolved comparison with its case and the figure it could resolve, and each check's seconds. Apart, the checks
run with an injection (``memory_ab`` for ``--rfdetr-inject-on=memory``; ``injected_ab`` otherwise): per case and scope,
what was injected, the change measured, the threshold, and whether the verdict caught it. Where the folder holds
its baseline file (``baseline-*.json``), every memory comparison is also judged again offline by the shipped rule
(``memory_redecided``), and every timing comparison of the clean checks (``timing_redecided``: per scope the
comparisons, those that gated, the unresolved, the false alarms and the widest gating threshold), apart from what the
runs printed: the numbers the rule of this checkout would have printed over the processes each check measured.
"""

from __future__ import annotations

import datetime
import gzip
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from head_to_head import emit, folder_arguments, read_json  # benchmarks/ is this script's folder

ROW = re.compile(r"^(RFDETR\S+)\s+(device|forward|e2e|iobinding|memory)\s+\S+\s+[\d.]+ (?:ms|MiB)\s+"
                 r"[\d.]+ (?:ms|MiB)\s+([+-][\d.]+)%\s+([\d.e+]+)%\s+\S+\s+(\S+)", re.M)
NOT_GATING = re.compile(r"^not gating on this runner: (\S+) (\S+), could detect ([\d.e+]+)%", re.M)
KINDS = {"pass": "pass", "REGRESSION": "regression", "inconclusive": "inconclusive", "improvement": "improvement"}


def _from_log(text: str) -> list[dict[str, Any]]:
    """A check's cases as its log's table printed them, where its JSON report did not come back: each scope's kind,
    change and threshold, unresolved where a not-gating line names it."""
    unresolved = {(case, scope) for case, scope, _ in NOT_GATING.findall(text)}
    cases: dict[str, dict[str, Any]] = {}
    for case, scope, delta, threshold, word in ROW.findall(text):
        verdict = {"kind": KINDS[word], "delta": float(delta) / 100, "threshold": float(threshold) / 100,
                   "detail": {"unresolved": (case, scope) in unresolved}, "from_log": True}
        cases.setdefault(case, {"id": case, "verdicts": {}})["verdicts"][scope] = verdict
    return list(cases.values())


def _at(record: dict[str, Any]) -> datetime.datetime:
    return datetime.datetime.strptime(record["at"], "%Y-%m-%dT%H:%M:%SZ")


def _ended(record: dict[str, Any]) -> datetime.datetime:
    return _at(record) + datetime.timedelta(seconds=float(record["wall_seconds"]))


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 2)


def _tally(row: dict[str, Any], alarms: list[dict[str, Any]], unresolved: list[dict[str, Any]] | None, report: str,
           case_id: str, scope: str, verdict: dict[str, Any]) -> None:
    """One clean comparison counted into its scope's ``row``: unresolved (listed where ``unresolved`` is given), or
    gated, its threshold the widest so far unless it was an improvement (beyond even a wide threshold, one fails
    nothing), a regression listed in ``alarms``."""
    threshold = float(verdict.get("threshold") or 0.0)
    row["comparisons"] += 1
    if verdict.get("kind") == "inconclusive" and (verdict.get("detail") or {}).get("unresolved"):
        row["unresolved"] += 1
        if unresolved is not None:
            unresolved.append({"check": report, "case": case_id, "scope": scope, "could_resolve_pct": _pct(threshold)})
        return
    row["gated"] += 1
    if verdict.get("kind") != "improvement":
        row["gated_max"] = max(row["gated_max"], threshold)
    if verdict.get("kind") == "regression":
        row["false_alarms"] += 1
        alarms.append({"check": report, "case": case_id, "scope": scope, "delta_pct": _pct(verdict.get("delta")),
                       "threshold_pct": _pct(threshold)})


def summarize(folder: Path) -> dict[str, Any]:
    records = [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines() if line.strip()]
    saves = [r for r in records if r["phase"] == "save"]
    checks = [r for r in records if r["phase"] == "check" and not r.get("inject_pct")]
    per_scope: dict[str, dict[str, Any]] = defaultdict(lambda: {"comparisons": 0, "false_alarms": 0, "gated": 0,
                                                                 "unresolved": 0, "thresholds": [], "gated_max": 0.0})
    unresolved: list[dict[str, Any]] = []
    alarms: list[dict[str, Any]] = []
    cases_per_check = []
    for record in checks:
        data = read_json(folder / record["report"])
        if data is None:
            log = folder / record["log"]
            text = gzip.decompress(log.with_name(log.name + ".gz").read_bytes()).decode() if not log.exists() \
                else log.read_text()
            data = {"cases": _from_log(text)}
        cases_per_check.append(len(data.get("cases", [])))
        for case in data.get("cases", []):
            for scope, verdict in (case.get("verdicts") or {}).items():
                per_scope[scope]["thresholds"].append(float(verdict.get("threshold") or 0.0))
                _tally(per_scope[scope], alarms, unresolved, record["report"], case["id"], scope, verdict)
    recorded = min((_at(r) for r in saves), default=None)
    first_check = min((_at(r) for r in checks), default=None)
    last_check = max((_ended(r) for r in checks), default=None)
    seconds = [float(r["wall_seconds"]) for r in checks]
    return {
        "aa_runs": len(checks),
        "aa_failed_runs": sum(1 for r in checks if r["exit_code"] != 0),
        "aa_failed": [{"report": r["report"], "exit_code": r["exit_code"]} for r in checks if r["exit_code"] != 0],
        "cases_per_check": cases_per_check,
        "aa_span_minutes": None if first_check is None or last_check is None
        else round((last_check - first_check).total_seconds() / 60, 1),
        "record_to_last_check_minutes": None if recorded is None or last_check is None
        else round((last_check - recorded).total_seconds() / 60, 1),
        "comparisons": sum(row["comparisons"] for row in per_scope.values()),
        "false_alarms": len(alarms),
        "false_alarm_details": alarms,
        "scopes": {scope: {"comparisons": row["comparisons"], "gated": row["gated"], "unresolved": row["unresolved"],
                           "false_alarms": row["false_alarms"],
                           "max_threshold_pct": _pct(row["gated_max"]) if row["gated"] else None,
                           "mdr_pct": _pct(statistics.median(row["thresholds"])) if row["thresholds"] else None}
                   for scope, row in sorted(per_scope.items())},
        "unresolved": unresolved,
        "check_seconds": seconds,
        "check_seconds_median": round(statistics.median(seconds), 1) if seconds else None,
        "save_seconds": [float(r["wall_seconds"]) for r in saves],
        "runs": [{k: r[k] for k in ("tag", "phase", "at", "wall_seconds", "exit_code", "report")} for r in records],
    }


def injected(folder: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The checks run with an injection, as they printed their verdicts (from the JSON report; a check whose report
    did not come back is listed under ``missing``): ``memory_ab`` for ``--rfdetr-inject-on=memory`` (its memory
    verdicts), ``injected_ab`` for a slowdown (its timing verdicts); each with ``detected`` / ``comparisons``."""
    found: dict[str, dict[str, Any]] = {}
    for record in records:
        if record["phase"] != "check" or not record.get("inject_pct"):
            continue
        on_memory = "--rfdetr-inject-on=memory" in record.get("command", [])
        row = found.setdefault("memory_ab" if on_memory else "injected_ab",
                               {"comparisons": 0, "detected": 0, "cases": [], "missing": []})
        data = read_json(folder / record["report"])
        if data is None:
            row["missing"].append(record["report"])
            continue
        for case in data.get("cases", []):
            for scope, verdict in (case.get("verdicts") or {}).items():
                if on_memory != (scope == "memory"):
                    continue
                caught = verdict.get("kind") == "regression"
                row["comparisons"] += 1
                row["detected"] += caught
                row["cases"].append({
                    "check": record["report"], "inject_pct": record["inject_pct"], "case": case["id"],
                    "scope": scope, "injected": (case.get("details") or {}).get("injected_memory"),
                    "delta_pct": _pct(verdict.get("delta")), "threshold_pct": _pct(verdict.get("threshold")),
                    "verdict": verdict.get("kind"), "unresolved": bool((verdict.get("detail") or {}).get("unresolved")),
                    "detected": caught})
    return found


def _baseline_entries(folder: Path) -> dict[str, Any] | None:
    """The entries of the one baseline file the folder's checks ran against (``baseline-*.json``, or gate_matrix.py's
    ``baselines/stream0-*.json``); None where the folder holds none."""
    files = sorted(folder.glob("baseline-*.json")) or sorted(folder.glob("baselines/stream0-*.json"))
    if not files:
        return None
    if len(files) > 1:
        raise SystemExit(f"{folder} holds {len(files)} baseline files; a re-decision needs the one the checks ran "
                         "against")
    return dict(json.loads(files[0].read_text())["entries"])


def timing_redecided(folder: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Every timing comparison of the clean checks judged again, offline, by the shipped rule (gate_matrix.rejudged:
    the runner's own stored.scope_verdict, then gating.capped) against the folder's baseline file."""
    from gate_matrix import rejudged  # benchmarks/ is this script's folder

    entries = _baseline_entries(folder)
    if entries is None:
        return {}
    per_scope: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"comparisons": 0, "gated": 0, "unresolved": 0, "false_alarms": 0, "gated_max": 0.0})
    alarms = []
    for record in records:
        data = read_json(folder / record["report"]) if record["phase"] == "check" else None
        if data is None or record.get("inject_pct"):
            continue
        for case in data.get("cases", []):
            for scope, verdict in (case.get("verdicts") or {}).items():
                if scope == "memory" or case["id"] not in entries:
                    continue
                _tally(per_scope[scope], alarms, None, record["report"], case["id"], scope,
                       rejudged(entries, case, scope, verdict))
    return {"timing_redecided": {
        "false_alarms": alarms,
        "scopes": {scope: {**{k: v for k, v in row.items() if k != "gated_max"},
                           "max_threshold_pct": _pct(row["gated_max"]) if row["gated"] else None}
                   for scope, row in sorted(per_scope.items())}}}


def memory_redecided(folder: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Every memory comparison of the checks judged again, offline, by the shipped rule (gating.memory_verdict at the
    default tolerance) against the folder's baseline file (``baseline-*.json``): the clean checks' false alarms and
    the memory self-test's detections as the rule of this commit would have printed them."""
    from pytest_rfdetr_latency.measure.settings import Settings
    from pytest_rfdetr_latency.verdict import gating

    entries = _baseline_entries(folder)
    if entries is None:
        return {}
    rows, counts = [], {"clean": 0, "false_alarms": 0, "injected": 0, "detected": 0}
    for record in records:
        data = read_json(folder / record["report"]) if record["phase"] == "check" else None
        on_memory = "--rfdetr-inject-on=memory" in record.get("command", [])
        if data is None or (record.get("inject_pct") and not on_memory):
            continue
        for case in data.get("cases", []):
            stored = (entries.get(case["id"]) or {}).get("memory")
            if not stored or not case.get("memory"):
                continue
            verdict = gating.memory_verdict(stored, case["memory"], case.get("processes") or [],
                                            Settings().memory_tolerance, False)
            if verdict is None:
                continue
            key = ("injected", "detected") if on_memory else ("clean", "false_alarms")
            counts[key[0]] += 1
            counts[key[1]] += verdict.kind == "regression"
            rows.append({"check": record["report"], "case": case["id"], "kind": case["memory"].get("kind"),
                         "as_run": ((case.get("verdicts") or {}).get("memory") or {}).get("kind"),
                         "redecided": verdict.kind, "delta_pct": _pct(verdict.delta),
                         "threshold_pct": _pct(verdict.threshold), "injected": on_memory})
    return {"memory_redecided": {"tolerance_pct": _pct(Settings().memory_tolerance), **counts, "comparisons": rows}}


def main() -> None:
    args = folder_arguments(__doc__)
    records = [json.loads(line) for line in (args.folder / "runs.jsonl").read_text().splitlines() if line.strip()]
    emit({"machine": args.machine, "folder": str(args.folder), **summarize(args.folder),
          **injected(args.folder, records), **memory_redecided(args.folder, records),
          **timing_redecided(args.folder, records)}, args.out)


if __name__ == "__main__":
    main()
