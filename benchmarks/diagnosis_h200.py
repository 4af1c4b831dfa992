"""What --rfdetr-profile said on the H200 (docs/verdict.md, "Why it got slower"): each judged scope of the given
JSON reports, as run (verdict, diagnosis) and diagnosed again offline by the shipped rule (verdict/diagnosis.py) from
the two profiles the report holds (the baseline entry's and the check's).

    python benchmarks/diagnosis_h200.py REPORT.json[.gz] ... --out benchmarks/results/diagnosis-nvidia-h200.json
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pytest_rfdetr_latency.verdict import diagnosis

SHOWN = 3


def _load(path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    return json.loads(gzip.decompress(raw) if path.suffix == ".gz" else raw)  # type: ignore[no-any-return]


def _top(found: dict[str, Any] | None) -> list[str]:
    if not found:
        return []
    return [f"{r['name'][:80]} ({r['kind']}, {r['status']}) {r['before_ms']:.4g} -> {r['after_ms']:.4g} ms"
            for r in found["rows"] if r["delta_ms"] > 0][:SHOWN]


def scope_entry(case: dict[str, Any], scope: str, verdict: dict[str, Any]) -> dict[str, Any]:
    then = (case.get("baseline") or {}).get("profile") or {}
    now = (case.get("details") or {}).get("profile") or {}
    as_run = (case.get("diagnosis") or {}).get(scope)
    again = None
    if scope in then and scope in now:
        judged = SimpleNamespace(current=verdict["current"], baseline=verdict["baseline"])
        again = diagnosis.for_result({scope: judged}, now, then).get(scope)
    return {
        "verdict": verdict["kind"], "delta_pct": round(verdict["delta"] * 100, 2),
        "threshold_pct": round(verdict["threshold"] * 100, 3),
        "as_run": {"top": _top(as_run), "explained": (as_run or {}).get("explained"),
                   "explained_by": (as_run or {}).get("explained_by")},
        "shipped_rule": {"top": _top(again), "explained": (again or {}).get("explained"),
                         "explained_by": (again or {}).get("explained_by"),
                         "gpu_ms": (again or {}).get("gpu_ms")},
        "trace": (now.get(scope) or {}).get("trace"),
    }


def summarize(paths: list[Path]) -> dict[str, Any]:
    runs = {}
    for path in paths:
        report = _load(path)
        cases = {}
        for case in report["cases"]:
            cases[case["id"]] = {
                "outcome": case["outcome"],
                "memory": case.get("memory"),
                "scopes": {scope: scope_entry(case, scope, verdict)
                           for scope, verdict in (case.get("verdicts") or {}).items() if scope != "memory"},
                "memory_verdict": {k: (case.get("verdicts") or {}).get("memory", {}).get(k)
                                   for k in ("kind", "delta", "threshold")},
            }
        runs[path.name.split(".")[0]] = {"created_at": report.get("created_at"), "cases": cases}
    return {"machine": "nvidia-h200 (one H200, 16 vCPUs)", "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    found = summarize(args.reports)
    args.out.write_text(json.dumps(found, indent=1) + "\n")
    for name, run in found["runs"].items():
        for case_id, case in run["cases"].items():
            for scope, entry in case["scopes"].items():
                print(f"{name} {case_id} {scope}: {entry['verdict']} {entry['delta_pct']:+.2f}% "
                      f"(threshold {entry['threshold_pct']:.3g}%) shipped rule: {entry['shipped_rule']['top'][:1]} "
                      f"explained {entry['shipped_rule']['explained']} by {entry['shipped_rule']['explained_by']}")


if __name__ == "__main__":
    main()
