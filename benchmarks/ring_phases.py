"""A head-to-head run's phases, from the watch file that benchmarks/h200/watch.sh wrote during it (every 10 s, each
pytest process's CPU time and the GPU's use):

    python benchmarks/ring_phases.py benchmarks/results/pr-gate-h200/aa-t16-1.watch.txt.gz [...]

One line per interval: how many of the run's measuring processes (those running one test node, ``trees/...::``) used
at least 2 s of CPU in it, and their CPU seconds together. Eight active is the processes preparing at once; one to
three is the ring, where one process works at a time (the others wait on a pipe). Resolution 10 s: phases shorter
than that blur into their neighbours.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import re
from pathlib import Path

STAMP = re.compile(r"\d\d:\d\d:\d\d")
ROW = re.compile(r"\s*(\d+)\s+\d+\s+\S+\s+\S+\s+(\S+)\s+\S+\s+\d+\s+(.*)")
ACTIVE_CPU_SECONDS = 2  # in 10 s: a process waiting for its turn uses next to none


def _seconds(clock: str) -> int:
    """``[[dd-]hh:]mm:ss`` as ps prints CPU time, in seconds."""
    days, _, rest = clock.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


def samples(path: Path) -> list[tuple[str, dict[str, int], str]]:
    """(time, CPU seconds per measuring process, the GPU's line) for each stamp of the watch file."""
    out: list[tuple[str, dict[str, int], str]] = []
    with gzip.open(path, "rt") if path.suffix == ".gz" else path.open() as handle:
        lines = handle.read().splitlines()
    for line in lines:
        if STAMP.fullmatch(line):
            out.append((line, {}, ""))
        elif out and (row := ROW.match(line)):
            if "trees/" in row.group(3) and "::" in row.group(3):
                out[-1][1][row.group(1)] = _seconds(row.group(2))
        elif out and "%" in line:
            out[-1] = (out[-1][0], out[-1][1], line.strip())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("watch", type=Path, nargs="+")
    for path in parser.parse_args().watch:
        print(f"== {path.name}")
        taken = samples(path)
        for (_, before, _), (stamp, now, gpu) in itertools.pairwise(taken):
            used = [now[pid] - before[pid] for pid in now if pid in before]
            active = sum(1 for seconds in used if seconds >= ACTIVE_CPU_SECONDS)
            print(f"{stamp}  processes {len(now)}  active {active}  cpu {sum(used):4d} s  gpu {gpu}")


if __name__ == "__main__":
    main()
