"""How long a process holds the ring beyond its timed calls, per scope, from head-to-head reports
(benchmarks/pr_gate.py run):

    python benchmarks/ring_hold.py benchmarks/results/pr-gate-h200 --tags aa-t16-1,aa-t16-2 [--out FILE]

For each case the report details the judged side's first process scope by scope: its warm-up's seconds, its sampling's
seconds (``sample_seconds``: from the start of sampling to its last block, turns waited for left out) and the calls
it kept (``samples_ms``). Sampling beyond the calls is what the process did in its turns besides timing: reading the
GPU's state, the host yardstick, whatever ran at the start of sampling, and the calls of any block dropped as
throttled, which ``samples_ms`` leaves out (a row whose ``kept_calls`` fall short of its blocks times their size had
such a block). Taking turns, every second of it is a second the other processes wait, so the ring of a case lasts
about the processes' warm-ups, calls and holds together.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
from pathlib import Path
from typing import Any


def holds(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per case and scope: the first process's warm-up, sampling, calls and the hold beyond them (seconds),
    its blocks, and the seconds it waited for its turns."""
    rows = []
    for case in report.get("cases", []):
        scopes = case.get("details", {}).get("scopes", {})
        for scope, meta in scopes.items():
            calls = case.get("samples_ms", {}).get(scope)
            if not calls or meta.get("sample_seconds") is None:
                continue
            called = sum(calls) / 1000.0
            rows.append({"case": case["id"], "scope": scope, "blocks": meta.get("blocks"),
                         "block_size": meta.get("block_size"), "kept_calls": len(calls),
                         "warmup_seconds": meta.get("warmup_seconds"), "sample_seconds": meta["sample_seconds"],
                         "calls_seconds": round(called, 4), "hold_seconds": round(meta["sample_seconds"] - called, 4),
                         "waited_seconds": meta.get("waited_seconds")})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--tags", required=True, help="comma-separated run tags (TAG.json or TAG.json.gz)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    summary: dict[str, Any] = {}
    for tag in args.tags.split(","):
        path = args.folder / f"{tag}.json.gz"
        with gzip.open(path) if path.exists() else (args.folder / f"{tag}.json").open("rb") as stream:
            report = json.load(stream)
        rows = holds(report)
        per_scope = {scope: round(statistics.median(r["hold_seconds"] for r in rows if r["scope"] == scope), 4)
                     for scope in sorted({r["scope"] for r in rows})}
        summary[tag] = {"median_hold_seconds": per_scope, "rows": rows}
        print(f"{tag}: median hold beyond the calls, a scope and case: "
              + ", ".join(f"{scope} {value:.3f} s" for scope, value in per_scope.items()))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
