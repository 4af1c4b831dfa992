"""Measuring again in fresh pytest processes.

A process is the unit of measurement (judge.py): a baseline is recorded in several processes, and a check whose
figure moved past its threshold is measured again in fresh ones. A fresh process is the same pytest invocation
narrowed to the given test nodes: the same rootdir, ini file, ``-o`` overrides, ``-p`` plugin selections, import
mode and environment, and the parent's resolved RF-DETR settings exactly (handed over as a file, so that neither
the command line, nor the environment, nor the ini file is parsed a second way). It measures only, and writes its
results to a JSON file that the parent reads back. When it reports nothing, its exit code and the last lines of its
output say why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_rfdetr_latency.measure.placement import Placement
from pytest_rfdetr_latency.measure.settings import Settings

CHILD_ENV = "_PYTEST_RFDETR_LATENCY_CHILD"  # the path of the pickled settings a fresh process measures with
_TAIL_LINES = 25
STOP_GRACE = 5.0  # seconds the processes of a stopped run have to write what they finished (run_in_turns)


@dataclass
class ChildOutcome:
    results: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # why it reported nothing: its exit code and the last lines of its output
    seconds: float = 0.0


@dataclass(frozen=True)
class Launch:
    """How this pytest was started, as far as a fresh one must repeat it."""

    cwd: Path
    rootdir: Path
    inifile: Path | None = None
    options: tuple[str, ...] = ()  # -p, -o, --noconftest, --confcutdir, --import-mode as given
    xdist_workers: int | None = None  # None: pytest-xdist is not installed; 0: not used
    python: Path | None = None  # another environment's interpreter (head to head); None: this one

    def command(self, targets: Sequence[str]) -> list[str]:
        python = str(self.python) if self.python is not None else sys.executable
        command = [python, "-m", "pytest", *targets, "-q", f"--rootdir={self.rootdir}"]
        if self.inifile is not None:
            command += ["-c", str(self.inifile)]
        command += self.options
        if self.xdist_workers is not None:
            command.append(f"-n{self.xdist_workers}")
            if self.xdist_workers:
                command.append("--dist=loadgroup")
        return command


_VALUED = ("-p", "-o", "--override-ini", "--confcutdir", "--import-mode")
_FLAGS = ("--noconftest",)
_XDIST = ("-n", "--numprocesses", "--dist")


def given_options(args: Sequence[str]) -> tuple[str, ...]:
    """The options of ``args`` that change what a fresh process collects and loads (plugins, ini overrides, conftest
    handling, import mode), in the forms given."""
    keep: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, _ = arg.partition("=")
        if arg in _FLAGS or (name in _VALUED and eq):
            keep.append(arg)
        elif arg in _VALUED and i + 1 < len(args):
            keep += [arg, args[i + 1]]
            i += 1
        elif arg[:2] in ("-p", "-o") and len(arg) > 2:
            keep.append(arg)
        i += 1
    return tuple(keep)


def child_settings(
    settings: Settings,
    *,
    process_index: int,
    cache_dir: Path,
    inject: float | None = None,
    block_sizes: Mapping[str, Mapping[str, int]] | None = None,
    placement: Placement | None = None,
    profile: bool = False,
) -> Settings:
    """The parent's settings for a fresh process that measures only: no parity (the parent checked it), no
    baseline writing, no reports, no history, no processes of its own; the same cache of exports and the same block
    sizes. With ``profile``, it also profiles each scope once its figures are taken (Settings.profiles_here), its raw
    traces beside the parent's report; its figures are never judged, so it samples the fewest blocks a plan allows."""
    from pytest_rfdetr_latency.measure.profiling import trace_folder

    return dataclasses.replace(
        settings,
        enabled=True,
        save_baseline=False,
        no_parity=True,
        confirm=0,
        save_processes=1,
        report=None,
        markdown=None,
        benchmark_json=None,
        plot_dir=None,
        history_dir=None,
        against=None,
        against_tree=None,
        against_aa=False,
        against_sequential=False,
        placement=placement or settings.placement,
        inject=inject,
        profile=profile,
        trace_dir=trace_folder(settings.report) if profile else None,
        sampling=dataclasses.replace(settings.sampling, min_blocks=2, max_blocks=2) if profile else settings.sampling,
        cache_dir=cache_dir,
        process_index=process_index,
        block_sizes={case: dict(sizes) for case, sizes in (block_sizes or {}).items()},
    )


def load_child_settings(path: str) -> Settings:
    with open(path, "rb") as handle:
        settings = pickle.load(handle)
    if not isinstance(settings, Settings):
        raise TypeError(f"{path} does not hold pytest-rfdetr-latency settings")
    return settings


def run_child(launch: Launch, targets: Sequence[str], settings: Settings, timeout: float,
              env: Mapping[str, str] | None = None) -> ChildOutcome:
    """Run ``targets`` in a fresh pytest process with ``settings``; what it measured, or why it measured nothing.
    The process gets a session of its own, so that on a timeout its xdist workers are stopped with it."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rfdetr-latency-child-") as folder:
        report, environ = _hand_over(Path(folder), settings, env)
        with subprocess.Popen(launch.command(targets), cwd=launch.cwd, env=environ, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True) as proc:
            try:
                output, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                _stop_group(proc)
                output, _ = proc.communicate()
                return ChildOutcome(error=f"it ran past {timeout:g} s and was stopped{_tail(output or '')}",
                                    seconds=time.perf_counter() - start)
            except BaseException:  # Ctrl-C or SIGTERM: a session of its own gets neither, and would run on alone
                _reap(proc)
                raise
        return _outcome(report, proc.returncode, output or "", start)


class Stopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM while processes took turns (run_in_turns): they were asked to stop as it was; what each had
    finished and reported is kept in ``outcomes``, and the turns each had handed back in ``turns``."""

    def __init__(self, why: str, outcomes: list[ChildOutcome], turns: list[int]) -> None:
        super().__init__(why)
        self.outcomes, self.turns = outcomes, turns


@dataclass(frozen=True)
class Child:
    """One process of those that take turns (lockstep.py)."""

    launch: Launch
    targets: tuple[str, ...]
    settings: Settings
    env: Mapping[str, str] | None = None


def run_in_turns(children: Sequence[Child], timeout: float) -> tuple[list[ChildOutcome], list[int]]:
    """Run ``children`` at once, conducted as lockstep.py says: each works on its own while none samples, and they
    take turns block by block, in the order given, while they sample. What each measured, and how many turns each
    handed back (0: it never took part, or ran past the time before its first)."""
    from pytest_rfdetr_latency.measure import lockstep

    start = time.perf_counter()
    deadline = time.monotonic() + timeout * len(children)
    share = len(os.sched_getaffinity(0)) // max(1, len(children)) if hasattr(os, "sched_getaffinity") else None
    with contextlib.ExitStack() as stack:
        procs: list[tuple[subprocess.Popen[bytes], Path, Path]] = []
        pipes: list[lockstep.Pipes] = []
        taken = [0] * len(children)
        error = ""
        stopped: set[int] = set()
        try:
            for child in children:
                folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rfdetr-latency-child-")))
                report, environ = _hand_over(folder, child.settings, child.env)
                pipe = lockstep.Pipes.open()
                stack.callback(pipe.close)
                environ.update(pipe.child_env(share))
                log = folder / "output.txt"
                with log.open("wb") as sink:  # a file, not a pipe: a child that waits its turn never blocks on it
                    proc = subprocess.Popen(child.launch.command(child.targets), cwd=child.launch.cwd, env=environ,
                                            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                                            pass_fds=pipe.child_fds)
                stack.callback(_reap, proc)
                pipe.close_child_ends()
                procs.append((proc, report, log))
                pipes.append(pipe)
            turns = lockstep.alternate(pipes, deadline, taken)
        except KeyboardInterrupt as stop:
            seen: list[int] = []
            with lockstep.stops_noted(seen):  # a stop while this one is handled: no more waiting, nothing lost
                ended = {proc.pid for proc, _, _ in procs if proc.poll() is not None}  # their errors stand
                for pipe in pipes:
                    pipe.hang_up()
                raise Stopped(str(stop) or "interrupted", _ask_to_stop(procs, start, ended, seen), taken) from stop
        except lockstep.TurnTimeout:
            error = f"it ran past {timeout * len(children):g} s with the processes it took turns with and was stopped"
            turns = [0] * len(children)
            for proc, _, _ in procs:
                if proc.poll() is None:  # those that ended on their own keep what they measured
                    _stop_group(proc)
                    stopped.add(proc.pid)
        outcomes = []
        for proc, report, log in procs:
            proc.wait()
            output = log.read_text(errors="replace")
            if proc.pid in stopped:
                outcomes.append(ChildOutcome(error=error + _tail(output), seconds=time.perf_counter() - start))
            else:
                outcomes.append(_outcome(report, proc.returncode, output, start))
        return outcomes, turns


def _ask_to_stop(procs: Sequence[tuple[subprocess.Popen[bytes], Path, Path]], start: float,
                 ended: set[int], seen: list[int]) -> list[ChildOutcome]:
    """Each of ``procs``, already hung up on (a wait for its turn ends as Ctrl-C would, lockstep.HungUp), given a
    moment to end so; those still working on their own then stopped by SIGTERM (sigterm.stop_as_interrupted); all
    killed after STOP_GRACE seconds in all, or once the run is stopped again (a signal in ``seen``). What each
    reported (case by case, collector.py: a killed one keeps what it finished); only those ``ended`` before the stop
    keep their error."""
    import signal

    until = time.monotonic() + STOP_GRACE
    _wait_all(procs, time.monotonic() + min(STOP_GRACE / 5, 1.0), seen)
    for proc, _, _ in procs:
        if proc.poll() is None and not seen:
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGTERM)  # the process alone: its group's other members are its own
    _wait_all(procs, until, seen)
    outcomes = []
    for proc, report, log in procs:
        _reap(proc, STOP_GRACE)  # bounded: a child the kill cannot end yet (its driver's teardown) is left to the exit
        done = _outcome(report, proc.returncode, log.read_text(errors="replace"), start)
        outcomes.append(done if proc.pid in ended else dataclasses.replace(done, error=None))  # the run's stop
    return outcomes


def _wait_all(procs: Sequence[tuple[subprocess.Popen[bytes], Path, Path]], until: float, seen: list[int]) -> None:
    while not seen and time.monotonic() < until and any(proc.poll() is None for proc, _, _ in procs):
        time.sleep(0.02)


def _hand_over(folder: Path, settings: Settings, env: Mapping[str, str] | None) -> tuple[Path, dict[str, str]]:
    """The settings file a child reads and the environment that points it there; where it will write its report."""
    report = folder / "results.json"
    pickled = folder / "settings.pickle"
    pickled.write_bytes(pickle.dumps(dataclasses.replace(settings, child_report=report)))
    environ = {k: v for k, v in (os.environ if env is None else env).items() if k != "GITHUB_STEP_SUMMARY"}
    environ[CHILD_ENV] = str(pickled)
    environ["PYTHONUNBUFFERED"] = "1"
    return report, environ


def _outcome(report: Path, returncode: int, output: str, start: float) -> ChildOutcome:
    results: list[dict[str, Any]] = json.loads(report.read_text()) if report.exists() else []
    error = None
    if not results or returncode not in (0, 1):
        error = f"exit code {returncode}{_tail(output)}"
    return ChildOutcome(results=results, error=error, seconds=time.perf_counter() - start)


def _reap(proc: subprocess.Popen[str] | subprocess.Popen[bytes], timeout: float | None = None) -> None:
    if proc.poll() is None:
        _stop_group(proc)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)


def _stop_group(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (OSError, AttributeError):  # already gone, or no process groups (Windows)
        proc.kill()


def _tail(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        return ""
    return "; its last lines:\n    " + "\n    ".join(lines[-_TAIL_LINES:])


def write_child_report(path: Path, results: Sequence[Mapping[str, Any]]) -> None:
    from pytest_rfdetr_latency.store.baselines import atomic_write

    atomic_write(path, json.dumps(list(results)))


# RF-DETR options that only concern checking or reporting: a command that records the baseline leaves them out.
_CHECK_ONLY = ("--rfdetr-latency", "--rfdetr-inject-slowdown", "--rfdetr-inject-on", "--rfdetr-report",
               "--rfdetr-markdown", "--rfdetr-benchmark-json", "--rfdetr-plot", "--rfdetr-confirm", "--rfdetr-strict",
               "--rfdetr-fail-on-drift", "--rfdetr-tolerance", "--rfdetr-memory-tolerance", "--save-baseline",
               "--rfdetr-against", "--rfdetr-against-tree", "--rfdetr-against-processes",
               "--rfdetr-against-max-processes", "--rfdetr-against-aa", "--rfdetr-against-sequential")


def recording_arguments(
    args: Sequence[str], paths: Sequence[str], pyargs: bool, flags: Sequence[str]
) -> tuple[str, ...]:
    """What a command that records this run's baseline repeats of it: its test paths (or ``--pyargs`` modules), its
    plugin selections, and the RF-DETR options that decide what is measured. ``flags`` names the options that take
    no value."""
    keep: list[str] = [*paths, *(["--pyargs"] if pyargs else []), *given_options(args)]
    i = 0
    while i < len(args):
        arg = args[i]
        name = arg.split("=", 1)[0]
        takes_value = "=" not in arg and name not in flags
        if name in _XDIST or (arg.startswith("-n") and len(arg) > 2 and arg[2:].isdigit()):
            keep.append(arg)  # record with the workers the check runs with: their cores are part of the workload
            if takes_value and name in _XDIST and i + 1 < len(args):
                keep.append(args[i + 1])
                i += 1
        elif name.startswith("--rfdetr-") and name not in _CHECK_ONLY:
            keep.append(arg)
            if takes_value and i + 1 < len(args):
                keep.append(args[i + 1])
                i += 1
        elif name.startswith("--rfdetr-") and takes_value:
            i += 1  # drop the option's value too
        i += 1
    return tuple(keep)
