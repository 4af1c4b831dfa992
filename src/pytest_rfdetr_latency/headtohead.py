"""Head to head: the same cases measured in this environment and in another interpreter's, in alternating fresh
processes on the same device, so that both sides meet the same host, clocks and slow spells.

The order is balanced, this-other, other-this, this-other... (ABBA...): a drift over the minutes of the run (the
host warming, a neighbour starting) then falls on both sides alike instead of on the later one. Every process is a
fresh pytest process measuring every selected case in an order rotated by its place on its side; the first one's
block sizes are given to all the others. This side's processes stand in for a baseline (baselines.entry_from_
processes) and the other side's are judged against them by the verdict that judges a check (runner.py). Nothing is
read from or written to a baseline file.
"""

from __future__ import annotations

import dataclasses
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_rfdetr_latency.processes import Launch, child_settings, run_child
from pytest_rfdetr_latency.settings import Settings

if TYPE_CHECKING:
    from pytest_rfdetr_latency.session import LatencySession

THIS, OTHER = "this", "other"
VERSION_FIELDS = ("python", "torch", "onnxruntime", "onnxruntime_build", "rfdetr", "cuda", "cudnn", "driver")


class HeadToHeadError(RuntimeError):
    """The other interpreter cannot run the cases; the message says what to install or fix there."""


def order(count: int) -> list[str]:
    """Which side each process belongs to: this-other, other-this, ... ``count`` processes per side."""
    sides: list[str] = []
    for pair in range(count):
        sides += [THIS, OTHER] if pair % 2 == 0 else [OTHER, THIS]
    return sides


def check_interpreter(python: Path, timeout: float = 120) -> dict[str, str]:
    """What ``python`` has of pytest and this plugin; a clear error when either is missing there."""
    probe = ("import importlib.metadata as m, sys; import pytest, pytest_rfdetr_latency; "
             "print(sys.version.split()[0]); print(m.version('pytest-rfdetr-latency'))")
    try:
        done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=timeout,
                              check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise HeadToHeadError(f"--rfdetr-against {python} could not be run: {exc}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise HeadToHeadError(
            f"--rfdetr-against {python} cannot import pytest and pytest_rfdetr_latency ({last}): install the plugin "
            f"in that environment, e.g. {python} -m pip install pytest-rfdetr-latency"
        )
    lines = done.stdout.split()
    found = {"python": lines[0], "plugin": lines[1]} if len(lines) >= 2 else {}
    from importlib.metadata import version

    mine = version("pytest-rfdetr-latency")
    if found.get("plugin") != mine:
        # The other side gets this side's settings as they are (processes.py): another version may read them otherwise.
        raise HeadToHeadError(
            f"--rfdetr-against {python} has pytest-rfdetr-latency {found.get('plugin', '(unknown)')} and this "
            f"environment {mine}: install the same version there, e.g. {python} -m pip install "
            f"pytest-rfdetr-latency=={mine}"
        )
    return found


@dataclass
class HeadToHead:
    """Every process's results, per side and case, in the order they were measured."""

    python: Path
    sides: list[str] = field(default_factory=list)
    results: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=lambda: {THIS: {}, OTHER: {}})
    errors: dict[str, list[str]] = field(default_factory=lambda: {THIS: [], OTHER: []})

    def of(self, side: str, case_id: str) -> list[dict[str, Any]]:
        return self.results[side].get(case_id, [])

    def entries(self, commit: str | None) -> dict[str, dict[str, Any]]:
        """This side's processes of each case as a baseline entry: what the other side is judged against."""
        from pytest_rfdetr_latency.baselines import entry_from_processes

        return {case: entry_from_processes(results, commit) for case, results in self.results[THIS].items()
                if results}

    def versions(self, side: str) -> dict[str, Any]:
        """The versions a side ran with, from the fingerprint of its first result."""
        for results in self.results[side].values():
            if results:
                fingerprint = results[0].get("fingerprint") or {}
                return {key: fingerprint.get(key) for key in VERSION_FIELDS if key in fingerprint}
        return {}


def measure(
    launch: Launch,
    targets: Sequence[str],
    settings: Settings,
    cache_dir: Path,
    progress: Callable[[str], None] = lambda text: None,
    timeout: float = 3600,
) -> HeadToHead:
    """Run ``targets`` in ``settings.against_processes`` fresh processes per side, alternating sides."""
    assert settings.against is not None
    with tempfile.TemporaryDirectory(prefix="rfdetr-latency-no-baselines-") as empty:
        # A side's processes read no baseline file: block sizes come from the first process, nothing else is needed.
        reading_none = dataclasses.replace(settings, baseline_dir=Path(empty))
        outcome = HeadToHead(settings.against, order(settings.against_processes))
        counts = {THIS: 0, OTHER: 0}
        sizes: dict[str, dict[str, int]] = {}
        for number, side in enumerate(outcome.sides, start=1):
            python = settings.against if side == OTHER else None
            progress(f"head to head: process {number} of {len(outcome.sides)}, {side} side"
                     + (f" ({python})" if python else "") + f", {len(targets)} test(s)")
            child = child_settings(reading_none, process_index=counts[side], cache_dir=cache_dir,
                                   inject=settings.inject if side == OTHER else None, block_sizes=sizes)
            counts[side] += 1
            done = run_child(dataclasses.replace(launch, python=python), targets, child, timeout=timeout)
            if done.error:
                outcome.errors[side].append(f"process {number} ({side} side): {done.error}")
            for result in done.results:
                if not result.get("scopes"):
                    continue
                outcome.results[side].setdefault(result["id"], []).append(result)
                sizes.setdefault(result["id"], {s: int(v["block_size"]) for s, v in result["scopes"].items()})
    return outcome


def measure_for(
    session: LatencySession, launch: Launch, targets: Sequence[str], progress: Callable[[str], None]
) -> HeadToHead:
    """Measure both sides for ``session`` and make this side's processes the entries its cases are judged against."""
    outcome = measure(launch, targets, session.settings, session.cache_dir, progress)
    session.use_entries(outcome.entries(session.commit),
                        f"this environment's {session.settings.against_processes} processes (head to head)")
    return outcome
