"""Where a measuring process's threads run: one placement chosen per run, the same for every process of it.

Launch-bound scopes (forward, iobinding, e2e) time the host as much as the GPU: the thread that launches the kernels
is the measured path, and anything that shares its core (the process's own thread pools, a hyperthread sibling's
work) lands in the figure. A process that picks its own core, or lets its thread pools roam, carries an offset for as
long as it lives. A placement therefore fixes, once per run, in the parent, for every process of both sides:

- ``launch``: the core the launching thread is pinned to while a scope is sampled;
- ``quiet``: that core's hyperthread siblings, kept free of this process's threads;
- ``rest``: the cores every other thread of the process (torch's and ONNX Runtime's pools, the CUDA driver's
  threads) is moved to when sampling starts and again after each warm-up (a pool started lazily inherits the
  launching thread's core);
- ``node``: the launch core's NUMA node, for the record (the process's memory follows its first touch).

Each process reports what it found when it applied the placement (threads moved, threads it could not move), so a
run can show that every process ran where the parent said. Linux only; elsewhere nothing is placed and the report
says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_CPU = Path("/sys/devices/system/cpu")


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """``0-3,8,10-11`` as (0, 1, 2, 3, 8, 10, 11)."""
    cores: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        cores += range(int(low), int(high or low) + 1)
    return tuple(sorted(set(cores)))


def format_cpu_list(cores: Iterable[int]) -> str:
    return ",".join(str(c) for c in sorted(cores))


def siblings(core: int, root: Path = _CPU) -> tuple[int, ...]:
    """The hyperthread siblings of ``core`` (itself excluded), as the kernel lists them; () where unknown."""
    try:
        listed = parse_cpu_list((root / f"cpu{core}" / "topology" / "thread_siblings_list").read_text())
    except (OSError, ValueError):
        return ()
    return tuple(c for c in listed if c != core)


def numa_node(core: int, root: Path = _CPU) -> int | None:
    try:
        names = [p.name for p in (root / f"cpu{core}").iterdir() if p.name.startswith("node")]
    except OSError:
        return None
    nodes = [int(n[4:]) for n in names if n[4:].isdigit()]
    return nodes[0] if nodes else None


@dataclass(frozen=True)
class Placement:
    launch: int
    quiet: tuple[int, ...]
    rest: tuple[int, ...]
    node: int | None = None
    speeds_ms: dict[int, float] = field(default_factory=dict, compare=False)  # the yardstick per core, at choosing

    def to_json(self) -> dict[str, Any]:
        return {"launch": self.launch, "quiet": list(self.quiet), "rest": list(self.rest), "node": self.node,
                "speeds_ms": {str(c): round(v, 4) for c, v in sorted(self.speeds_ms.items())}}


def choose(allowed: Iterable[int], speeds: dict[int, float], root: Path = _CPU) -> Placement | None:
    """The launch core for a run: the fastest by the yardstick among the allowed cores whose siblings are allowed too
    (so that they can be kept quiet), leaving at least one core for the rest; core 0 only when nothing else qualifies
    (the kernel's housekeeping and many interrupts land there). None with fewer than two allowed cores."""
    cores = sorted(set(allowed))
    if len(cores) < 2:
        return None

    def fits(core: int) -> bool:
        quiet = [s for s in siblings(core, root) if s in cores]
        return len(cores) - 1 - len(quiet) >= 1

    candidates = [c for c in cores if c in speeds and fits(c)]
    if not candidates:
        return None
    preferred = [c for c in candidates if c != 0] or candidates
    launch = min(preferred, key=lambda c: speeds[c])
    quiet = tuple(s for s in siblings(launch, root) if s in cores)
    rest = tuple(c for c in cores if c != launch and c not in quiet)
    return Placement(launch, quiet, rest, numa_node(launch, root), dict(speeds))


def core_speeds(cores: Iterable[int] | None = None, repeats: int = 3) -> dict[int, float]:
    """Milliseconds of the host yardstick on each allowed core (the calling thread moves, then comes back). On shared
    cloud hosts one core can run Python ~2x slower than the next (measured on the H200: 1.0 ms on one, 1.9 ms on
    another)."""
    from pytest_rfdetr_latency.measure.environment import host_probe_ms

    if not hasattr(os, "sched_setaffinity"):
        return {}
    allowed = sorted(os.sched_getaffinity(0))
    speeds: dict[int, float] = {}
    try:
        for core in cores if cores is not None else allowed:
            os.sched_setaffinity(0, {core})
            speeds[core] = min(host_probe_ms() for _ in range(repeats))
    finally:
        os.sched_setaffinity(0, allowed)
    return speeds


def choose_for_run() -> Placement | None:
    """Time the yardstick on every allowed core and choose (Linux only)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return choose(os.sched_getaffinity(0), core_speeds())


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return []


def sweep(placement: Placement, keep: int | None = None) -> dict[str, int]:
    """Move every thread of this process but ``keep`` (a thread id: the launching thread) to the rest cores; what
    was moved, and what could not be (a thread that ended meanwhile is neither)."""
    moved = failed = 0
    rest = set(placement.rest)
    for tid in _threads():
        if tid == keep:
            continue
        try:
            if os.sched_getaffinity(tid) != rest:
                os.sched_setaffinity(tid, rest)
                moved += 1
        except ProcessLookupError:
            continue
        except OSError:
            failed += 1
    return {"moved": moved, "failed": failed}


def trespassers(placement: Placement, keep: int) -> list[int]:
    """Threads other than ``keep`` that may still run on the launch core or its siblings."""
    guarded = {placement.launch, *placement.quiet}
    found: list[int] = []
    for tid in _threads():
        if tid == keep:
            continue
        try:
            if os.sched_getaffinity(tid) & guarded:
                found.append(tid)
        except OSError:
            continue
    return found


def apply_at_start(placement: Placement) -> dict[str, Any]:
    """At a process's start: every thread but the launching one to the rest cores. The launching thread keeps every
    core until it samples (the pools it starts meanwhile are moved off the launch core when sampling starts and after
    each warm-up), so that what the process counts as its cores, and the pools it sizes from them, do not change
    with the placement. Returns what was done, for the report."""
    return {"placement": placement.to_json(), **sweep(placement, keep=threading_native_id())}


def threading_native_id() -> int:
    import threading

    return threading.get_native_id()


@contextmanager
def launching_on(placement: Placement | None, facts: dict[str, Any]) -> Iterator[None]:
    """The calling thread on the launch core alone, every other thread on the rest, for the block; then the calling
    thread back to the cores it had. The other threads stay on the rest for the process's life (a pool moved off
    the launch core has no reason to return). ``facts`` gains what a check found (threads moved, any left on
    guarded cores)."""
    if placement is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    me = threading_native_id()
    before = os.sched_getaffinity(me)
    os.sched_setaffinity(me, {placement.launch})
    swept = sweep(placement, keep=me)
    facts["moved"] = facts.get("moved", 0) + swept["moved"]
    facts["failed"] = facts.get("failed", 0) + swept["failed"]
    try:
        yield
    finally:
        left = trespassers(placement, me)
        if left:
            facts["trespassers"] = max(facts.get("trespassers", 0), len(left))
        os.sched_setaffinity(me, before)


def resweep(placement: Placement | None, facts: dict[str, Any]) -> None:
    """After a warm-up (which may have started pools on the launch core): move them off it again."""
    if placement is None or not hasattr(os, "sched_setaffinity"):
        return
    swept = sweep(placement, keep=threading_native_id())
    facts["moved"] = facts.get("moved", 0) + swept["moved"]
    facts["failed"] = facts.get("failed", 0) + swept["failed"]
