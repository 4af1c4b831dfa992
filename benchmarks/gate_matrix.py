"""The whole default matrix as a user runs it: recorded once, checked again and again with the same code (A/A), and
checked with an injected slowdown (A/B), on one GPU per stream. Writes every pytest process's JSON report.

On the two-GPU H200 machine two streams run at once, each a single-GPU runner of its own: its GPU alone
(CUDA_VISIBLE_DEVICES), half of the cores (taskset), its own baseline folder; the ONNX export cache is shared.

    python benchmarks/gate_matrix.py run --phase save --backends torch-fp32,torch-fp16 --tag r1
    python benchmarks/gate_matrix.py run --phase save --backends onnx-cpu,onnx-cuda --tag r6
    python benchmarks/gate_matrix.py run --phase check --count 3 --tag r7
    python benchmarks/gate_matrix.py run --phase check --inject 2 --tag r8
    python benchmarks/gate_matrix.py summarize RUNS_DIR... --out benchmarks/results/gate-matrix-nvidia-h200.json

``summarize`` reads the runs' records (runs.jsonl; reports and logs as written or gzipped, as committed) and reports:
per-comparison false alarms over the A/A checks of the whole matrix (and, apart, of runs narrowed to some models or
backends), detections of the injected slowdown in the device scope, the check times, and where the time goes. With
``--redecide`` the launch-bound scopes and memory are judged again, offline, by the plugin's judge as it is now.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

DEFAULT_WORK = Path("/tmp/gate-matrix")


def _cores(stream: int, streams: int) -> list[int]:
    cores = sorted(os.sched_getaffinity(0))
    share = max(1, len(cores) // streams)
    return cores[stream * share:(stream + 1) * share]


def _process(args: argparse.Namespace, stream: int, index: int) -> dict[str, Any]:
    work: Path = args.work
    name = f"{args.tag}-s{stream}-{args.phase}{'-inject' if args.inject else ''}-{index}"
    report = work / "reports" / f"{name}.json"
    log = work / "logs" / f"{name}.log"
    for folder in (report.parent, log.parent):
        folder.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pytest", "--pyargs", "pytest_rfdetr_latency.suite", "-q", "-p", "no:cacheprovider",
        f"--rfdetr-baseline-dir={work / f's{stream}' / 'baselines'}", f"--rfdetr-cache-dir={work / 'cache'}",
        f"--rfdetr-report={report}",
    ]
    if args.backends:
        command.append(f"--rfdetr-backends={args.backends}")
    if args.phase == "save":
        command += ["--save-baseline", f"--rfdetr-save-processes={args.processes}"]
    else:
        command.append("--rfdetr-latency")
    if args.inject:
        command.append(f"--rfdetr-inject-slowdown={args.inject:g}%")
    command += args.pytest_args
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(stream), PYTHONUNBUFFERED="1")
    cores = _cores(stream, args.streams)
    start = time.time()
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with log.open("w") as handle:
        code = subprocess.run(["taskset", "-c", ",".join(map(str, cores)), *command], env=env, stdout=handle,
                              stderr=subprocess.STDOUT, check=False, timeout=args.timeout).returncode
    return {"tag": args.tag, "stream": stream, "phase": args.phase, "inject_pct": args.inject, "index": index,
            "exit_code": code, "wall_seconds": round(time.time() - start, 2), "report": str(report.relative_to(work)),
            "log": str(log.relative_to(work)), "cores": len(cores), "command": command[3:], "at": at}


def run(args: argparse.Namespace) -> None:
    records: list[dict[str, Any]] = []
    lock = threading.Lock()

    def stream(s: int) -> None:
        for i in range(args.count):
            record = _process(args, s, i)
            with lock:
                records.append(record)
                with (args.work / "runs.jsonl").open("a") as handle:
                    handle.write(json.dumps(record) + "\n")
                print(f"[{args.tag} stream {s}] {args.phase} {i}: exit {record['exit_code']}, "
                      f"{record['wall_seconds']} s", flush=True)

    chosen = range(args.streams) if args.only_stream is None else [args.only_stream]
    threads = [threading.Thread(target=stream, args=(s,)) for s in chosen]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# ---------------------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    """A JSON file as written on the device, or its gzipped copy as committed; None where neither exists."""
    if path.exists():
        return json.loads(path.read_text())
    packed = path.with_name(path.name + ".gz")
    return json.loads(gzip.decompress(packed.read_bytes())) if packed.exists() else None


def _load(folders: list[Path]) -> list[dict[str, Any]]:
    records = []
    for folder in folders:
        for line in (folder / "runs.jsonl").read_text().splitlines():
            record = json.loads(line)
            record["folder"] = folder
            record["data"] = _read_json(folder / record["report"])
            records.append(record)
    return records


def _baseline(record: dict[str, Any]) -> dict[str, Any]:
    return dict(_read_json(record["folder"] / "baselines" / f"stream{record['stream']}-nvidia-h200.json")["entries"])


def _rejudged(record: dict[str, Any], case: dict[str, Any], scope: str, verdict: dict[str, Any]) -> dict[str, Any]:
    return rejudged(_baseline(record), case, scope, verdict)


def rejudged(base: dict[str, Any], case: dict[str, Any], scope: str, verdict: dict[str, Any]) -> dict[str, Any]:
    """A verdict of a check against the baseline file's entries ``base`` decided again, offline, by the plugin's
    stored-baseline rule of this checkout, over the processes the check measured (it cannot measure more: where the
    shipped screen would now send a case to fresh processes that the run did not start, the first process alone
    decides): every timing scope judged again by the runner's own function (stored.scope_verdict: launch-bound scopes
    of a GPU backend host-normalized by the slope fitted in the baseline file, the spread between sessions of the
    scope and backend added, a regression the host's own slowdown explains made inconclusive), then capped
    (gating.capped: unresolved where wider than the scope may be); the memory verdict by gating.memory_verdict. The
    runs asked no tolerance by name."""
    from pytest_rfdetr_latency.measure.cases import works_on_cpu
    from pytest_rfdetr_latency.verdict import gating, judge
    from pytest_rfdetr_latency.verdict import stored as stored_scope
    from pytest_rfdetr_latency.verdict.scopes import HOST_BOUND, session_noise

    entry = base[case["id"]]
    if scope == "memory":
        redone = gating.memory_verdict(entry.get("memory") or {}, case.get("memory"), case.get("processes", []),
                                       0.10, False)
        return verdict if redone is None else {**redone.to_json(), "redecided": True}
    if not verdict.get("detail") or scope not in entry["scopes"]:
        return verdict  # not measured in this run (no figures to judge again)
    stored = entry["scopes"][scope]
    procs = [case, *case.get("processes", [])]
    raw = [p["scopes"][scope]["value_ms"] for p in procs if scope in p.get("scopes", {})]
    hosts = [p["scopes"][scope].get("host_ms") for p in procs if scope in p.get("scopes", {})]
    on_cpu = works_on_cpu(case["backend"], case["device_kind"] == "cuda")
    normalizes = scope in HOST_BOUND and not on_cpu  # as the runner's LatencyCase.normalizes
    slope = judge.host_slope(base.values(), scope, case["backend"]) if normalizes else None
    decided = stored_scope.scope_verdict(
        scope, verdict["statistic"], stored, raw, hosts, verdict["detail"]["asked"], slope,
        lambda s: judge.typical_noise(base.values(), scope, case["backend"], s), judge.DECIDE_Z,
        verdict["detail"]["processes"][1], normalizes,
        session_noise=session_noise(scope, case["backend"], on_cpu))
    return {**gating.capped(decided, scope, None).to_json(), "redecided": True}


def _comparisons(record: dict[str, Any], case: dict[str, Any], redecide: bool = False
                 ) -> list[tuple[str, dict[str, Any]]]:
    verdicts = case.get("verdicts", {}).items()
    return [(scope, _rejudged(record, case, scope, v) if redecide else v) for scope, v in verdicts]


def _whole(record: dict[str, Any]) -> bool:
    """A run of the whole default matrix: no narrowing of models or backends on its command line."""
    return not any(a.startswith(("--rfdetr-backends", "--rfdetr-models")) for a in record["command"])


def _aa_stats(aa: list[dict[str, Any]], redecide: bool) -> dict[str, Any]:
    """Per-comparison false alarms (regression, or inconclusive other than unresolved) over clean checks, and the
    runs that failed: as run (exit code), or where re-decided offline, those with any alarm left; the unresolved
    comparisons (not gating on this runner) and the widest threshold of those that gated, per scope."""
    false_alarms: list[dict[str, Any]] = []
    comparisons = failed_runs = confirmations = improvements = 0
    by_scope: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    unresolved: dict[str, int] = defaultdict(int)
    widest: dict[str, float] = defaultdict(float)
    for record in aa:
        alarms = 0
        for case in record["data"]["cases"]:
            confirmations += len(case.get("processes", []))
            for scope, verdict in _comparisons(record, case, redecide):
                comparisons += 1
                by_scope[scope][1] += 1
                improvements += verdict["kind"] == "improvement"
                if verdict["kind"] == "inconclusive" and (verdict.get("detail") or {}).get("unresolved"):
                    unresolved[scope] += 1
                    continue
                widest[scope] = max(widest[scope], round(100 * verdict["threshold"], 3))
                if verdict["kind"] in ("regression", "inconclusive"):
                    alarms += 1
                    by_scope[scope][0] += 1
                    false_alarms.append({"run": f"{record['tag']}-s{record['stream']}-{record['index']}",
                                         "case": case["id"], "scope": scope, "kind": verdict["kind"],
                                         "delta": verdict["delta"], "threshold": verdict["threshold"],
                                         "processes": verdict["processes"],
                                         "baseline_processes": verdict["baseline_processes"]})
        failed_runs += bool(alarms) if redecide else record["exit_code"] != 0
    return {
        "aa_runs": len(aa),
        "aa_failed_runs": failed_runs,
        "comparisons": comparisons,
        "false_alarms": len(false_alarms),
        "false_alarms_by_scope": {s: {"false_alarms": v[0], "comparisons": v[1]} for s, v in sorted(by_scope.items())},
        "false_alarm_details": false_alarms,
        "unresolved_by_scope": dict(sorted(unresolved.items())),
        "max_gating_threshold_pct": dict(sorted(widest.items())),
        "aa_improvements_reported": improvements,
        "aa_fresh_processes": confirmations,
        "check_seconds": [r["wall_seconds"] for r in aa],
        "check_seconds_median": statistics.median(r["wall_seconds"] for r in aa) if aa else None,
    }


def summarize(args: argparse.Namespace) -> None:
    records = [r for r in _load(args.runs) if r["tag"] not in args.exclude]
    checks = [r for r in records if r["phase"] == "check" and r["data"] is not None]
    aa = [r for r in checks if not r["inject_pct"]]
    ab = [r for r in checks if r["inject_pct"]]
    saves = [r for r in records if r["phase"] == "save" and r["data"] is not None]
    whole = [r for r in aa if _whole(r)]
    stats = _aa_stats(whole, args.redecide)
    device_total = device_hit = 0
    ab_other: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    ab_missed: list[dict[str, Any]] = []
    delivered: list[float] = []
    for record in ab:
        for case in record["data"]["cases"]:
            for scope, verdict in _comparisons(record, case, args.redecide):
                if scope == "memory":
                    continue
                hit = verdict["kind"] == "regression"
                if scope == "device":
                    device_total += 1
                    device_hit += hit
                    meta = case["details"]["scopes"]["device"]
                    delivered.append(verdict["delta"])
                    if not hit:
                        ab_missed.append({"run": f"{record['tag']}-s{record['stream']}", "case": case["id"],
                                          "delta": verdict["delta"], "threshold": verdict["threshold"],
                                          "kind": verdict["kind"], "processes": verdict["processes"],
                                          "baseline_processes": verdict["baseline_processes"],
                                          "injected_ms": meta.get("injected_ms"),
                                          "injected_as": meta.get("injected_as")})
                else:
                    ab_other[scope][1] += 1
                    ab_other[scope][0] += hit
    baseline_processes = sorted({e.get("processes") for r in saves for c in r["data"]["cases"]
                                 for e in [c.get("baseline_entry") or {}] if e})
    timings = _where_time_goes(whole)
    out = {
        "machine": args.machine,
        "baseline_processes": baseline_processes,
        "redecided_offline": args.redecide,
        **stats,
        "partial_matrix_aa": _aa_stats([r for r in aa if not _whole(r)], args.redecide),
        "ab_runs": len(ab),
        "ab_inject_pct": sorted({r["inject_pct"] for r in ab}),
        "ab_device_comparisons": device_total,
        "ab_device_detected": device_hit,
        "ab_device_missed": ab_missed,
        "ab_device_measured_effect": {"min": min(delivered, default=None), "max": max(delivered, default=None),
                                      "values": sorted(delivered)},
        "ab_other_scopes_detected": {s: {"detected": v[0], "comparisons": v[1]} for s, v in sorted(ab_other.items())},
        "ab_check_seconds": [r["wall_seconds"] for r in ab],
        "save_seconds": [r["wall_seconds"] for r in saves],
        "where_time_goes": timings,
        "runs": [{k: r[k] for k in ("tag", "stream", "phase", "inject_pct", "index", "exit_code", "wall_seconds",
                                    "report", "cores")} for r in records],
    }
    Path(args.out).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(json.dumps({k: out[k] for k in ("baseline_processes", "aa_runs", "aa_failed_runs", "comparisons",
                                          "false_alarms", "ab_runs", "ab_device_comparisons", "ab_device_detected",
                                          "check_seconds", "check_seconds_median")}, indent=1))


def _where_time_goes(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Seconds per check, summed over its cases: shared work, backend preparation, warm-up, sampling, confirmation."""
    per_run = []
    for record in records:
        data = record["data"]
        totals: dict[str, float] = defaultdict(float)
        for key, value in (data.get("timings_seconds") or {}).items():
            totals[key] += value
        for case in data["cases"]:
            details = case.get("details", {})
            totals["prepare"] += details.get("prepare_seconds", 0.0)
            for meta in (details.get("scopes") or {}).values():
                totals["warm-up"] += meta.get("warmup_seconds", 0.0)
                totals["sampling"] += meta.get("sample_seconds", 0.0)
        totals["wall"] = record["wall_seconds"]
        per_run.append({k: round(v, 1) for k, v in totals.items()})
    return {"per_run": per_run}


def redecide(args: argparse.Namespace) -> None:
    """Offline: judge the recorded A/A checks again with the plugin's judge, host-normalized or not, from the same
    processes (those of the check as run, and the stream's baseline file): effective thresholds of the host-bound
    scopes, how often a first process would be screened, and the verdicts where fresh processes were measured."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from pytest_rfdetr_latency.verdict import judge
    from pytest_rfdetr_latency.verdict.scopes import DEFAULT_THRESHOLDS, HOST_BOUND

    out: dict[str, Any] = {}
    for normalize in (False, True):
        thresholds: dict[str, list[float]] = defaultdict(list)
        screened: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        slopes: dict[str, float | None] = {}
        for record in _load(args.runs):
            if record["phase"] != "check" or record["inject_pct"] or record["tag"] in args.exclude:
                continue
            base = _baseline(record)
            for case in record["data"]["cases"]:
                backend = case["backend"]
                for scope in case.get("scopes", {}):
                    if scope not in HOST_BOUND or backend == "onnx-cpu" or case["id"] not in base:
                        continue
                    key = f"{backend}:{scope}"
                    slope = judge.host_slope(base.values(), scope, backend) if normalize else None
                    slopes[f"s{record['stream']}:{key}"] = slope
                    stored = base[case["id"]]["scopes"][scope]
                    recorded, reference = judge.recorded_figures(stored, slope)
                    procs = [case, *case.get("processes", [])]
                    values = [p["scopes"][scope]["value_ms"] for p in procs]
                    if reference is not None and slope:
                        values = judge.host_normalized(values, [p["scopes"][scope]["host_ms"] for p in procs],
                                                       reference, slope)
                    typical, freedom = judge.typical_noise(base.values(), scope, backend, slope)
                    first = judge.judge(scope, "p20", recorded, values[:1], DEFAULT_THRESHOLDS[scope], typical,
                                        z=judge.SCREEN_Z, typical_freedom=freedom)
                    shown = judge.judge(scope, "p20", recorded, values[:1], DEFAULT_THRESHOLDS[scope], typical,
                                        planned=3, typical_freedom=freedom)
                    thresholds[key].append(shown.threshold)
                    screened[key][0] += "regression" in (first.kind, shown.kind)
                    screened[key][1] += 1
        out["normalized" if normalize else "raw"] = {
            key: {"threshold_median": round(sorted(v)[len(v) // 2], 4), "screened": screened[key][0],
                  "comparisons": screened[key][1]} for key, v in sorted(thresholds.items())}
        if normalize:
            out["slopes"] = {k: None if v is None else round(v, 3) for k, v in sorted(slopes.items())}
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


def host_noise(args: argparse.Namespace) -> None:
    """Offline: does the host yardstick follow a scope's process figures? Per backend and scope, over every clean
    process (checks and their fresh processes, baselines' processes): the correlation of log figure and log
    yardstick, and the process-to-process spread (pooled within case and stream) raw and divided by the yardstick."""
    import math

    points: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
    for record in _load(args.runs):
        if record["inject_pct"] or record["tag"] in args.exclude or record["data"] is None:
            continue
        for case in record["data"]["cases"]:
            for process in [case, *case.get("processes", [])]:
                for scope, figures in process.get("scopes", {}).items():
                    if figures.get("host_ms"):
                        key = (str(record["stream"]), case["id"], scope)
                        points[key].append((figures["value_ms"], figures["host_ms"]))
    groups: dict[tuple[str, str], list[list[tuple[float, float]]]] = defaultdict(list)
    for (_, case_id, scope), values in points.items():
        if len(values) >= 4:
            logs = [(math.log(v), math.log(h)) for v, h in values]
            mean_v = sum(v for v, _ in logs) / len(logs)
            mean_h = sum(h for _, h in logs) / len(logs)
            groups[(scope, case_id.split("-", 1)[1])].append([(v - mean_v, h - mean_h) for v, h in logs])
    rows = {}
    for (scope, backend), members in sorted(groups.items()):
        pairs = [p for g in members for p in g]
        freedom = len(pairs) - len(members)
        sxx = sum(h * h for _, h in pairs)
        syy = sum(v * v for v, _ in pairs)
        sxy = sum(v * h for v, h in pairs)
        divided = sum((v - h) ** 2 for v, h in pairs)
        rows[f"{backend}:{scope}"] = {
            "processes": len(pairs), "correlation": round(sxy / math.sqrt(sxx * syy), 3) if sxx and syy else None,
            "spread_raw": round(math.sqrt(syy / freedom), 4), "spread_divided": round(math.sqrt(divided / freedom), 4),
        }
    print(json.dumps(rows, indent=1))


def brief(args: argparse.Namespace) -> None:
    """A few lines per process of the runs tagged ``args.tag``: exit code, wall time, and what failed."""
    for line in (args.work / "runs.jsonl").read_text().splitlines():
        record = json.loads(line)
        if args.tag and record["tag"] != args.tag:
            continue
        path = args.work / record["report"]
        injected = f" +{record['inject_pct']:g}%" if record["inject_pct"] else ""
        head = (f"{record['tag']} s{record['stream']} {record['phase']}{injected} #{record['index']}: "
                f"exit {record['exit_code']}, {record['wall_seconds']} s")
        if not path.exists():
            tail = (args.work / record["log"]).read_text().splitlines()[-15:]
            print(head + ", no report; log tail:\n    " + "\n    ".join(tail))
            continue
        data = json.loads(path.read_text())
        print(f"{head}, {data.get('summary')}, timings {data.get('timings_seconds')}")
        for case in data["cases"]:
            flagged = {s: f"{v['kind']} {v['delta'] * 100:+.2f}% (thr {v['threshold'] * 100:.2g}%, "
                          f"{len(v['baseline_processes'])}+{len(v['processes'])})"
                       for s, v in case.get("verdicts", {}).items() if v["kind"] != "pass"}
            figures = " ".join(f"{s}={v['value_ms']:.4g}" for s, v in case.get("scopes", {}).items())
            extra = f" fresh={len(case.get('processes', []))}" if case.get("processes") else ""
            if case.get("memory"):
                extra += f" mem={case['memory']['peak_mib']}MiB {case['memory'].get('phases_mib', '')}"
            print(f"  {case['id']:34s} {case['outcome']:12s} {figures}{extra} {flagged or ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--phase", choices=("save", "check"), required=True)
    r.add_argument("--tag", required=True)
    r.add_argument("--count", type=int, default=1)
    r.add_argument("--streams", type=int, default=2)
    r.add_argument("--only-stream", type=int, help="run this stream alone (its GPU and share of the cores)")
    r.add_argument("--processes", type=int, default=3, help="baseline processes (--rfdetr-save-processes)")
    r.add_argument("--backends", default="")
    r.add_argument("--inject", type=float, default=0.0, help="injected slowdown, percent")
    r.add_argument("--timeout", type=float, default=590.0)
    r.add_argument("--work", type=Path, default=DEFAULT_WORK)
    r.add_argument("pytest_args", nargs="*")
    s = sub.add_parser("summarize")
    s.add_argument("runs", nargs="+", type=Path)
    s.add_argument("--out", required=True)
    s.add_argument("--machine", default="")
    s.add_argument("--exclude", nargs="*", default=[], help="run tags to leave out")
    s.add_argument("--redecide", action="store_true",
                   help="decide the launch-bound scopes again with the plugin's judge as it is now (offline)")
    d = sub.add_parser("redecide")
    d.add_argument("runs", nargs="+", type=Path)
    d.add_argument("--exclude", nargs="*", default=[])
    d.add_argument("--out", default="")
    h = sub.add_parser("host-noise")
    h.add_argument("runs", nargs="+", type=Path)
    h.add_argument("--exclude", nargs="*", default=[])
    b = sub.add_parser("brief")
    b.add_argument("--tag", default="")
    b.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    commands = {"run": run, "summarize": summarize, "brief": brief, "redecide": redecide, "host-noise": host_noise}
    commands[args.command](args)


if __name__ == "__main__":
    main()
