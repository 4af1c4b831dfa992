"""Does the host yardstick explain a launch-bound figure block by block better than process by process? Offline, over
a stored-flow folder (benchmarks/gate_matrix.py ``run``, one stream: its baseline file and the checks' JSON reports).

Each timed block of a process carries the host yardstick timed right after it (``host_blocks_ms``). Per case and
timing scope, three ways of putting every process on one host speed, compared by what they leave:
- ``raw``: the figures as measured;
- ``process``: the shipped rule, each process's figure × its median yardstick ** -slope, the slope fitted over the
  baseline file's processes of that backend and scope (judge.host_slope; none where it does not apply);
- ``block``: each block × its own yardstick ** -slope, the slope fitted within processes over the baseline file's
  blocks of that backend and scope; the process's figure scaled by how much that moved its statistic.
For each: the baseline processes' spread (standard deviation of log figures, %) and the checks' first processes'
root-mean-square offset from the baseline's mean (%, what a threshold must cover), and the median of each over the
launch-bound scopes (forward, e2e, iobinding) of the GPU backends.

    cd benchmarks && python block_host.py results/stored-gate-h200-6 --out results/block-host-nvidia-h200.json
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from head_to_head import emit, folder_arguments, read_json  # benchmarks/ is this script's folder
from pytest_rfdetr_latency.verdict import judge
from pytest_rfdetr_latency.verdict.stats import statistic_of

WAYS = ("raw", "process", "block")
LAUNCH_BOUND = ("forward", "e2e", "iobinding")


def block_slope(entries: list[dict[str, Any]], scope: str, backend: str) -> tuple[float | None, float | None]:
    """The slope of log block time on log yardstick within processes, pooled over the baseline file's processes of
    ``backend`` and ``scope`` (each about its own means), in [0, 1], and its correlation."""
    sxx = syy = sxy = 0.0
    for entry in entries:
        stored = entry["scopes"].get(scope) if entry["backend"] == backend else None
        for process in (stored or {}).get("processes", []):
            hosts, blocks = process.get("host_blocks_ms") or [], process.get("blocks_ms") or []
            if len(hosts) < 3 or len(hosts) != len(blocks):
                continue
            x, y = np.log(hosts), np.log(blocks)
            x, y = x - x.mean(), y - y.mean()
            sxx, syy, sxy = sxx + float(x @ x), syy + float(y @ y), sxy + float(x @ y)
    if sxx <= 0 or syy <= 0:
        return None, None
    return min(1.0, max(0.0, sxy / sxx)), sxy / math.sqrt(sxx * syy)


def figure(process: dict[str, Any], way: str, process_slope: float | None, slope: float | None) -> float | None:
    value = float(process["value_ms"])
    if way == "raw":
        return value
    if way == "process":
        host = process.get("host_ms")
        return value * float(host) ** -process_slope if process_slope and host else value
    hosts, blocks = process.get("host_blocks_ms") or [], process.get("blocks_ms") or []
    if not slope:
        return value
    if len(hosts) != len(blocks) or not hosts:
        return None
    statistic = str(process.get("statistic", "median"))
    moved = (statistic_of(list(np.array(blocks) * np.array(hosts) ** -slope), statistic)
             / statistic_of(blocks, statistic))
    return value * moved


def compare(folder: Path) -> dict[str, Any]:
    files = sorted({p.name.removesuffix(".gz") for p in (folder / "baselines").glob("*.json*")})
    if len(files) != 1:
        raise SystemExit(f"{folder / 'baselines'}: expected one baseline file, found {files}")
    entries = read_json(folder / "baselines" / files[0])["entries"]
    checks: dict[tuple[str, str], list[dict[str, Any]]] = {}
    names = sorted({p.name.removesuffix(".gz") for p in (folder / "reports").glob("c*-check-*.json*")})
    for name in names:  # a report kept both as written and gzipped counts once
        data = read_json(folder / "reports" / name)
        for case in data.get("cases", []):
            for scope, record in case.get("scopes", {}).items():
                checks.setdefault((case["id"], scope), []).append(record)
    rows = []
    for (case_id, scope), checked in sorted(checks.items()):
        entry = entries.get(case_id)
        if not entry or scope not in entry["scopes"]:
            continue
        backend, recorded = entry["backend"], entry["scopes"][scope]["processes"]
        process_slope = judge.host_slope(entries.values(), scope, backend)
        slope, correlation = block_slope(list(entries.values()), scope, backend)
        row: dict[str, Any] = {"case": case_id, "scope": scope, "checks": len(checked),
                               "process_slope": process_slope and round(process_slope, 3),
                               "block_slope": slope and round(slope, 3),
                               "block_correlation": correlation and round(correlation, 3)}
        for way in WAYS:
            base = [figure(p, way, process_slope, slope) for p in recorded]
            now = [figure(p, way, process_slope, slope) for p in checked]
            if any(v is None for v in base + now):
                continue
            logs = [math.log(v) for v in base if v]
            centre = statistics.mean(logs)
            offsets = [100 * (math.log(v) - centre) for v in now if v]
            row[way] = {"baseline_spread_pct": round(100 * statistics.stdev(logs), 2),
                        "check_rms_offset_pct": round(math.sqrt(statistics.mean(o * o for o in offsets)), 2)}
        rows.append(row)
    gpu_launch = [r for r in rows if r["scope"] in LAUNCH_BOUND and not r["case"].endswith("onnx-cpu")]
    medians = {way: {key: round(statistics.median(r[way][key] for r in gpu_launch if way in r), 2)
                     for key in ("baseline_spread_pct", "check_rms_offset_pct")} for way in WAYS}
    return {"folder": str(folder), "gpu_launch_bound_comparisons": len(gpu_launch), "medians": medians, "rows": rows}


def main() -> None:
    args = folder_arguments(__doc__)
    emit({"machine": args.machine, **compare(args.folder)}, args.out)


if __name__ == "__main__":
    main()
