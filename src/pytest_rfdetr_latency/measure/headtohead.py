"""Head to head: the same cases measured in this environment and in another interpreter's, on the same device,
so that both sides meet the same host, clocks and slow spells.

Processes come in pairs, one per side. By default the processes of up to AT_ONCE pairs are live at once (lockstep.py):
they import, build and prepare each case together, then take turns block by block, in their balanced order, while
they sample it: only one samples at a time and nothing prepares meanwhile, and a host state that lasts longer than a
block falls on both sides of a pair.
With ``--rfdetr-against-sequential`` the processes run one after the other in a balanced order, this-other,
other-this, ... (ABBA), so that a drift over the minutes of the run falls on both sides alike. Every process is a
fresh pytest process measuring every selected case; the first one to size a case's scope sets its block size for
all. This side's processes stand in for a baseline (baselines.entry_from_processes) and the other side's are judged
against them pair by pair (judge_scope, paired.py). Nothing is read from or written to a baseline file.

The other side may be another checkout (``--rfdetr-against-tree``: the pull request, judged from its merge base's
checkout): its processes
run there, with its own tests and code, and without this side's ``PYTHONPATH``. Before measuring, both sides say
where they import rfdetr, torch, onnxruntime and the plugin from; sides that import every one of them from the same
files and collect the same tests compare nothing, and are refused unless the run is declared A/A. Every process of
both sides runs its threads where the parent placed them once for the run (placement.py), with the same
``PYTHONHASHSEED``; the verdict is paired.py's.
"""

from __future__ import annotations

# Over 350 lines on purpose: the other side's interpreter end to end: its probe, provenance, processes and their order;
# the verdict is paired.py's.
import dataclasses
import math
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_rfdetr_latency.measure.placement import Placement
from pytest_rfdetr_latency.measure.processes import (
    Child,
    ChildOutcome,
    Launch,
    Stopped,
    child_settings,
    run_child,
    run_in_turns,
)
from pytest_rfdetr_latency.measure.sampling import PRESETS, SamplingPlan
from pytest_rfdetr_latency.measure.settings import Settings
from pytest_rfdetr_latency.verdict.judge import Verdict, median
from pytest_rfdetr_latency.verdict.scopes import HEAD_TO_HEAD_RESOLVE, HOST_BOUND

if TYPE_CHECKING:
    from pytest_rfdetr_latency.measure.results import CaseResult
    from pytest_rfdetr_latency.measure.session import LatencySession

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


# What each side's imports are compared on: if all of these and the tests resolve to the same files, the sides are one.
PROVENANCE = ("rfdetr", "torch", "onnxruntime", "pytest_rfdetr_latency")
HASH_SEED = "0"  # every process of both sides hashes strings alike (dict layouts, set orders)
# Taking turns, pairs started at once (both processes of each): they prepare in parallel and share one ring of turns
# (lockstep.py). Four pairs are eight processes, each holding torch, its models and a CUDA context.
AT_ONCE = 4


def provenance(modules: Sequence[str] = PROVENANCE) -> dict[str, str | None]:
    """Where this interpreter imports each of ``modules`` from (None: not importable)."""
    import importlib.util

    found: dict[str, str | None] = {}
    for name in modules:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        found[name] = None if spec is None or spec.origin is None else str(Path(spec.origin).resolve())
    return found


def child_environment(side: str, base: Mapping[str, str]) -> dict[str, str]:
    """The environment of a side's processes: the same hash seed on both sides; the other side without this side's
    PYTHONPATH (its own environment and tree decide what it imports)."""
    env = dict(base)
    env.setdefault("PYTHONHASHSEED", HASH_SEED)
    if side == OTHER:
        env.pop("PYTHONPATH", None)
    return env


def check_interpreter(python: Path, timeout: float = 120, tree: Path | None = None) -> dict[str, Any]:
    """What ``python`` has of pytest and this plugin, and where it imports the compared packages from (run in
    ``tree`` with the other side's environment); a clear error when pytest or the plugin is missing there."""
    import json as _json

    probe = ("import importlib.metadata as m, sys, json; import pytest, pytest_rfdetr_latency; "
             "from pytest_rfdetr_latency.measure.headtohead import provenance; "
             "print(sys.version.split()[0]); print(m.version('pytest-rfdetr-latency')); "
             "print(json.dumps(provenance()))")
    try:
        done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=timeout,
                              check=False, cwd=tree, env=child_environment(OTHER, os.environ))
    except (OSError, subprocess.SubprocessError) as exc:
        raise HeadToHeadError(f"--rfdetr-against {python} could not be run: {exc}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise HeadToHeadError(
            f"--rfdetr-against {python} cannot import pytest and pytest_rfdetr_latency ({last}): install the plugin "
            f"in that environment, e.g. {python} -m pip install pytest-rfdetr-latency"
        )
    lines = done.stdout.splitlines()
    found: dict[str, Any] = {"python": lines[0], "plugin": lines[1]} if len(lines) >= 2 else {}
    if len(lines) >= 3:
        found["provenance"] = _json.loads(lines[2])
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


def same_code(mine: Mapping[str, str | None], theirs: Mapping[str, str | None], this_tree: Path,
              other_tree: Path | None) -> list[str]:
    """What both sides share: the compared modules imported from the same file, and the same tests (one tree).
    Everything shared means the run compares nothing."""
    shared = [f"{name} from {path}" for name, path in mine.items() if path is not None and theirs.get(name) == path]
    if len(shared) < sum(1 for path in mine.values() if path is not None):
        return []
    if other_tree is not None and other_tree.resolve() != this_tree.resolve():
        return []
    return [*shared, f"the tests of {this_tree}"]


@dataclass
class HeadToHead:
    """Every process's results, per side and case, in the order they were measured."""

    python: Path
    sides: list[str] = field(default_factory=list)
    results: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=lambda: {THIS: {}, OTHER: {}})
    errors: dict[str, list[str]] = field(default_factory=lambda: {THIS: [], OTHER: []})
    # Per side, the pair of each error in ``errors`` (forget_pairs).
    _error_pairs: dict[str, list[int]] = field(default_factory=lambda: {THIS: [], OTHER: []}, init=False,
                                               repr=False, compare=False)
    tree: Path | None = None  # the other side's checkout
    placement: dict[str, Any] | None = None  # where every process's threads ran (placement.Placement.to_json)
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)  # per side: where it imported from
    aa: bool = False
    left_out: dict[int, str] = field(default_factory=dict)  # pair index: why it is not judged
    in_turns: bool = False  # up to AT_ONCE pairs at once, both processes each, taking turns (lockstep.py)
    turns: dict[int, dict[str, int]] = field(default_factory=dict)  # pair index: turns each side handed back
    # Taking turns, per case and scope: the pairs left out because their log ratio stands apart (paired.strays).
    strays: dict[tuple[str, str], dict[int, str]] = field(default_factory=dict)
    _strays_found: set[tuple[str, str]] = field(default_factory=set, init=False, repr=False, compare=False)
    # ... and their log ratios drawn in (paired.DRAW_K), pooled into the noise in their place.
    _drawn: dict[tuple[str, str], list[float]] = field(default_factory=dict, init=False, repr=False, compare=False)
    added: list[dict[str, Any]] = field(default_factory=list)  # pairs added while comparisons were unresolved
    may_grow: bool = False  # pairs may be added (grow): every comparison is judged at paired.GROWING_Z
    # Ctrl-C or SIGTERM while the processes took turns: why, and which pairs were running. Each case is judged on the
    # pairs that finished it; a stop while growing forgets the added pairs (forget_pairs).
    stopped: dict[str, Any] | None = None
    # Profiles one case on both sides, one more fresh process each, once its verdict is decided (measure sets it).
    profiler: Callable[[str, str, Mapping[str, int]], dict[str, ChildOutcome]] | None = field(
        default=None, repr=False, compare=False)

    @property
    def decide_z(self) -> float:
        from pytest_rfdetr_latency.verdict.judge import DECIDE_Z
        from pytest_rfdetr_latency.verdict.paired import GROWING_Z

        return GROWING_Z if self.may_grow else DECIDE_Z

    def of(self, side: str, case_id: str) -> list[dict[str, Any]]:
        return self.results[side].get(case_id, [])

    def figures(self, side: str, case_id: str, scope: str) -> dict[int, float]:
        """A case's figure of ``scope`` per process index of ``side``."""
        return {int(r["process_index"]): float(r["scopes"][scope]["value_ms"]) for r in self.of(side, case_id)
                if scope in r.get("scopes", {})}

    def _pairs(self, case_id: str, scope: str) -> dict[int, tuple[float, float]]:
        """Both sides' figures of each pair that both measured and that is not left out as a whole, by pair index."""
        mine, theirs = self.figures(THIS, case_id, scope), self.figures(OTHER, case_id, scope)
        return {k: (mine[k], theirs[k]) for k in sorted(mine.keys() & theirs.keys()) if k not in self.left_out}

    def paired(self, case_id: str, scope: str) -> tuple[list[float], list[float]]:
        """Both sides' figures of the pairs that both measured and that are not left out, in pair order."""
        stray = self._left_out(case_id, scope)
        kept = [pair for k, pair in self._pairs(case_id, scope).items() if k not in stray]
        return [a for a, _ in kept], [b for _, b in kept]

    def ratios(self, case_id: str, scope: str) -> tuple[list[float], bool]:
        """The log ratio of each pair that paired() keeps, in pair order, and whether every one was taken call by
        call (_ratios)."""
        stray = self._left_out(case_id, scope)
        kept = [found for k, found in self._ratios(case_id, scope).items() if k not in stray]
        return [ratio for ratio, _ in kept], bool(kept) and all(by_calls for _, by_calls in kept)

    def _left_out(self, case_id: str, scope: str) -> Mapping[int, str]:
        """The pairs of ``case_id``'s ``scope`` left out as strays (sought once per backend and scope), and why."""
        self._find_strays(self._backend(case_id), scope)
        return self.strays.get((case_id, scope), {})

    def _ratios(self, case_id: str, scope: str) -> dict[int, tuple[float, bool]]:
        """Each pair's ln(other / this) by pair index, and whether it was taken call by call: taking turns one call a
        block, call against call (paired.call_ratio); else, or with too few calls, the two figures' log ratio. Pairs
        with a figure that is not positive have none."""
        from pytest_rfdetr_latency.verdict.paired import call_ratio

        mine, theirs = (self._calls(side, case_id, scope) for side in (THIS, OTHER))
        found: dict[int, tuple[float, bool]] = {}
        for k, (a, b) in self._pairs(case_id, scope).items():
            # Only calls of the same case in the same ring (lockstep.join's count) ran a turn apart.
            same_ring = self.in_turns and k in mine and k in theirs and mine[k][0] == theirs[k][0]
            by_calls = call_ratio(mine[k][1], theirs[k][1]) if same_ring else None
            if by_calls is not None:
                found[k] = (by_calls, True)
            elif a > 0 and b > 0:
                found[k] = (math.log(b / a), False)
        return found

    def _calls(self, side: str, case_id: str, scope: str) -> dict[int, tuple[int | None, list[float]]]:
        """Per process index of ``side``: the ring the process sampled the case in (details.ring_case) and the calls
        of ``scope`` in the order taken, where its blocks were one call each and none was dropped (a dropped block
        would put every later call of one side a round behind the other's)."""
        found = {}
        for r in self.of(side, case_id):
            taken = r.get("scopes", {}).get(scope) or {}
            if taken.get("block_size") == 1 and taken.get("blocks_ms") and not taken.get("dropped_blocks"):
                ring = (r.get("details") or {}).get("ring_case")
                found[int(r["process_index"])] = (ring, [float(block) for block in taken["blocks_ms"]])
        return found

    def _backend(self, case_id: str) -> str | None:
        runs = self.of(THIS, case_id) or self.of(OTHER, case_id)
        return runs[0].get("backend") if runs else None

    def _cases_of(self, backend: str | None) -> list[str]:
        return [case_id for case_id in self.results[THIS] if self._backend(case_id) == backend]

    def _find_strays(self, backend: str | None, scope: str) -> None:
        """Taking turns, leave out the pairs whose log ratio stands apart from their case's others (paired.strays,
        over every case of ``backend`` and ``scope``), once per backend and scope."""
        if not self.in_turns or (str(backend), scope) in self._strays_found:
            return
        from pytest_rfdetr_latency.verdict.paired import strays

        self._strays_found.add((str(backend), scope))
        cases = self._cases_of(backend)
        # Only pairs with a ratio, so that a stray's index names its own pair.
        indexed = {case_id: self._ratios(case_id, scope) for case_id in cases}
        groups = [[ratio for ratio, _ in pairs.values()] for pairs in indexed.values()]
        for case_id, pairs, found in zip(cases, indexed.values(), strays(groups, scope)):
            keys = list(pairs)
            if found:
                self.strays[(case_id, scope)] = {keys[i]: f"pair {keys[i] + 1} left out: {why}" for i, why, _ in found}
                self._drawn[(case_id, scope)] = [drawn for _, _, drawn in found]

    def noise(self, backend: str, scope: str) -> tuple[float | None, int]:
        """One pair's log-ratio noise for ``scope``, pooled over the cases of ``backend`` (paired.py), the pairs left
        out drawn in (paired.strays)."""
        from pytest_rfdetr_latency.verdict.paired import pooled_noise

        return pooled_noise([*self.ratios(case_id, scope)[0], *self._drawn.get((case_id, scope), [])]
                            for case_id in self._cases_of(backend))

    def unresolved(self, settings: Settings) -> list[str]:
        """The comparisons (case and scope) whose line is still coarser than what they must resolve, at the run's
        tolerances (a marker's own is not known before its case runs). The line depends on the pairs' noise alone,
        never on the change they measure; a run that may grow draws it at paired.GROWING_Z, since stopping when the
        spread turns small would otherwise let spreads that understate the noise raise the false alarms."""
        from pytest_rfdetr_latency.verdict.scopes import HEAD_TO_HEAD_THRESHOLDS

        found = []
        for case_id in self.results[THIS]:
            for scope, default in HEAD_TO_HEAD_THRESHOLDS.items():
                if not self.paired(case_id, scope)[0]:
                    continue
                asked = settings.tolerance.for_scope(scope, default)
                detail = judge_scope(self, case_id, str(self._backend(case_id)), scope, "", asked).detail
                if detail["detectable"] is None or detail["detectable"] > detail["resolve"]:
                    found.append(f"{case_id} {scope}")
        return found

    def settle(self) -> None:
        """One after the other, the reference side's processes standing apart are left out (leave_out_apart), sought
        again over every pair measured so far; taking turns, a pair already shares the host's moments, and there the
        rule only cost pairs (docs/pr-gate.md)."""
        if not self.in_turns:
            self.left_out.clear()
            self.leave_out_apart(HOST_BOUND)

    def forget_strays(self) -> None:
        """New pairs: the stray pairs are sought again over all of them."""
        self.strays.clear()
        self._strays_found.clear()
        self._drawn.clear()

    def leave_out_apart(self, scopes: Sequence[str]) -> None:
        """Find processes of this side (the reference) whose launch-bound figures stand apart from the rest of it
        (paired.apart) and leave their pairs out, while at least two pairs remain; the report says which and why.
        The judged side's processes are never left out: a change that slows some of its processes is the change's."""
        from pytest_rfdetr_latency.verdict.paired import apart, offsets

        pairs = len(self.sides) // 2
        side = THIS
        series: dict[str, list[float]] = {}
        for case_id in self.results[side]:
            for scope in scopes:
                values = self.figures(side, case_id, scope)
                if len(values) == pairs:
                    series[f"{case_id}/{scope}"] = [values[k] for k in range(pairs)]
        found = offsets(series)
        for index in apart(found):
            if pairs - len(self.left_out) <= 2:
                break
            away = found[index] - median([o for i, o in enumerate(found) if i != index])
            self.left_out.setdefault(index, (
                f"pair {index + 1} left out: the {side} side's process {index + 1} stands {away * 100:+.1f}% apart "
                f"from its side's others over its {len(series)} launch-bound figures"))

    def placement_problems(self) -> list[str]:
        """Every measured case of every process reports where its threads ran while sampling: those that could not
        move a thread, or found one left on the launch core or its siblings."""
        found = []
        for side in (THIS, OTHER):
            for case_id, runs in self.results[side].items():
                for run in runs:
                    checked = ((run.get("details") or {}).get("placement") or {}).get("during_sampling") or {}
                    if checked.get("failed") or checked.get("trespassers"):
                        found.append(f"{side} side's process {int(run['process_index']) + 1}, {case_id}: "
                                     f"{checked.get('failed', 0)} thread(s) not moved, {checked.get('trespassers', 0)} "
                                     "left on the guarded cores")
        return found

    def entries(self, commit: str | None) -> dict[str, dict[str, Any]]:
        """This side's processes of each case as a baseline entry: what the other side is judged against."""
        from pytest_rfdetr_latency.store.baselines import entry_from_processes

        return {case: entry_from_processes(results, commit) for case, results in self.results[THIS].items()
                if results}

    def versions(self, side: str) -> dict[str, Any]:
        """The versions a side ran with, from the fingerprint of its first result."""
        for results in self.results[side].values():
            if results:
                fingerprint = results[0].get("fingerprint") or {}
                return {key: fingerprint.get(key) for key in VERSION_FIELDS if key in fingerprint}
        return {}

    def keep(self, side: str, index: int, number: int, done: ChildOutcome) -> None:
        """What the ``number``-th process (of pair ``index``, on ``side``) measured, and its error if it had one."""
        if done.error:
            self.errors[side].append(f"process {number} ({side} side): {done.error}")
            self._error_pairs[side].append(index)
        for result in done.results:
            if not result.get("scopes"):
                continue
            result["process_index"] = index
            self.results[side].setdefault(result["id"], []).append(result)

    @property
    def why(self) -> str:
        """Why the run was stopped (Ctrl-C, SIGTERM), or nothing."""
        return str((self.stopped or {}).get("why", ""))

    def forget_pairs(self, first: int) -> None:
        """Only pairs before ``first`` kept: what a run stopped while it grew is judged on (grow)."""
        self.sides = order(first)
        for cases in self.results.values():
            for case, results in list(cases.items()):
                cases[case] = [r for r in results if r.get("process_index", 0) < first]
        self.turns = {pair: taken for pair, taken in self.turns.items() if pair < first}
        for side, pairs in self._error_pairs.items():
            self.errors[side] = [e for e, pair in zip(self.errors[side], pairs, strict=True) if pair < first]
            self._error_pairs[side] = [pair for pair in pairs if pair < first]

    def details(self, mine: int, theirs: int) -> dict[str, Any]:
        """What a case's report says of the run: the other side, the order, each side's processes (``mine``,
        ``theirs``) and versions, errors, placement, provenance and the turns taken."""
        return {
            "against": str(self.python), "tree": None if self.tree is None else str(self.tree),
            "order": self.sides, "processes": {THIS: mine, OTHER: theirs},
            "versions": {THIS: self.versions(THIS), OTHER: self.versions(OTHER)},
            "errors": self.errors[THIS] + self.errors[OTHER], "left_out": sorted(self.left_out.values()),
            "placement": self.placement, "placement_problems": self.placement_problems(),
            "provenance": self.provenance, "aa": self.aa, "in_turns": self.in_turns,
            "turns": {str(pair): turns for pair, turns in self.turns.items()},
            "added": self.added, "may_grow": self.may_grow, "stopped": self.stopped,
        }


def judge_scope(
    versus: HeadToHead, case_id: str, backend: str, scope: str, statistic: str, asked: float, source: str = "asked"
) -> Verdict:
    """One case's scope, the other side against this one, pair by pair: the verdict of a pull request's gate (the
    runner and benchmarks/pr_gate.py's re-decisions both call this)."""
    from pytest_rfdetr_latency.verdict.paired import RESOLVE_FACTOR, judge_pairs

    mine, theirs = versus.paired(case_id, scope)
    if not mine:
        seen = [*versus.figures(THIS, case_id, scope).values(), *versus.figures(OTHER, case_id, scope).values()]
        figure = median(seen) if seen else 0.0
        return Verdict("inconclusive", scope, statistic, figure, figure, 0.0, "no pair",
                       notes=("no pair of processes measured this scope on both sides",))
    resolve = max(HEAD_TO_HEAD_RESOLVE[scope], RESOLVE_FACTOR * asked)
    noise, freedom = versus.noise(backend, scope)
    left_out = tuple(versus.strays.get((case_id, scope), {}).values())
    ratios, by_calls = versus.ratios(case_id, scope)
    return judge_pairs(scope, statistic, mine, theirs, asked, noise, freedom, resolve, z=versus.decide_z,
                       notes=left_out, source=source, ratios=ratios, by_calls=by_calls)


def measure(
    launch: Launch,
    targets: Sequence[str],
    settings: Settings,
    cache_dir: Path,
    progress: Callable[[str], None] = lambda text: None,
    timeout: float = 3600,
    placement: Placement | None = None,
    moves: Mapping[Path, Path] | None = None,
) -> HeadToHead:
    """Run ``targets`` in ``settings.against_processes`` fresh processes per side (more while unresolved: grow), sides
    alternating, threads where ``placement`` puts them, the other side's targets moved by ``moves`` (moves_to). No
    baseline file is read: block sizes and counts come from the first process to size a scope (case._shared_sizes)."""
    assert settings.against is not None
    tree = settings.against_tree
    other_launch = dataclasses.replace(launch, python=settings.against) if tree is None else \
        in_tree(launch, tree, settings.against)
    other_targets = [map_target(t, moves or {}) for t in targets]
    with tempfile.TemporaryDirectory(prefix="rfdetr-latency-no-baselines-") as empty, \
            tempfile.TemporaryDirectory(prefix="rfdetr-latency-sizes-") as shared:
        reading_none = dataclasses.replace(settings, baseline_dir=Path(empty), placement=placement,
                                           sizes_file=Path(shared) / "block-sizes.json",
                                           sampling=sampling_for(settings))
        outcome = HeadToHead(settings.against, order(settings.against_processes), tree=tree, aa=settings.against_aa,
                             placement=None if placement is None else placement.to_json(),
                             in_turns=not settings.against_sequential,
                             may_grow=most_processes(settings) > settings.against_processes)

        def child(side: str, index: int) -> Child:
            this = side == THIS
            return Child(launch if this else other_launch, tuple(targets if this else other_targets),
                         child_settings(reading_none, process_index=index, cache_dir=cache_dir,
                                        inject=None if this else settings.inject),
                         child_environment(side, os.environ))

        def run_pairs(pairs: range) -> None:
            if outcome.in_turns:
                for first in range(pairs.start, pairs.stop, AT_ONCE):
                    if outcome.stopped:
                        return
                    _run_at_once(outcome, range(first, min(first + AT_ONCE, pairs.stop)), child, timeout,
                                 lambda text: progress(text + f"{_named(settings)}, {len(targets)} test(s)"))
                return
            for pair in pairs:
                for offset, side in enumerate(outcome.sides[2 * pair:2 * pair + 2]):
                    number = 2 * pair + offset + 1
                    progress(f"head to head: process {number} of {len(outcome.sides)}, {side} side"
                             + (_named(settings) if side == OTHER else "") + f", {len(targets)} test(s)")
                    one = child(side, pair)
                    outcome.keep(side, pair, number, run_child(one.launch, one.targets, one.settings, timeout,
                                                               one.env))

        run_pairs(range(settings.against_processes))
        if not outcome.stopped:
            grow(outcome, settings, run_pairs, progress)
    outcome.settle()
    if not outcome.stopped:  # a stopped run measures nothing more, profiles included
        outcome.profiler = _profiler(launch, other_launch, moves or {}, settings, placement, cache_dir, timeout,
                                     progress)
    return outcome


def _run_at_once(outcome: HeadToHead, pairs: range, child: Callable[[str, int], Child], timeout: float,
                 progress: Callable[[str], None]) -> None:
    """Both processes of each of ``pairs`` at once, in their balanced order, taking turns (processes.run_in_turns)."""
    sides = outcome.sides[2 * pairs.start:2 * pairs.stop]
    progress(f"head to head: pairs {pairs.start + 1} to {pairs.stop} of {len(outcome.sides) // 2}, {len(sides)} "
             f"processes at once, preparing together and taking turns block by block ({' '.join(sides)})")
    try:
        outcomes, turns = run_in_turns([child(side, k // 2) for k, side in enumerate(sides, start=2 * pairs.start)],
                                       timeout)
    except Stopped as stop:  # what each process finished is kept; the session ends interrupted (collector)
        outcome.stopped = {"why": str(stop), "pairs": [pairs.start + 1, pairs.stop]}
        outcome.sides = outcome.sides[:2 * pairs.stop]  # pairs asked beyond these never start
        progress(f"head to head: {stop} while pairs {pairs.start + 1} to {pairs.stop} took turns; each case is judged "
                 "on the pairs that finished it, and the run ends as interrupted")
        outcomes, turns = stop.outcomes, stop.turns
    for k, (side, done, taken) in enumerate(zip(sides, outcomes, turns), start=2 * pairs.start):
        outcome.turns.setdefault(k // 2, {})[side] = taken
        outcome.keep(side, k // 2, k + 1, done)


def _profiler(launch: Launch, other_launch: Launch, moves: Mapping[Path, Path], settings: Settings,
              placement: Placement | None, cache_dir: Path, timeout: float, progress: Callable[[str], None],
              ) -> Callable[[str, str, Mapping[str, int]], dict[str, ChildOutcome]]:
    """What profiles one case on both sides once its verdicts are decided (HeadToHead.profiler): a fresh process
    each, this side's and the other's (in its checkout, its target moved by ``moves``), where ``placement`` puts
    the measuring processes' threads, reading no baseline."""
    def profile(target: str, case_id: str, sizes: Mapping[str, int]) -> dict[str, ChildOutcome]:
        done: dict[str, ChildOutcome] = {}
        with tempfile.TemporaryDirectory(prefix="rfdetr-latency-no-baselines-") as empty:
            for side in (THIS, OTHER):
                this = side == THIS
                progress(f"head to head: profiling {case_id} on the {side} side{'' if this else _named(settings)}")
                reading = dataclasses.replace(settings, baseline_dir=Path(empty), placement=placement)
                child_run = child_settings(reading, process_index=0, cache_dir=cache_dir,
                                           inject=None if this else settings.inject, block_sizes={case_id: sizes},
                                           profile=True)
                if this and child_run.trace_dir is not None:  # this side's traces apart from the judged side's
                    child_run = dataclasses.replace(child_run, trace_dir=child_run.trace_dir / "this-side")
                moved = target if this else map_target(target, moves)
                done[side] = run_child(launch if this else other_launch, [moved], child_run, timeout,
                                       child_environment(side, os.environ))
        return done

    return profile


def diagnose(versus: HeadToHead, target: str | None, result: CaseResult, asked: bool, refused: bool = False) -> None:
    """Once a case's verdicts are decided: each scope that regressed (every judged one where profiles were ``asked``
    for, none where they were ``refused``) profiled on both sides, one more fresh process each, and the other side's
    profile diagnosed against this side's, as a check's is against its recording's (verdict/diagnosis.py). Nothing
    judged is measured again."""
    from pytest_rfdetr_latency.verdict import diagnosis

    timed = {s: v for s, v in result.verdicts.items() if s in result.scopes}
    scopes = diagnosis.to_profile(timed, result.scopes, asked, refused)
    if not scopes or versus.profiler is None or target is None:
        return
    case_id = result.case.id
    done = versus.profiler(target, case_id, {s: v.block_size for s, v in result.scopes.items()})
    mine, theirs = ([r for r in done[side].results if r.get("id") == case_id] for side in (THIS, OTHER))
    diagnosis.take_profiled(result.details, scopes, theirs, done[OTHER].error,
                            done[THIS].seconds + done[OTHER].seconds)
    reference: dict[str, Any] = {}
    diagnosis.take_profiled(reference, scopes, mine, done[THIS].error, done[THIS].seconds)
    errors = result.details.setdefault("profile_errors", {})
    for scope, why in (reference.get("profile_errors") or {}).items():  # beside the other side's, never over it
        errors[scope] = "; ".join(filter(None, (errors.get(scope), f"this side: {why}")))
    if not errors:
        del result.details["profile_errors"]
    if result.details.get("profile") and reference.get("profile"):
        result.diagnosis = diagnosis.for_result(timed, result.details["profile"], reference["profile"])


def _named(settings: Settings) -> str:
    """The other side, as progress lines name it: its interpreter, and its checkout where it has one."""
    tree = settings.against_tree
    return f" ({settings.against}{', ' + str(tree) if tree else ''})"


def grow(outcome: HeadToHead, settings: Settings, run_pairs: Callable[[range], None],
         progress: Callable[[str], None]) -> None:
    """Where a comparison cannot resolve what it must after the first pairs, the rest up to most_processes a side, in
    one go and in the same balanced order. One decision, so a comparison is judged after one of two numbers of pairs,
    which paired.GROWING_Z covers (Bonferroni over the two)."""
    first, most = len(outcome.sides) // 2, most_processes(settings)
    outcome.settle()
    wanting = outcome.unresolved(settings) if first < most else []
    if not wanting:
        return
    outcome.sides = order(most)
    progress(f"head to head: {len(wanting)} comparison(s) cannot yet resolve what they must "
             f"({', '.join(wanting[:3])}{', ...' if len(wanting) > 3 else ''}): pairs {first + 1} to {most}")
    outcome.added.append({"pairs": [first + 1, most], "unresolved": wanting})
    run_pairs(range(first, most))
    if outcome.stopped:  # judged as if it had not grown: every case on the same pairs, at the same z
        outcome.forget_pairs(first)
        outcome.added[-1]["stopped"] = True
    outcome.forget_strays()  # measure settles the pairs once more, over all of them


def most_processes(settings: Settings) -> int:
    """Processes per side a run may grow to while comparisons are unresolved (HeadToHead.unresolved)."""
    most = settings.against_max_processes
    return max(settings.against_processes, 2 * settings.against_processes if most is None else most)


def sampling_for(settings: Settings) -> SamplingPlan:
    """The plan both sides sample with: taking turns and with no plan given, ``turns`` (one call a block, so that the
    sides alternate call by call); otherwise the run's own."""
    if settings.against_sequential or settings.sampling_explicit:
        return settings.sampling
    return PRESETS["turns"]


def in_tree(launch: Launch, tree: Path, python: Path) -> Launch:
    """The launch of the other side: the same options, in its checkout, with its interpreter and its ini file."""
    inifile = None
    if launch.inifile is not None:
        try:
            mapped = tree / launch.inifile.relative_to(launch.rootdir)
        except ValueError:
            mapped = launch.inifile
        inifile = mapped if mapped.exists() else None
    try:
        cwd = tree / launch.cwd.relative_to(launch.rootdir)
    except ValueError:
        cwd = tree
    return dataclasses.replace(launch, cwd=cwd if cwd.is_dir() else tree, rootdir=tree, inifile=inifile,
                               python=python)


def map_target(target: str, moves: Mapping[Path, Path]) -> str:
    """A test of this side as the same test of the other one: a path under one of ``moves``' folders (this
    checkout; this side's installed plugin, whose suite --pyargs collects) under the other side's; else unchanged."""
    path, sep, rest = target.partition("::")
    resolved = Path(path).resolve()
    for mine, theirs in moves.items():
        try:
            relative = resolved.relative_to(mine.resolve())
        except ValueError:
            continue
        return f"{theirs / relative}{sep}{rest}"
    return target


def moves_to(rootdir: Path, tree: Path | None, other_imports: Mapping[str, str | None]) -> dict[Path, Path]:
    """Where this side's tests are on the other side: its checkout, and its own copy of the plugin's package."""
    moves: dict[Path, Path] = {}
    mine, theirs = provenance(("pytest_rfdetr_latency",)).get("pytest_rfdetr_latency"), other_imports.get(
        "pytest_rfdetr_latency")
    if mine and theirs and Path(mine).parent != Path(theirs).parent:
        moves[Path(mine).parent] = Path(theirs).parent
    if tree is not None:
        moves[rootdir] = tree
    return moves


def measure_for(
    session: LatencySession, launch: Launch, targets: Sequence[str], progress: Callable[[str], None],
    other: Mapping[str, Any] | None = None,
) -> HeadToHead:
    """Measure both sides for ``session`` and make this side's processes the entries its cases are judged against.
    ``other`` is what check_interpreter found of the other side."""
    chosen, _ = session.placement()
    other_imports = dict((other or {}).get("provenance") or {})
    moves = moves_to(launch.rootdir, session.settings.against_tree, other_imports)
    outcome = measure(launch, targets, session.settings, session.cache_dir, progress, placement=chosen, moves=moves)
    outcome.provenance = {THIS: {"imports": provenance(), "tree": str(session.root)},
                          OTHER: {"imports": other_imports,
                                  "tree": str(session.settings.against_tree or session.root)}}
    session.use_entries(outcome.entries(session.commit),
                        f"this environment's {len(outcome.sides) // 2} processes (head to head)")
    return outcome
