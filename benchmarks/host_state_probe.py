"""Is the launching core's slow state the core's (shared by every process on it) or each process's own?

    python benchmarks/host_state_probe.py --out $OUT/host-state-probe.json

Runs short processes, two at a time on one core, each timing the plugin's host yardstick (environment.yardstick_ms)
in a loop; then the same with address-space randomization off (``setarch -R``). Writes each process's yardsticks
and the machine's memory settings. Exploratory: nothing here is used by the plugin.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, os, sys, time
from pytest_rfdetr_latency.measure.environment import yardstick_ms
os.sched_setaffinity(0, {int(sys.argv[1])})
out = []
end = time.perf_counter() + float(sys.argv[2])
while time.perf_counter() < end:
    out.append(round(yardstick_ms(), 4))
    time.sleep(0.002)
print(json.dumps(out))
"""


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--core", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args()
    facts = {name: _read(path) for name, path in {
        "thp": "/sys/kernel/mm/transparent_hugepage/enabled", "numa_balancing": "/proc/sys/kernel/numa_balancing",
        "randomize_va_space": "/proc/sys/kernel/randomize_va_space"}.items()}
    runs = []
    for mode in ("plain", "setarch-R"):
        prefix = ["setarch", os.uname().machine, "-R"] if mode == "setarch-R" and shutil.which("setarch") else []
        for pair in range(args.pairs):
            procs = [subprocess.Popen([*prefix, sys.executable, "-c", CHILD, str(args.core), str(args.seconds)],
                                      stdout=subprocess.PIPE, text=True) for _ in range(2)]
            for index, proc in enumerate(procs):
                values = json.loads(proc.communicate()[0])
                runs.append({"mode": mode, "pair": pair, "process": index, "median": statistics.median(values),
                             "yardsticks": values})
    fastest = min(r["median"] for r in runs)
    for r in runs:
        r["slow_share"] = round(sum(v > 1.25 * fastest for v in r["yardsticks"]) / len(r["yardsticks"]), 3)
        print(r["mode"], r["pair"], r["process"], round(r["median"], 4), r["slow_share"])
    args.out.write_text(json.dumps({"facts": facts, "core": args.core, "runs": runs}))
    print(json.dumps(facts))


if __name__ == "__main__":
    main()
