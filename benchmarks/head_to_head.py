"""Head to head on the GPU machine: `pytest --rfdetr-latency --rfdetr-against=PYTHON` as a user runs it, one stream
per GPU (its GPU alone, half of the cores, as gate_matrix.py's streams), every pytest process's JSON report kept.

    python benchmarks/head_to_head.py run --tag h1 --stream 0 --against python3 -- --rfdetr-device=cuda
    python benchmarks/head_to_head.py summarize /tmp/head-to-head --gate /tmp/gate-matrix --out results.json

``summarize`` compares how far apart two measurements of the same code land, per scope: the other side's median
over this side's in each head-to-head run (interleaved processes, minutes apart), and a stored-baseline check's
median over its baseline's (gate_matrix.py's A/A checks: the baseline recorded once, checked later). Both are A/A,
so the truth is 1 and the spread of ln(ratio) is the error each way of measuring makes. A head-to-head of two
environments (``--against`` another interpreter) is summarized apart, per case and scope, with both sides'
versions.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

DEFAULT_WORK = Path("/tmp/head-to-head")


def _cores(stream: int, streams: int) -> list[int]:
    cores = sorted(os.sched_getaffinity(0))
    share = max(1, len(cores) // streams)
    return cores[stream * share:(stream + 1) * share]


def run(args: argparse.Namespace) -> None:
    work: Path = args.work
    name = f"{args.tag}-s{args.stream}"
    report, log = work / "reports" / f"{name}.json", work / "logs" / f"{name}.log"
    for folder in (report.parent, log.parent):
        folder.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pytest", "--pyargs", "pytest_rfdetr_latency.suite", "-q", "-p", "no:cacheprovider",
        "--rfdetr-latency", f"--rfdetr-against={args.against}", f"--rfdetr-against-processes={args.processes}",
        f"--rfdetr-cache-dir={work / 'cache'}", f"--rfdetr-report={report}", *args.pytest_args,
    ]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(args.stream), PYTHONUNBUFFERED="1")
    cores = _cores(args.stream, args.streams)
    start = time.time()
    with log.open("w") as handle:
        code = subprocess.run(["taskset", "-c", ",".join(map(str, cores)), *command], env=env, stdout=handle,
                              stderr=subprocess.STDOUT, check=False, timeout=args.timeout).returncode
    record = {"tag": args.tag, "stream": args.stream, "against": args.against, "label": args.label,
              "exit_code": code, "wall_seconds": round(time.time() - start, 2), "cores": len(cores),
              "report": str(report.relative_to(work)), "log": str(log.relative_to(work)), "command": command[3:]}
    with (work / "runs.jsonl").open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(f"[{args.tag} stream {args.stream}] exit {code}, {record['wall_seconds']} s", flush=True)


def read_json(path: Path) -> Any:
    """A JSON file, or its gzipped copy beside it; None when neither exists."""
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.exists():
            opener = gzip.open if candidate.suffix == ".gz" else open
            with opener(candidate, "rt") as handle:
                return json.load(handle)
    return None


def folder_arguments(doc: str | None) -> argparse.Namespace:
    """The command line of a script that summarizes one runs folder: ``folder``, ``--out``, ``--machine``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--machine", default="")
    return parser.parse_args()


def emit(document: Any, out: Path | None) -> None:
    """A summary as indented JSON: printed, and written to ``out`` where given."""
    text = json.dumps(document, indent=1) + "\n"
    if out:
        out.write_text(text)
    print(text)


def _runs(folder: Path) -> list[dict[str, Any]]:
    path = folder / "runs.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for record in records:
        record["data"] = read_json(folder / record["report"])
    return records


def _kind(case_id: str, scope: str) -> str:
    if scope == "device":
        return "device"
    return "host-bound (onnx-cpu)" if "onnx-cpu" in case_id else "launch-bound (GPU backend)"


def _spread(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "rms_pct": round(100 * math.sqrt(statistics.fmean(v * v for v in values)), 3),
            "max_abs_pct": round(100 * max(abs(v) for v in values), 3),
            "median_abs_pct": round(100 * statistics.median(abs(v) for v in values), 3)}


def summarize(args: argparse.Namespace) -> None:
    aa: dict[str, list[float]] = defaultdict(list)
    duels: list[dict[str, Any]] = []
    verdicts: dict[str, int] = defaultdict(int)
    cases_seen: set[tuple[str, str]] = set()
    for folder in args.runs:
        for record in _runs(folder):
            if record["data"] is None:
                continue
            for case in record["data"]["cases"]:
                duel = case.get("details", {}).get("head_to_head")
                if not duel:
                    continue
                for scope, verdict in case.get("verdicts", {}).items():
                    if scope == "memory":
                        continue
                    ratio = math.log(verdict["current"] / verdict["baseline"])
                    if record.get("label", "aa") == "aa":
                        aa[_kind(case["id"], scope)].append(ratio)
                        cases_seen.add((case["id"], scope))
                        verdicts[verdict["kind"]] += 1
                    else:
                        duels.append({"tag": record["tag"], "label": record["label"], "case": case["id"],
                                      "scope": scope, "this_ms": verdict["baseline_processes"],
                                      "other_ms": verdict["processes"], "change_pct": round(100 * math.expm1(ratio), 2),
                                      "threshold_pct": round(100 * verdict["threshold"], 2), "kind": verdict["kind"],
                                      "versions": duel["versions"]})
    stored: dict[str, list[float]] = defaultdict(list)
    for folder in args.gate:
        for record in _runs(folder):
            if record.get("phase") != "check" or record.get("inject_pct") or record["data"] is None:
                continue
            for case in record["data"]["cases"]:
                for scope, verdict in case.get("verdicts", {}).items():
                    if scope != "memory" and (case["id"], scope) in cases_seen:
                        stored[_kind(case["id"], scope)].append(math.log(verdict["current"] / verdict["baseline"]))
    summary = {
        "what": "ln(other side / this side) of head-to-head A/A runs against ln(check / baseline) of stored-baseline "
                "A/A checks of the same cases and scopes; both should be 0",
        "head_to_head_aa": {k: _spread(v) for k, v in sorted(aa.items())},
        "head_to_head_aa_verdicts": dict(verdicts),
        "stored_baseline_aa": {k: _spread(v) for k, v in sorted(stored.items())},
        "environments": duels,
        "sources": [str(p) for p in [*args.runs, *args.gate]],
    }
    text = json.dumps(summary, indent=1) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--tag", required=True)
    r.add_argument("--stream", type=int, default=0)
    r.add_argument("--streams", type=int, default=2)
    r.add_argument("--against", required=True, help="the other side's interpreter")
    r.add_argument("--label", default="aa", help="aa for one environment against itself; a name otherwise")
    r.add_argument("--processes", type=int, default=3)
    r.add_argument("--timeout", type=float, default=590.0)
    r.add_argument("--work", type=Path, default=DEFAULT_WORK)
    r.add_argument("pytest_args", nargs="*")
    s = sub.add_parser("summarize")
    s.add_argument("runs", nargs="+", type=Path)
    s.add_argument("--gate", nargs="*", type=Path, default=[], help="gate_matrix.py work folders (A/A checks)")
    s.add_argument("--out", default="")
    args = parser.parse_args()
    {"run": run, "summarize": summarize}[args.command](args)


if __name__ == "__main__":
    main()
