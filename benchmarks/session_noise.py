"""How far a clean check's figures land from a baseline recorded minutes earlier, beyond what the baseline's own
processes disagree by: the between-session spread the stored verdict adds to its noise (scopes.SESSION_NOISE).

    python benchmarks/session_noise.py benchmarks/results/gate-matrix-h200 benchmarks/results/gate-matrix-h200-2 \
        benchmarks/results/stored-gate-h200 --exclude r2 --out benchmarks/results/session-noise-nvidia-h200.json

Every clean check of gate_matrix.py's folders (no injection), every timing scope it judged: the change the verdict
saw (``delta``: the check's processes against the baseline's, as the run printed it; from the JSON report, or from
the log's table where the report did not come back) and the spread of the baseline's own processes (the log
standard deviation of the recorded figures). Per kind of backend (a GPU backend's, or a CPU backend's) and scope:

    session^2 = mean(ln(1 + delta)^2) - mean(within^2) * (1 + 1/n)

(n the baseline's processes): what the offsets hold beyond one process against the median of n, with the offsets'
count as its degrees of freedom. Exploratory where few checks exist: the counts are in the output.

``--standardized`` (scopes.SESSION_NOISE_ON_GPU) estimates it in the verdict's own terms instead, for GPU backends
whose launch-bound figures the verdict host-normalizes (so a raw spread is not comparable with its change): each
comparison's change as printed, x = ln(1 + delta), against the variance its threshold assumed from the processes,
v = noise^2 * (median_variance(baseline processes) + median_variance(check processes measured)), and the session
spread s that makes the standardized offsets of unit variance, mean(x^2 / (v + s^2)) = 1 (0 where they are already
narrower), per backend and scope and pooled over backends (the shipped verdict/sessions.py's standardized and
unit_spread, which a recording also learns a runner's own spread with, by the median: ``session_pct_robust``). Every
clean check of stored_gate.py's folders.

    python benchmarks/session_noise.py --standardized benchmarks/results/stored-gate-h200-{6,8,9,10} \
        --out benchmarks/results/session-noise-gpu-nvidia-h200.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from head_to_head import emit  # benchmarks/ is this script's folder
from pytest_rfdetr_latency.measure.cases import works_on_cpu
from pytest_rfdetr_latency.verdict import sessions

TABLE = re.compile(r"^(RFDETR\S+)\s+(device|forward|e2e|iobinding)\s+\S+\s+[\d.]+ ms\s+[\d.]+ ms\s+([+-][\d.]+)%",
                   re.M)


def _read(path: Path) -> str | None:
    if path.exists():
        return path.read_text()
    packed = path.with_name(path.name + ".gz")
    return gzip.decompress(packed.read_bytes()).decode() if packed.exists() else None


def _baselines(folder: Path, stream: int) -> dict[str, Any]:
    for name in (f"baselines/stream{stream}-nvidia-h200.json", "baselines/nvidia-h200.json"):
        text = _read(folder / name)
        if text is not None:
            return dict(json.loads(text)["entries"])
    raise FileNotFoundError(f"no baseline file in {folder / 'baselines'}")


def _deltas(folder: Path, record: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(case, scope, delta) of every timing verdict of one check."""
    text = _read(folder / record["report"])
    if text is not None:
        data = json.loads(text)
        return [(case["id"], scope, float(v["delta"])) for case in data["cases"]
                for scope, v in (case.get("verdicts") or {}).items() if scope != "memory" and "delta" in v]
    log = _read(folder / record["log"]) or ""
    return [(case, scope, float(pct) / 100) for case, scope, pct in TABLE.findall(log)]


def standardized(folders: list[Path], exclude: list[str]) -> dict[str, Any]:
    rows: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    checks = 0
    for folder in folders:
        for line in (folder / "runs.jsonl").read_text().splitlines():
            record = json.loads(line)
            if record["phase"] != "check" or record.get("inject_pct") or record["tag"] in exclude:
                continue
            text = _read(folder / record["report"])
            if text is None:
                continue
            checks += 1
            for case in json.loads(text)["cases"]:
                if works_on_cpu(case["backend"], case["device_kind"] == "cuda"):
                    continue
                for scope, verdict in (case.get("verdicts") or {}).items():
                    found = sessions.standardized(verdict) if scope != "memory" else None
                    if found is not None:
                        rows[(case["backend"], scope)].append(found)

    def summary(found: list[tuple[float, float]]) -> dict[str, Any]:
        return {"comparisons": len(found),
                "offset_rms_pct": round(100 * math.sqrt(statistics.fmean(x * x for x, _ in found)), 3),
                "standardized_rms": round(math.sqrt(statistics.fmean(x * x / v for x, v in found)), 3),
                "largest_standardized": round(max((x / math.sqrt(v) for x, v in found), key=abs), 2),
                "session_pct": round(100 * sessions.unit_spread(found), 2),
                "session_pct_robust": round(100 * sessions.unit_spread(found, robust=True), 2)}

    pooled: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (_, scope), found in rows.items():
        pooled[scope] += found
    return {"folders": [str(f) for f in folders], "excluded": exclude, "checks": checks,
            "backends": {f"{backend}/{scope}": summary(found) for (backend, scope), found in sorted(rows.items())},
            "pooled": {scope: summary(found) for scope, found in sorted(pooled.items())}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--exclude", nargs="*", default=[], help="run tags to leave out")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--standardized", action="store_true", help="GPU backends, in the verdict's own terms")
    args = parser.parse_args()
    if args.standardized:
        emit(standardized(args.folders, args.exclude), args.out)
        return
    offsets: dict[str, list[float]] = defaultdict(list)
    within: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, list[int]] = defaultdict(list)
    checks = 0
    for folder in args.folders:
        for line in (folder / "runs.jsonl").read_text().splitlines():
            record = json.loads(line)
            if record["phase"] != "check" or record.get("inject_pct") or record["tag"] in args.exclude:
                continue
            entries = _baselines(folder, int(record.get("stream", 0)))
            found = _deltas(folder, record)
            checks += bool(found)
            for case, scope, delta in found:
                entry = entries.get(case)
                if entry is None or scope not in entry["scopes"]:
                    continue
                recorded = [float(p["value_ms"]) for p in entry["scopes"][scope]["processes"]]
                if len(recorded) < 2:
                    continue
                kind = f"{'cpu' if works_on_cpu(str(entry.get('backend')), True) else 'gpu'}/{scope}"
                offsets[kind].append(math.log1p(delta))
                within[kind].append(statistics.stdev(math.log(v) for v in recorded))
                counts[kind].append(len(recorded))
    rows = {}
    for kind in sorted(offsets):
        mean_square = statistics.fmean(d * d for d in offsets[kind])
        within_square = statistics.fmean(w * w for w in within[kind]) * (1 + 1 / statistics.fmean(counts[kind]))
        session = math.sqrt(max(0.0, mean_square - within_square))
        rows[kind] = {"comparisons": len(offsets[kind]), "offset_rms_pct": round(100 * math.sqrt(mean_square), 3),
                      "within_pct": round(100 * math.sqrt(statistics.fmean(w * w for w in within[kind])), 3),
                      "session_pct": round(100 * session, 3),
                      "largest_offset_pct": round(100 * math.expm1(max(offsets[kind], key=abs)), 2)}
    emit({"folders": [str(f) for f in args.folders], "excluded": args.exclude, "checks": checks, "kinds": rows},
         args.out)


if __name__ == "__main__":
    main()
