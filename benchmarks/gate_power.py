"""Gate power, measured: false alarms on clean re-runs (A/A) and detections of injected slowdowns (A/B).

Each trial is a fresh pytest process (benchmarks/gate_power_suite.py) that checks RFDETRMedium on torch-fp32 (scopes
device, forward, e2e) and on onnx-cuda (scope forward) against the baseline recorded from *another* process: the
previous clean process of its stream. The process measures the clean case first (the A/A trial; its measurement
then becomes the next process's baseline) and then the same case with one injected slowdown (an A/B trial), the
level rotating through 1, 2, 3, 5 and 10 % from process to process. Streams run one per GPU, each process bound
to its GPU (CUDA_VISIBLE_DEVICES) and to its share of the CPU cores.

    python benchmarks/gate_power.py run --processes 8 --gpus 0,1 --raw benchmarks/results/gate-power-raw-1.json
    python benchmarks/gate_power.py summarize benchmarks/results/gate-power-raw-*.json \\
        --out benchmarks/results/gate-power-nvidia-h200.json

`summarize` also re-decides, offline with the plugin's own verdict, every injected or clean measurement against
every other process's clean baseline (pairs, not independent trials) and sweeps the threshold, to show where each
scope's default threshold comes from. Every trial's record is kept in the raw files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LEVELS = (1.0, 2.0, 3.0, 5.0, 10.0)


def _cores_for(stream: int, streams: int) -> list[int]:
    cores = sorted(os.sched_getaffinity(0))
    share = max(1, len(cores) // streams)
    return cores[stream * share:(stream + 1) * share]


def _write_baseline(result_file: Path, folder: Path) -> bool:
    """Turn a trial's clean measurements into the baseline file the next trial compares against."""
    from pytest_rfdetr_latency import baselines
    from pytest_rfdetr_latency.environment import slugify

    report = json.loads(result_file.read_text())
    entries: dict[str, dict[str, Any]] = {}
    device = None
    for case in report["cases"]:
        if case.get("details", {}).get("injected_slowdown_pct"):
            continue
        if "baseline_entry" in case:
            entries[case["id"]] = case["baseline_entry"]
            device = case["device"]
    if not entries or device is None:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    baselines.save(baselines.path_for(folder, slugify(device)), device, entries)
    return True


def _trial(  # noqa: PLR0913
    stream: int, streams: int, gpu: str, index: int, level: float | None, baseline_dir: Path | None, work: Path,
    cache_dir: Path, model: str, extra: list[str],
) -> dict[str, Any]:
    report = work / f"s{stream}-p{index}.json"
    env = dict(os.environ)
    env.update({
        "CUDA_VISIBLE_DEVICES": gpu,
        "GATE_POWER_INJECT": "0" if level is None else f"0,{level:g}",
        "GATE_POWER_MODEL": model,
        "PYTHONUNBUFFERED": "1",
    })
    cores = _cores_for(stream, streams)
    env["OMP_NUM_THREADS"] = str(len(cores))
    command = [
        sys.executable, "-m", "pytest", str(HERE / "gate_power_suite.py"), "-p", "no:cacheprovider", "-q",
        "--rfdetr-latency", f"--rfdetr-cache-dir={cache_dir}",
        f"--rfdetr-report={report}", f"--rfdetr-baseline-dir={baseline_dir or work / 'none'}",
        "-W", "ignore", "--rfdetr-no-parity", "--rfdetr-images=2", *extra,
    ]
    start = time.time()
    proc = subprocess.run(
        ["taskset", "-c", ",".join(map(str, cores)), *command], env=env, capture_output=True, text=True,
        timeout=900, cwd=work,
    )
    wall = time.time() - start
    record: dict[str, Any] = {
        "stream": stream, "gpu": gpu, "process": index, "injected_pct": level, "baseline_from": None,
        "exit_code": proc.returncode, "wall_seconds": round(wall, 2), "cases": [],
    }
    if report.exists():
        data = json.loads(report.read_text())
        record["fingerprint"] = data.get("fingerprint")
        for case in data["cases"]:
            case.pop("baseline", None)
            case.pop("baseline_entry", None)
            record["cases"].append(case)
    else:
        record["output_tail"] = (proc.stdout + proc.stderr)[-3000:]
    return record


def run(args: argparse.Namespace) -> None:
    gpus = args.gpus.split(",")
    work = Path(tempfile.mkdtemp(prefix="gate-power-"))
    cache = Path(args.cache_dir)
    records: list[dict[str, Any]] = []
    lock = threading.Lock()
    deadline = time.time() + args.max_seconds

    def stream(s: int, gpu: str) -> None:
        baseline_dir: Path | None = None
        baseline_from: int | None = None
        for i in range(args.processes):
            if time.time() > deadline:
                break
            ab = baseline_dir is not None and i % args.ab_every == 0
            level = LEVELS[(i // args.ab_every + s + args.level_offset) % len(LEVELS)] if ab else None
            record = _trial(s, len(gpus), gpu, i, level, baseline_dir, work, cache, args.model, args.pytest_args)
            record["baseline_from"] = baseline_from
            record["seed"] = baseline_dir is None  # the first process only records the first baseline
            new_dir = work / f"base-s{s}-p{i}"
            report = work / f"s{s}-p{i}.json"
            if report.exists() and _write_baseline(report, new_dir):
                baseline_dir, baseline_from = new_dir, i
            with lock:
                records.append(record)
                done = sum(1 for r in records if not r["seed"])
                print(f"[stream {s} gpu {gpu}] process {i}: inject {level} exit {record['exit_code']} "
                      f"{record['wall_seconds']} s ({done} trials so far)", flush=True)
                Path(args.raw).parent.mkdir(parents=True, exist_ok=True)
                Path(args.raw).write_text(json.dumps({"label": args.label, "records": records}, indent=1) + "\n")

    threads = [threading.Thread(target=stream, args=(s, gpu)) for s, gpu in enumerate(gpus)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# ---------------------------------------------------------------------------------------------------------------
# Analysis


def _scope_key(case: dict[str, Any], scope: str) -> str:
    return f"{case['backend']}:{scope}"


def _trials(raws: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for raw in raws:
        for record in raw["records"]:
            if record.get("seed"):
                continue
            for case in record["cases"]:
                pct = case.get("details", {}).get("injected_slowdown_pct") or 0.0
                for scope, verdict in case.get("verdicts", {}).items():
                    out.append({
                        "label": raw.get("label"), "stream": record["stream"], "process": record["process"],
                        "key": _scope_key(case, scope), "injected_pct": pct, "kind": verdict["kind"],
                        "delta": verdict["delta"], "p_value": verdict["p_value"], "threshold": verdict["threshold"],
                        "rounds": case["details"].get("rounds"),
                    })
    return out


def _pairwise(raws: list[dict[str, Any]], thresholds: dict[str, float]) -> dict[str, Any]:
    """Every measurement against every *other* process's clean measurement, with the plugin's verdict."""
    sys.path.insert(0, str(HERE.parent / "src"))
    from pytest_rfdetr_latency.stats import ScopeStats, decide

    measurements = []  # (process id, key, injected pct, stats)
    for raw in raws:
        for record in raw["records"]:
            pid = (raw.get("label"), record["stream"], record["process"])
            for case in record["cases"]:
                pct = case.get("details", {}).get("injected_slowdown_pct") or 0.0
                for scope, stats in case.get("scopes", {}).items():
                    measurements.append((pid, _scope_key(case, scope), pct, ScopeStats.from_json(stats)))
    clean = [m for m in measurements if m[2] == 0.0]
    result: dict[str, Any] = {}
    for key in sorted({m[1] for m in measurements}):
        sweep: dict[str, Any] = {}
        candidates = sorted({thresholds.get(key.split(":")[1], 0.05), 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.15,
                             0.2, 0.3})
        for threshold in candidates:
            counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for pid, k, pct, current in measurements:
                if k != key:
                    continue
                for bpid, bk, _, base in clean:
                    if bk != key or bpid == pid:
                        continue
                    verdict = decide(key.split(":")[1], base, current, threshold)
                    bucket = counts[f"{pct:g}"]
                    bucket[0] += verdict.kind == "regression"
                    bucket[1] += 1
            sweep[f"{threshold:g}"] = {
                level: {"regression_rate": round(hit / total, 4), "pairs": total}
                for level, (hit, total) in sorted(counts.items(), key=lambda kv: float(kv[0]))
            }
        deltas = []
        for pid, k, pct, current in clean:
            if k != key:
                continue
            for bpid, bk, _, base in clean:
                if bk == key and bpid != pid:
                    deltas.append(current.value / base.value - 1.0)
        deltas.sort()
        result[key] = {
            "clean_pair_delta": {
                "pairs": len(deltas),
                "min": round(deltas[0], 5) if deltas else None,
                "max": round(deltas[-1], 5) if deltas else None,
                "p99_abs": round(sorted(abs(d) for d in deltas)[int(0.99 * (len(deltas) - 1))], 5) if deltas else None,
            },
            "threshold_sweep": sweep,
        }
    return result


def summarize(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE.parent / "src"))
    from pytest_rfdetr_latency.stats import DEFAULT_THRESHOLDS

    raws = [json.loads(Path(p).read_text()) for p in args.raw]
    trials = _trials(raws)
    per_key: dict[str, Any] = {}
    for key in sorted({t["key"] for t in trials}):
        mine = [t for t in trials if t["key"] == key]
        aa = [t for t in mine if t["injected_pct"] == 0.0]
        detection: dict[str, Any] = {}
        for level in LEVELS:
            ab = [t for t in mine if t["injected_pct"] == level]
            if ab:
                detection[f"{level:g}"] = round(sum(t["kind"] == "regression" for t in ab) / len(ab), 4)
        per_key[key] = {
            "aa_trials": len(aa),
            "false_alarm_rate": round(sum(t["kind"] == "regression" for t in aa) / len(aa), 4) if aa else None,
            "aa_inconclusive_rate": round(sum(t["kind"] == "inconclusive" for t in aa) / len(aa), 4) if aa else None,
            "aa_delta_range": [round(min(t["delta"] for t in aa), 5), round(max(t["delta"] for t in aa), 5)]
            if aa else None,
            "detection_rate": detection,
            "ab_trials": {f"{level:g}": sum(t["injected_pct"] == level for t in mine) for level in LEVELS},
            "threshold": mine[0]["threshold"],
        }
    seconds: dict[str, list[float]] = defaultdict(list)
    scope_seconds: dict[str, list[float]] = defaultdict(list)
    processes = 0
    for raw in raws:
        for record in raw["records"]:
            processes += 1
            for case in record["cases"]:
                details = case.get("details", {})
                if details.get("injected_slowdown_pct"):
                    continue
                seconds[case["backend"]].append(details.get("prepare_seconds", 0) + details.get("measure_seconds", 0))
                for scope, meta in details.get("scopes", {}).items():
                    scope_seconds[_scope_key(case, scope)].append(meta["warmup_seconds"] + meta["sample_seconds"])
    for key, entry in per_key.items():
        backend = key.split(":")[0]
        entry["seconds_per_case"] = round(sum(seconds[backend]) / len(seconds[backend]), 2) if seconds[backend] else None
        values = scope_seconds[key]
        entry["seconds_per_scope"] = round(sum(values) / len(values), 2) if values else None
    fingerprints = [r.get("fingerprint") for raw in raws for r in raw["records"] if r.get("fingerprint")]
    document = {
        "machine": args.machine,
        "command": "python benchmarks/gate_power.py run ...; python benchmarks/gate_power.py summarize ...",
        "raw_files": [Path(p).name for p in args.raw],
        "processes": processes,
        "fingerprint": fingerprints[0] if fingerprints else None,
        "thresholds": DEFAULT_THRESHOLDS,
        "scopes": per_key,
        "pairwise": _pairwise(raws, DEFAULT_THRESHOLDS),
    }
    Path(args.out).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    for key, entry in per_key.items():
        print(f"{key:24s} A/A {entry['aa_trials']:3d} FA {entry['false_alarm_rate']}  "
              f"detect {entry['detection_rate']}  {entry['seconds_per_case']} s/case")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run trials")
    r.add_argument("--processes", type=int, default=8, help="processes per GPU stream, the first records only")
    r.add_argument("--gpus", default="0", help="comma list of GPU indices, one stream each")
    r.add_argument("--raw", required=True, help="JSON file of every trial's record (rewritten after each)")
    r.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "rfdetr-latency-cache"))
    r.add_argument("--model", default="RFDETRMedium")
    r.add_argument("--label", default="run")
    r.add_argument("--level-offset", type=int, default=0, help="rotate the injected levels (continuing a series)")
    r.add_argument("--ab-every", type=int, default=1, help="every Nth process also measures an injected slowdown")
    r.add_argument("--max-seconds", type=float, default=540.0, help="start no new process after this long")
    r.add_argument("--pytest-args", nargs=argparse.REMAINDER, default=["--rfdetr-device=cuda"],
                   help="passed to each trial's pytest (default: --rfdetr-device=cuda)")
    s = sub.add_parser("summarize", help="summarize raw trial files")
    s.add_argument("raw", nargs="+")
    s.add_argument("--out", required=True)
    s.add_argument("--machine", default="")
    args = parser.parse_args()
    run(args) if args.command == "run" else summarize(args)


if __name__ == "__main__":
    main()
