"""A pull request's gate on the GPU machine: head to head of two checkouts, as the shipped workflow runs it.

    python benchmarks/pr_gate.py run --tag aa1 --label aa -- --rfdetr-device=cuda --rfdetr-strict
    python benchmarks/pr_gate.py run --tag h5 --label host5 --inject 5 --inject-on host -- --rfdetr-device=cuda
    python benchmarks/pr_gate.py summarize /tmp/pr-gate [--mode turns] --out benchmarks/results/pr-gate-nvidia-h200.json
    python benchmarks/pr_gate.py trade benchmarks/results/pr-gate-h200 --tags ... --calls 150 75 50 --pairs 4 3

``run`` copies this checkout twice (``base`` and ``head``: the same commit, an A/A pair by construction), installs
each copy's plugin into a folder of its own, and gives each side an interpreter of its own (a wrapper that puts that
folder and the staged rfdetr on the path, nothing else of this side's), then runs, from the base's checkout,
``pytest latency --rfdetr-latency --rfdetr-against=<head's interpreter> --rfdetr-against-tree=<head>`` with the
given options (the head is the side judged, and the side an injection slows), keeping the JSON report and the log.
``summarize`` counts, over every run: A/A runs and their failures, comparisons and false alarms, per scope the
detections of injected runs, the median smallest detectable regression (``mdr_pct``, as the verdicts stated it),
and each run's seconds. ``trade`` re-decides the runs taking turns call by call as if each process had taken only
its first calls of each scope and the run only its first pairs, with the ring's seconds that would have cost.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from head_to_head import read_json  # benchmarks/ is this script's folder

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORK = Path("/tmp/pr-gate")
SKIP = shutil.ignore_patterns(".git", ".device-stage", ".venv", "results", "__pycache__", ".pytest_cache", "*.egg-info")


def _side(work: Path, name: str) -> Path:
    """A checkout of this commit as ``name``, its plugin installed in a folder of its own, and its interpreter."""
    tree, site, python = work / "trees" / name, work / f"site-{name}", work / f"python-{name}"
    if not tree.exists():
        shutil.copytree(ROOT, tree, ignore=SKIP)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", "--target", str(site), str(tree)], check=True)
        staged = os.environ.get("PR_GATE_STAGED", "/tmp/site")
        python.write_text(f'#!/bin/sh\nPYTHONPATH={site}:{staged} exec {sys.executable} "$@"\n')
        python.chmod(0o755)
    return python


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc; empty where there is none): the head-to-head processes start in
    sessions of their own, so no process group holds them all."""
    children: dict[int, list[int]] = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children[int(fields[1])].append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def _stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM to the run, which stops its processes and reports; after ``grace`` seconds, SIGKILL to it and to every
    process below it that is still there (on the GPU machine one left behind would measure into the next call)."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        below = _descendants(proc.pid)
        proc.kill()
        proc.wait()
        for pid in below:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def run(args: argparse.Namespace) -> None:
    work: Path = args.work
    base, head = _side(work, "base"), _side(work, "head")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report, log = out / f"{args.tag}.json", out / f"{args.tag}.log"
    options = [f"--rfdetr-against={head}", f"--rfdetr-against-tree={work / 'trees' / 'head'}",
               f"--rfdetr-against-processes={args.processes}", f"--rfdetr-cache-dir={work / 'cache'}",
               f"--rfdetr-report={report}"]
    if args.label == "aa":
        options.append("--rfdetr-against-aa")
    if args.inject:
        options += [f"--rfdetr-inject-slowdown={args.inject}%", f"--rfdetr-inject-on={args.inject_on}"]
    command = [str(base), "-m", "pytest", "latency", "-q", "-p", "no:cacheprovider", "--rfdetr-latency", *options,
               *args.pytest_args]
    start = time.time()
    with log.open("w") as handle:
        proc = subprocess.Popen(command, cwd=work / "trees" / "base", stdout=handle, stderr=subprocess.STDOUT)
        try:
            code = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:  # as a CI job's time limit stops it: SIGTERM, so that it reports the cases
            _stop(proc, args.grace)  # it finished and stops the processes it started
            code = 124
        except BaseException:  # Ctrl-C or an error here: the run stops too
            _stop(proc, args.grace)
            raise
    record = {"tag": args.tag, "label": args.label, "inject_pct": args.inject, "inject_on": args.inject_on,
              "exit_code": code, "seconds": round(time.time() - start, 1), "report": report.name, "log": log.name,
              "command": command[1:], "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with (out / "runs.jsonl").open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _mode(data: dict[str, Any] | None) -> str:
    """How a run's pairs ran: 'turns' (both processes live, alternating blocks) or 'sequential'."""
    cases = (data or {}).get("cases") or [{}]
    return "turns" if cases[0].get("details", {}).get("head_to_head", {}).get("in_turns") else "sequential"


def _runs(folders: list[Path], mode: str | None, tags: str | None,
          change: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The runs of ``folders`` (``runs.jsonl``) with their reports, those of ``mode`` and ``tags`` where given, each
    report passed through ``change`` (a re-decision) where given."""
    runs = []
    for folder in folders:
        for line in (folder / "runs.jsonl").read_text().splitlines():
            record = json.loads(line)
            record["data"] = read_json(folder / record["report"])
            record["mode"] = _mode(record["data"])
            if mode not in (None, record["mode"]) or (tags and record["tag"] not in tags.split(",")):
                continue
            if change is not None and record["data"] is not None:
                record["data"] = change(record["data"])
            runs.append(record)
    return runs


def summarize(args: argparse.Namespace) -> None:
    runs = _runs(args.folders, args.mode, args.tags, redecide if args.redecide else None)
    summary = {
        "what": "head to head of two checkouts of one commit (A/A), and of one against itself slowed (A/B), on one "
                "GPU; verdicts " + ("re-decided offline by the shipped rule (headtohead.judge_scope)" if args.redecide
                                    else "as the runs printed them"),
        "mode": args.mode or "all",
        **_counted(runs),
        "seconds": {r["tag"]: r["seconds"] for r in runs},
        "seconds_median": _median([r["seconds"] for r in runs]),
        "runs": [{k: v for k, v in r.items() if k != "data"} for r in runs],
    }
    text = json.dumps(summary, indent=1, sort_keys=True) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)


def _counted(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Over ``runs``' paired timing verdicts: A/A runs, failures, comparisons, false alarms and unresolved; per
    injected label and scope the detections; per scope the median line (``mdr_pct``) and the deltas; the median
    pair noise per backend and scope."""
    aa = [r for r in runs if r["label"] == "aa"]
    comparisons = false_alarms = unresolved = 0
    mdr: dict[str, list[float]] = defaultdict(list)
    pair_noise: dict[str, list[float]] = defaultdict(list)
    detected: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    deltas: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in runs:
        for case in (record["data"] or {}).get("cases", []):
            for scope, verdict in case.get("verdicts", {}).items():
                detail = verdict.get("detail", {})
                if scope == "memory" or not detail.get("paired"):
                    continue
                label = record["label"]
                deltas[label][scope].append(round(100 * float(verdict["delta"]), 3))
                if detail.get("detectable") is not None:
                    mdr[scope].append(100 * detail["detectable"])
                    pair_noise[f"{case['backend']}/{scope}"].append(100 * detail["pair_noise"])
                if label == "aa":
                    comparisons += 1
                    false_alarms += verdict["kind"] == "regression"
                    unresolved += verdict["kind"] == "inconclusive"
                elif record.get("inject_on") != "host" or scope != "device":  # a host injection leaves the GPU be
                    counted = detected[label][scope]
                    counted[0] += verdict["kind"] == "regression"
                    counted[1] += 1
    return {
        "aa_runs": len(aa),
        "aa_failed_runs": sum(1 for r in aa if r["exit_code"] != 0),
        "comparisons": comparisons,
        "false_alarms": false_alarms,
        "unresolved": unresolved,
        "ab_runs": {label: sum(1 for r in runs if r["label"] == label) for label in detected},
        "detected": {label: {s: {"detected": v[0], "comparisons": v[1]} for s, v in scopes.items()}
                     for label, scopes in detected.items()},
        "delta_pct": {label: dict(scopes) for label, scopes in deltas.items()},
        "mdr_pct": {scope: _median(values) for scope, values in mdr.items()},
        "pair_noise_pct_median": {key: _median(values) for key, values in sorted(pair_noise.items())},
    }


def rebuilt(data: dict[str, Any]) -> Any:
    """A run's HeadToHead rebuilt from its JSON report: this side's processes are each case's baseline entry's, the
    other side's the case's own and its further processes, each in process order (every process measured every
    case in the runs this reads)."""
    from pytest_rfdetr_latency.measure.headtohead import OTHER, THIS, HeadToHead, order
    from pytest_rfdetr_latency.verdict.scopes import HOST_BOUND

    first = data["cases"][0]["details"]["head_to_head"]
    versus = HeadToHead(Path(first["against"]), order(first["processes"][THIS]), in_turns=bool(first.get("in_turns")),
                        may_grow=bool(first.get("may_grow")))
    for case in data["cases"]:
        entry = case["baseline"]["scopes"]
        count = len(next(iter(entry.values()))["processes"])
        versus.results[THIS][case["id"]] = [
            {"id": case["id"], "backend": case["backend"], "process_index": i,
             "scopes": {scope: stored["processes"][i] for scope, stored in entry.items()}} for i in range(count)]
        others = [case["scopes"], *(p["scopes"] for p in case["processes"])]
        versus.results[OTHER][case["id"]] = [{"id": case["id"], "backend": case["backend"], "process_index": i,
                                             "scopes": scopes} for i, scopes in enumerate(others)]
    if not versus.in_turns:  # as headtohead.measure does
        versus.leave_out_apart(HOST_BOUND)
    return versus


def redecide(data: dict[str, Any]) -> dict[str, Any]:
    """Every comparison of a report judged again by the shipped rule (headtohead.judge_scope) at the tolerance each
    was asked; the report's cases with their verdicts replaced."""
    from pytest_rfdetr_latency.measure.headtohead import judge_scope
    from pytest_rfdetr_latency.verdict.scopes import HEAD_TO_HEAD_THRESHOLDS

    versus = rebuilt(data)
    cases = []
    for case in data["cases"]:
        verdicts = {}
        for scope, stored in case["scopes"].items():
            asked = case["verdicts"].get(scope, {}).get("detail", {}).get("asked", HEAD_TO_HEAD_THRESHOLDS[scope])
            said = case["verdicts"].get(scope, {}).get("threshold_reason", "")
            source = "default" if ": default" in said else "asked"
            verdicts[scope] = judge_scope(versus, case["id"], case["backend"], scope, stored["statistic"],
                                          float(asked), source).to_json()
        cases.append({**case, "verdicts": verdicts})
    return {**data, "cases": cases}


def trimmed(data: dict[str, Any], calls: int, pairs: int) -> dict[str, Any]:
    """A report as if its run had taken ``calls`` calls a scope and ``pairs`` pairs: each process's first calls (in the
    order taken) and the first pairs (a ring's neighbours), the rest left out. Only the calls are cut: a figure
    (``value_ms``) stays the whole process's, which the call-by-call pairing does not read."""
    from pytest_rfdetr_latency.measure.headtohead import THIS

    def cut(process: dict[str, Any]) -> dict[str, Any]:
        if process.get("block_size") != 1:
            return process
        return {**process, "blocks_ms": process.get("blocks_ms", [])[:calls],
                "host_blocks_ms": process.get("host_blocks_ms", [])[:calls]}

    cases = []
    for case in data["cases"]:
        entry = case["baseline"]["scopes"]
        baseline = {**case["baseline"], "scopes": {
            scope: {**stored, "processes": [cut(p) for p in stored["processes"][:pairs]]}
            for scope, stored in entry.items()}}
        details = json.loads(json.dumps(case["details"]))
        details["head_to_head"]["processes"][THIS] = min(pairs, details["head_to_head"]["processes"][THIS])
        cases.append({**case, "baseline": baseline, "details": details,
                      "scopes": {scope: cut(taken) for scope, taken in case["scopes"].items()},
                      "processes": [{**p, "scopes": {scope: cut(t) for scope, t in p["scopes"].items()}}
                                    for p in case["processes"][:pairs - 1]]})
    return {**data, "cases": cases}


def ring_seconds(data: dict[str, Any], calls: int, pairs: int) -> float:
    """The seconds the ring would take for ``data``'s cases at ``calls`` calls a scope and ``pairs`` pairs, from what
    the run measured: each process's first calls, plus per call the overhead and per process and scope the warm-up
    of the judged side's first process (its details: sampling seconds beyond its calls, over its calls). The handing
    over of turns is not in it."""
    total = 0.0
    for case in data["cases"]:
        scopes = case["details"].get("scopes", {})
        for scope, taken in case["scopes"].items():
            said = scopes.get(scope, {})
            blocks = taken.get("blocks_ms") or []
            if not said or not blocks or taken.get("block_size") != 1:
                continue
            overhead = max(0.0, float(said["sample_seconds"]) - sum(blocks) / 1000.0) / len(blocks)
            sides = [*case["baseline"]["scopes"][scope]["processes"][:pairs], taken,
                     *(p["scopes"][scope] for p in case["processes"][:pairs - 1])]
            for process in sides:
                taken_calls = process["blocks_ms"][:calls]
                total += sum(taken_calls) / 1000.0 + len(taken_calls) * overhead + float(said["warmup_seconds"])
    return total


def _trimmed_redecided(data: dict[str, Any], calls: int, pairs: int) -> dict[str, Any]:
    return redecide(trimmed(data, calls, pairs))


def trade(args: argparse.Namespace) -> None:
    """Per count of calls and of pairs: the runs' verdicts re-decided on what that would have measured, and the
    ring's seconds it would have taken."""
    rows = []
    whole = _runs(args.folders, "turns", args.tags)  # as measured: each scope's overhead over all its calls
    for calls in args.calls:
        for pairs in args.pairs:
            runs = _runs(args.folders, "turns", args.tags, partial(_trimmed_redecided, calls=calls, pairs=pairs))
            seconds = [ring_seconds(r["data"], calls, pairs) / len(r["data"]["cases"]) for r in whole
                       if r["data"] and r["data"]["cases"]]
            counted = _counted(runs)
            rows.append({"calls": calls, "pairs": pairs, "ring_seconds_per_case_median": _median(seconds),
                         **{k: counted[k] for k in ("comparisons", "false_alarms", "unresolved", "detected", "mdr_pct",
                                                    "pair_noise_pct_median")}})
            print(json.dumps({k: rows[-1][k] for k in ("calls", "pairs", "ring_seconds_per_case_median", "mdr_pct",
                                                       "false_alarms", "detected")}), flush=True)
    text = json.dumps({"what": "head-to-head runs taking turns call by call, re-decided offline by the shipped rule "
                               "on their first calls and pairs (pr_gate.trimmed); not measured as run",
                       "tags": args.tags, "rows": rows}, indent=1) + "\n"
    if args.out:
        Path(args.out).write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    go = commands.add_parser("run")
    go.add_argument("--tag", required=True)
    go.add_argument("--label", default="aa", help="aa, or a name for an injected run (host5, gpu2)")
    go.add_argument("--inject", type=float, default=None, help="percent slowdown of the head side")
    go.add_argument("--inject-on", default="gpu", choices=("gpu", "host"))
    go.add_argument("--processes", type=int, default=4)
    go.add_argument("--work", type=Path, default=DEFAULT_WORK)
    go.add_argument("--out", default=os.environ.get("OUT", str(DEFAULT_WORK / "out")))
    go.add_argument("--timeout", type=float, default=560)
    go.add_argument("--grace", type=float, default=20, help="seconds a stopped run may take to report what it measured")
    go.add_argument("pytest_args", nargs="*")
    total = commands.add_parser("summarize")
    total.add_argument("folders", type=Path, nargs="+")
    total.add_argument("--out", type=Path)
    total.add_argument("--redecide", action="store_true", help="judge every comparison again with this checkout's rule")
    total.add_argument("--mode", choices=("turns", "sequential"), help="only the runs whose pairs ran so")
    total.add_argument("--tags", help="only these runs (comma-separated tags)")
    cut = commands.add_parser("trade", help="re-decide on each run's first calls and pairs: precision against time")
    cut.add_argument("folders", type=Path, nargs="+")
    cut.add_argument("--calls", type=int, nargs="+", default=[150, 100, 75, 50, 30])
    cut.add_argument("--pairs", type=int, nargs="+", default=[4, 3, 2])
    cut.add_argument("--tags", help="only these runs (comma-separated tags)")
    cut.add_argument("--out", type=Path)
    args = parser.parse_args()
    {"run": run, "summarize": summarize, "trade": trade}[args.command](args)


if __name__ == "__main__":
    main()
