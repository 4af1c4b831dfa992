"""Where does the per-process offset of launch-bound figures come from, and what controls it?

    python benchmarks/host_offset.py run --out $OUT/host-offset.json [--seconds 480]
    python benchmarks/host_offset.py summarize benchmarks/results/host-offset-h200/host-offset-1.json.gz

Two parts, on the GPU machine (exploratory: nothing here is used by the plugin):

1. **Hidden siblings.** The guest reports one thread per core, but a virtual CPU may share a physical core of the
   host with another virtual CPU of the same machine. For every launch core L and every other core X, a spinning
   process on X and the plugin's host yardstick (environment.yardstick_ms) timed on L, against L with nothing
   spinning: a core whose spinning slows L is L's sibling in all but name. Then a timeline of every core's yardstick,
   idle, to see whether a core's slow state is the core's.
2. **Model processes.** Short processes, one at a time, each building RFDETRMedium (torch-fp16, rfdetr's traced
   network as the plugin's forward scope times it), its launching thread on one launch core chosen once for the run
   and every other thread on the rest. Each records per block: the forward's wall time (10 calls, synchronised), an
   e2e call (``predict``), the yardstick right after the block and a yardstick alone before it. Variants, taken in
   turns so that the session's drift falls on each alike: ``plain``; ``hugetlb`` (glibc's malloc on transparent huge
   pages); ``noaslr`` (``setarch -R``); ``omp1`` (one OpenMP/intra-op thread: no spinning pools); ``sibfree`` (the
   rest cores without L's hidden siblings from part 1); ``witness`` (plain, with a bare process on L timing the
   yardstick between the model process's blocks, to tell the process's state from the core's).

The figure of merit is the spread between processes of one variant (the SD of their log figures), since that is what
a comparison of processes (stored or head to head) pays.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SRC = str(Path(__file__).resolve().parents[1] / "src")
VARIANTS = ("plain", "hugetlb", "noaslr", "omp1", "sibfree", "witness")


def _yardstick(loops: int = 4000) -> float:
    sys.path.insert(0, SRC)
    from pytest_rfdetr_latency.measure.environment import yardstick_ms

    return yardstick_ms(loops)


# ---------------------------------------------------------------------------------------------------------------
# Part 1: hidden siblings and each core's state over time.


def _spinner(core: int, flag: Any) -> None:
    os.sched_setaffinity(0, {core})
    while True:
        value = flag.value
        if value == -2:
            return
        if value == core or value == -3:
            end = time.perf_counter() + 0.002
            while time.perf_counter() < end:
                pass
        else:
            time.sleep(0.0005)


def siblings(cores: list[int], passes: int) -> dict[str, Any]:
    import multiprocessing as mp

    flag = mp.Value("i", -1, lock=False)
    spinners = [mp.Process(target=_spinner, args=(c, flag), daemon=True) for c in cores]
    for p in spinners:
        p.start()
    time.sleep(0.5)

    def timed(launch: int) -> float:
        os.sched_setaffinity(0, {launch})
        return statistics.median(_yardstick(20000) for _ in range(7))

    ratios: dict[str, dict[str, list[float]]] = {}
    idle: dict[str, list[float]] = {}
    all_busy: dict[str, list[float]] = {}
    try:
        for _ in range(passes):
            for launch in cores:
                flag.value = -1
                time.sleep(0.01)
                base = timed(launch)
                idle.setdefault(str(launch), []).append(round(base, 4))
                for other in cores:
                    if other == launch:
                        continue
                    flag.value = other
                    time.sleep(0.005)
                    ratios.setdefault(str(launch), {}).setdefault(str(other), []).append(round(timed(launch) / base, 4))
                flag.value = -3  # every spinner, the launch core's own included: a crowded machine
                time.sleep(0.005)
                all_busy.setdefault(str(launch), []).append(round(timed(launch) / base, 4))
        flag.value = -1
        timeline = _timeline(cores, seconds=8.0)
    finally:
        flag.value = -2
        for p in spinners:
            p.join(timeout=2)
            if p.is_alive():
                p.kill()
    found = {L: sorted((int(X) for X, r in row.items() if statistics.median(r) > 1.25), key=int)
             for L, row in ratios.items()}
    return {"idle_ms": idle, "ratio_with_spinner": ratios, "ratio_all_busy": all_busy, "siblings": found,
            "timeline": timeline}


def _timeline(cores: list[int], seconds: float) -> dict[str, Any]:
    """Every core's yardstick in turn, idle, for ``seconds``: (time, core, ms) rows."""
    rows = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for core in cores:
            os.sched_setaffinity(0, {core})
            rows.append((round(time.perf_counter() - start, 4), core, round(_yardstick(), 4)))
        time.sleep(0.01)
    return {"rows": rows}


# ---------------------------------------------------------------------------------------------------------------
# Part 2: model processes.

CHILD = r"""
import gc, json, os, statistics, sys, time
launch, rest, seconds, model_name, variant, device = (int(sys.argv[1]), {int(c) for c in sys.argv[2].split(',')},
                                                      float(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6])
os.sched_setaffinity(0, rest)  # every thread started from here on inherits the rest cores
sys.path.insert(0, sys.argv[7])
t0 = time.perf_counter()
import torch
from pytest_rfdetr_latency.measure import models
from pytest_rfdetr_latency.measure.environment import yardstick_ms, steal_jiffies
if variant == "omp1":
    torch.set_num_threads(1)
model = models.build_model(model_name, device)
dtype = torch.float16 if device == "cuda" else torch.float32
models.optimize(model, dtype, compile=True, batch_size=1)
net = models.optimized_module(model)
res = models.resolution_of(model)
x = torch.randn(1, 3, res, res, device=device, dtype=dtype)
from PIL import Image
import numpy as np
rng = np.random.default_rng(0)
image = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
prepared_s = time.perf_counter() - t0
os.sched_setaffinity(0, {launch})  # the calling (launching) thread alone
with torch.inference_mode():
    for _ in range(30):
        net(x); sync()
for _ in range(3):
    model.predict(image, threshold=0.5)
gc.collect(); gc.disable()
blocks = []
steal0 = steal_jiffies()
end = time.perf_counter() + seconds
while time.perf_counter() < end:
    time.sleep(0.003)
    alone = yardstick_ms()
    calls = []
    with torch.inference_mode():
        for _ in range(10):
            a = time.perf_counter_ns(); net(x); sync(); calls.append((time.perf_counter_ns() - a) / 1e6)
    after = yardstick_ms()
    a = time.perf_counter_ns(); model.predict(image, threshold=0.5); sync(); e2e = (time.perf_counter_ns() - a) / 1e6
    blocks.append({"t": round(time.time(), 4), "alone": round(alone, 4), "forward": round(statistics.median(calls), 4),
                   "after": round(after, 4), "e2e": round(e2e, 4)})
steal1 = steal_jiffies()
print("RESULT " + json.dumps({"prepared_s": round(prepared_s, 2), "steal": None if steal0 is None else steal1 - steal0,
                              "threads": len(os.listdir('/proc/self/task')), "blocks": blocks}))
"""

WITNESS = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[3])
from pytest_rfdetr_latency.measure.environment import yardstick_ms
os.sched_setaffinity(0, {int(sys.argv[1])})
end = time.perf_counter() + float(sys.argv[2])
while time.perf_counter() < end:
    print(json.dumps((round(time.time(), 4), round(yardstick_ms(), 4))), flush=True)  # killed at any time
    time.sleep(0.004)
"""


def _child(variant: str, launch: int, rest: list[int], seconds: float, model: str, device: str,
           timeout: float) -> dict[str, Any]:
    env = dict(os.environ, PYTHONHASHSEED="0")
    prefix: list[str] = []
    if variant == "hugetlb":
        env["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"
    elif variant == "noaslr" and shutil.which("setarch"):
        prefix = ["setarch", os.uname().machine, "-R"]
    elif variant == "omp1":
        env["OMP_NUM_THREADS"] = "1"
    argv = [*prefix, sys.executable, "-c", CHILD, str(launch), ",".join(map(str, rest)), str(seconds), model,
            variant, device, SRC]
    started = time.time()
    witness = None
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if variant == "witness":
        sink = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed below; a pipe would fill and stop the witness)
        witness = subprocess.Popen([sys.executable, "-c", WITNESS, str(launch), str(timeout), SRC], stdout=sink,
                                   text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    record: dict[str, Any] = {"variant": variant, "launch": launch, "started": round(started, 3), "prefix": prefix,
                              "seconds": round(time.time() - started, 2), "rc": proc.returncode}
    if witness is not None:
        witness.kill()
        witness.wait()
        sink.seek(0)
        w_out = sink.read()
        sink.close()
        record["witness"] = [json.loads(ln) for ln in w_out.splitlines() if ln.endswith("]")]
    line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        record["error"] = err[-2000:]
    else:
        record.update(json.loads(line[len("RESULT "):]))
    return record


def run(args: argparse.Namespace) -> None:
    started = time.time()
    cores = sorted(os.sched_getaffinity(0))
    facts = {"cores": cores, "python": sys.version.split()[0], "uname": os.uname().release}
    for name, path in {"thp": "/sys/kernel/mm/transparent_hugepage/enabled",
                       "randomize_va_space": "/proc/sys/kernel/randomize_va_space"}.items():
        try:
            facts[name] = Path(path).read_text().strip()
        except OSError:
            facts[name] = None
    part1 = siblings(cores, passes=args.passes) if not args.skip_siblings else {"siblings": {}, "idle_ms": {}}
    print("siblings:", json.dumps(part1["siblings"]), flush=True)
    idle = {int(c): statistics.median(v) for c, v in part1.get("idle_ms", {}).items()}
    launch = min(idle, key=lambda c: idle[c]) if idle else cores[-1]
    rest = [c for c in cores if c != launch]
    hidden = set(part1["siblings"].get(str(launch), []))
    record: dict[str, Any] = {"facts": facts, "siblings": part1, "launch": launch, "processes": []}

    def save() -> None:
        with gzip.open(args.out, "wt") as handle:
            json.dump(record, handle)

    save()
    deadline = started + args.seconds
    variants = [v for v in args.variants.split(",") if v]
    round_ = 0
    while True:
        for variant in variants:
            if time.time() + args.child_seconds + 25 > deadline:
                save()
                print(f"stopped at the deadline after {len(record['processes'])} processes", flush=True)
                return
            keep = [c for c in rest if c not in hidden] if variant == "sibfree" else rest
            rec = _child(variant, launch, keep or rest, args.child_seconds, args.model, args.device,
                         timeout=args.child_seconds + 90)
            rec["round"] = round_
            if variant == "sibfree":
                rec["hidden_siblings_left_out"] = sorted(hidden)
            record["processes"].append(rec)
            blocks = rec.get("blocks") or []
            if blocks:
                print(variant, round_, rec["seconds"], "fwd", round(statistics.median(b["forward"] for b in blocks), 3),
                      "e2e", round(statistics.median(b["e2e"] for b in blocks), 3),
                      "after", round(statistics.median(b["after"] for b in blocks), 4),
                      "alone", round(statistics.median(b["alone"] for b in blocks), 4), flush=True)
            else:
                print(variant, round_, "failed", rec.get("error", "")[-600:], flush=True)
            save()
        round_ += 1


# ---------------------------------------------------------------------------------------------------------------
# Offline: the spread between processes per variant.


def _sd_log(values: list[float]) -> float | None:
    logs = [math.log(v) for v in values if v > 0]
    return statistics.stdev(logs) * 100 if len(logs) >= 2 else None


def _witnessed(process: dict[str, Any]) -> dict[str, Any]:
    """The bare witness's yardstick on the launch core within 50 ms of each block, against the model process's own
    yardstick after that block: if the slow state were the core's, both would be slow together."""
    rows = process.get("witness") or []
    pairs = []
    for block in process["blocks"]:
        near = [ms for t, ms in rows if abs(t - block["t"]) < 0.05]
        if near:
            pairs.append((block["after"], statistics.median(near)))
    if not pairs:
        return {"pairs": 0}
    return {"pairs": len(pairs), "process_after_ms": round(statistics.median(a for a, _ in pairs), 4),
            "witness_ms": round(statistics.median(w for _, w in pairs), 4),
            "rows": [[round(a, 4), round(w, 4)] for a, w in pairs]}


def _cores(part1: dict[str, Any]) -> dict[str, Any]:
    """Part 1 in numbers: a sibling would slow its launch core in every pass; the timeline's share of fast readings
    per core (fast: under 1.25x the run's tenth percentile) and how many cores were fast at once."""
    ratios = part1.get("ratio_with_spinner", {})
    steady = {L: {X: min(r) for X, r in row.items() if min(r) > 1.15} for L, row in ratios.items()}
    rows = part1.get("timeline", {}).get("rows", [])
    out: dict[str, Any] = {"siblings_by_median_rule": part1.get("siblings"),
                           "slowed_in_every_pass_over_1_15x": {L: v for L, v in steady.items() if v},
                           "idle_ms_per_pass": part1.get("idle_ms")}
    if rows:
        values = sorted(ms for _, _, ms in rows)
        fast = 1.25 * values[len(values) // 10]
        per_core: dict[int, list[bool]] = {}
        for _, core, ms in rows:
            per_core.setdefault(core, []).append(ms < fast)
        count = len(per_core)
        sweeps = [rows[i:i + count] for i in range(0, len(rows) - count + 1, count)]
        at_once = [sum(ms < fast for _, _, ms in sweep) for sweep in sweeps]
        runs = [len(run) for flags in per_core.values() for run in "".join("f" if f else "s" for f in flags).split("s")
                if run]
        out["timeline"] = {
            "readings": len(rows), "seconds": rows[-1][0],
            "sweep_ms": round(1000 * rows[-1][0] / max(1, len(sweeps)), 1),
            "p10_ms": values[len(values) // 10], "median_ms": values[len(values) // 2], "fast_below_ms": round(fast, 4),
            "fast_share_per_core": {c: round(sum(f) / len(f), 3) for c, f in sorted(per_core.items())},
            "fast_cores_at_once": {"min": min(at_once), "median": statistics.median(at_once), "max": max(at_once),
                                   "sweeps_with_none": sum(n == 0 for n in at_once), "sweeps": len(at_once)},
            "fast_spell_sweeps": {"median": statistics.median(runs), "max": max(runs)} if runs else None,
        }
    return out


def summarize(args: argparse.Namespace) -> None:
    with gzip.open(args.path, "rt") as handle:
        record = json.load(handle)
    out: dict[str, Any] = {"launch": record["launch"], "cores": _cores(record["siblings"]), "variants": {}}
    for variant in VARIANTS:
        procs = [p for p in record["processes"] if p["variant"] == variant and p.get("blocks")]
        if not procs:
            continue
        row: dict[str, Any] = {"processes": len(procs)}
        for key in ("forward", "e2e", "after", "alone"):
            medians = [statistics.median(b[key] for b in p["blocks"]) for p in procs]
            row[key] = {"median_ms": round(statistics.median(medians), 4), "sd_between_pct": _sd_log(medians),
                        "per_process": [round(m, 4) for m in medians]}
        row["steal_jiffies"] = [p.get("steal") for p in procs]
        row["threads"] = [p.get("threads") for p in procs]
        row["prepare_seconds"] = [p.get("prepared_s") for p in procs]
        if variant == "witness":
            row["witness_vs_process"] = [_witnessed(p) for p in procs]
        out["variants"][variant] = row
    text = json.dumps(out, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--seconds", type=float, default=480.0, help="stop starting processes after this")
    r.add_argument("--child-seconds", type=float, default=4.0)
    r.add_argument("--passes", type=int, default=3)
    r.add_argument("--model", default="RFDETRMedium")
    r.add_argument("--device", default="cuda")
    r.add_argument("--variants", default=",".join(VARIANTS))
    r.add_argument("--skip-siblings", action="store_true")
    s = sub.add_parser("summarize")
    s.add_argument("path", type=Path)
    s.add_argument("--out", type=Path)
    args = parser.parse_args()
    run(args) if args.command == "run" else summarize(args)


if __name__ == "__main__":
    main()
