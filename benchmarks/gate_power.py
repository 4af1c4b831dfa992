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


def _trial(
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


def _series(raws: list[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Per stream, in order: each process's clean and injected measurements, as ScopeStats, and its verdicts."""
    from pytest_rfdetr_latency.stats import ScopeStats

    series: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for raw in raws:
        for record in raw["records"]:
            entry: dict[str, Any] = {"process": record["process"], "seed": record.get("seed", False),
                                     "clean": {}, "injected": {}, "verdicts": {}}
            for case in record["cases"]:
                pct = case.get("details", {}).get("injected_slowdown_pct") or 0.0
                for scope, data in case.get("scopes", {}).items():
                    key = _scope_key(case, scope)
                    stats = ScopeStats.from_json(data)
                    if pct:
                        delay = case["details"]["scopes"][scope].get("injected_ms", 0.0)
                        entry["injected"][key] = (pct, stats, delay)
                    else:
                        entry["clean"][key] = stats
                for scope, verdict in case.get("verdicts", {}).items():
                    if scope != "memory":
                        entry["verdicts"][(_scope_key(case, scope), pct)] = verdict
            series[(raw.get("label", "run"), record["stream"])].append(entry)
    for entries in series.values():
        entries.sort(key=lambda e: e["process"])
    return series


def _shifted(stats: Any, delay: float) -> Any:
    import dataclasses

    return dataclasses.replace(stats, value=stats.value + delay, blocks=tuple(b + delay for b in stats.blocks))


def _rates(hits: dict[str, list[int]]) -> dict[str, Any]:
    return {level: {"rate": round(h / n, 4), "trials": n} for level, (h, n) in sorted(hits.items(), key=lambda kv:
                                                                                       float(kv[0])) if n}


def _policy(series: dict[tuple[str, int], list[dict[str, Any]]], key: str, threshold: float, baseline_of: int,
            confirm: int) -> dict[str, Any]:
    """Re-decide offline: baseline = fastest of the ``baseline_of`` previous clean processes; a regression in a
    host-bound scope is confirmed by the next ``confirm`` processes (the fastest of all decides). For injected
    trials the confirming processes are the next clean ones plus the same injected delay (additive model)."""
    from pytest_rfdetr_latency.stats import decide

    scope = key.split(":")[1]
    host_bound = scope != "device"
    aa = [0, 0]
    ab: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for entries in series.values():
        for i in range(baseline_of, len(entries)):
            previous = [e["clean"][key] for e in entries[i - baseline_of:i] if key in e["clean"]]
            later = [e["clean"][key] for e in entries[i + 1:i + 1 + confirm] if key in e["clean"]]
            if len(previous) < baseline_of or (host_bound and len(later) < confirm):
                continue
            base = min(previous, key=lambda s: s.value)
            current = entries[i]["clean"].get(key)
            if current is not None:
                verdict = decide(scope, base, current, threshold)
                if verdict.kind == "regression" and host_bound and confirm:
                    verdict = decide(scope, base, min([current, *later], key=lambda s: s.value), threshold)
                aa[0] += verdict.kind == "regression"
                aa[1] += 1
            if key in entries[i]["injected"]:
                pct, stats, delay = entries[i]["injected"][key]
                verdict = decide(scope, base, stats, threshold)
                if verdict.kind == "regression" and host_bound and confirm:
                    options = [stats, *(_shifted(s, delay) for s in later)]
                    verdict = decide(scope, base, min(options, key=lambda s: s.value), threshold)
                bucket = ab[f"{pct:g}"]
                bucket[0] += verdict.kind == "regression"
                bucket[1] += 1
    return {
        "threshold": threshold, "baseline_of": baseline_of, "confirm_processes": confirm,
        "aa_trials": aa[1], "false_alarm_rate": round(aa[0] / aa[1], 4) if aa[1] else None,
        "detection_rate": _rates(ab),
    }


def summarize(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE.parent / "src"))
    from pytest_rfdetr_latency.stats import DEFAULT_THRESHOLDS

    raws = [json.loads(Path(p).read_text()) for p in args.raw]
    series = _series(raws)
    keys = sorted({k for entries in series.values() for e in entries for k in e["clean"]})
    scopes: dict[str, Any] = {}
    for key in keys:
        aa = [0, 0]
        inconclusive = 0
        ab: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        deltas: list[float] = []
        effective: dict[str, list[float]] = defaultdict(list)
        for entries in series.values():
            for e in entries:
                if e["seed"]:
                    continue
                verdict = e["verdicts"].get((key, 0.0))
                if verdict is not None:
                    aa[0] += verdict["kind"] == "regression"
                    aa[1] += 1
                    inconclusive += verdict["kind"] == "inconclusive"
                    deltas.append(verdict["delta"])
                if key in e["injected"]:
                    pct = e["injected"][key][0]
                    verdict = e["verdicts"].get((key, pct))
                    if verdict is not None:
                        bucket = ab[f"{pct:g}"]
                        bucket[0] += verdict["kind"] == "regression"
                        bucket[1] += 1
                    clean = e["clean"].get(key)
                    if clean is not None:  # the slowdown the injection really caused, within the process
                        effective[f"{pct:g}"].append(round((e["injected"][key][1].value / clean.value - 1) * 100, 2))
        threshold_then = next((v["threshold"] for es in series.values() for e in es for (k, _), v in
                               e["verdicts"].items() if k == key), None)
        scope = key.split(":")[1]
        confirm = 0 if scope == "device" else 2
        scopes[key] = {
            "aa_trials": aa[1],
            "false_alarm_rate": round(aa[0] / aa[1], 4) if aa[1] else None,
            "aa_inconclusive": inconclusive,
            "aa_delta_range": [round(min(deltas), 5), round(max(deltas), 5)] if deltas else None,
            "detection_rate": {level: r["rate"] for level, r in _rates(ab).items()},
            "ab_trials": {level: r["trials"] for level, r in _rates(ab).items()},
            "injected_effect_pct_within_process": dict(effective),
            "threshold_in_trials": threshold_then,
            "offline": {
                "single_process_at_default": _policy(series, key, DEFAULT_THRESHOLDS[scope], 1, 0),
                "default_policy": _policy(series, key, DEFAULT_THRESHOLDS[scope], 1, confirm),
                "with_save_processes_3": _policy(series, key, DEFAULT_THRESHOLDS[scope], 3, confirm),
                "threshold_sweep_single_process": [
                    _policy(series, key, t, 1, 0)
                    for t in ((0.003, 0.005, 0.01) if scope == "device" else (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.8))
                ],
            },
        }
    seconds: dict[str, list[float]] = defaultdict(list)
    processes = 0
    walls = []
    for raw in raws:
        for record in raw["records"]:
            processes += 1
            walls.append(record["wall_seconds"])
            for case in record["cases"]:
                details = case.get("details", {})
                if not details.get("injected_slowdown_pct"):
                    seconds[case["backend"]].append(details.get("prepare_seconds", 0) +
                                                    details.get("measure_seconds", 0))
    for key, entry in scopes.items():
        backend = key.split(":")[0]
        entry["seconds_per_case"] = round(sum(seconds[backend]) / len(seconds[backend]), 2)
    fingerprints = [r.get("fingerprint") for raw in raws for r in raw["records"] if r.get("fingerprint")]
    document = {
        "machine": args.machine,
        "command": "python benchmarks/gate_power.py run --gpus 0,1 --ab-every 2 ...; "
                   "python benchmarks/gate_power.py summarize ...",
        "raw_files": [Path(p).name for p in args.raw],
        "processes": processes,
        "seconds_per_process": round(sum(walls) / len(walls), 1) if walls else None,
        "fingerprint": fingerprints[0] if fingerprints else None,
        "default_thresholds": DEFAULT_THRESHOLDS,
        "scopes": scopes,
    }
    Path(args.out).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    for key, entry in scopes.items():
        policy = entry["offline"]["default_policy"]
        print(f"{key:22s} measured: A/A {entry['aa_trials']:2d} FA {entry['false_alarm_rate']} detect "
              f"{entry['detection_rate']} | default policy: A/A {policy['aa_trials']} FA {policy['false_alarm_rate']}"
              f" detect { {k: v['rate'] for k, v in policy['detection_rate'].items()} } | {entry['seconds_per_case']} "
              "s/case")


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
