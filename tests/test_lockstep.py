"""Taking turns (lockstep.py): real child processes and real pipes, no model."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_rfdetr_latency.measure import lockstep

TAKES_TURNS = """
import sys
from pytest_rfdetr_latency.measure import lockstep
name, blocks, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lockstep.begin()
for block in range(blocks):
    lockstep.turn()
    with open(log, "a") as out:
        out.write(f"{name}{block}\\n")
"""
# A child whose plugin predates taking turns: it never waits and never hands the turn back.
RUNS_ALONE = """
import sys
name, blocks, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for block in range(blocks):
    with open(log, "a") as out:
        out.write(f"{name}{block}\\n")
"""
# A process of a head to head as case.py drives it: each case prepared on its own, then warmed up and sampled in the
# ring (join, a turn before each block), then left (step_aside). PREPARE seconds of preparing, per name.
IN_THE_RING = """
import sys, time
from pytest_rfdetr_latency.measure import lockstep
name, cases, prepare, log = sys.argv[1], int(sys.argv[2]), float(sys.argv[4]), sys.argv[5]
counts = [int(n) for n in sys.argv[3].split(",")] * cases  # blocks per case: one count for all, or one a case
def say(text):
    with open(log, "a") as out:
        out.write(text + "\\n")
lockstep.begin()
for case in range(cases):
    time.sleep(prepare)
    say(f"prep{case}-{name}")
    lockstep.join()
    say(f"warm{case}-{name}")
    for block in range(counts[case]):
        lockstep.turn()
        say(f"blck{case}-{name}{block}")
    lockstep.step_aside()
"""
# The same, but a signal's exception cuts the wait for the second turn of the first case short (as a per-test timeout
# would): the process leaves the case there, and must stay in step for the next one.
CUT_SHORT = """
import signal, sys, time
from pytest_rfdetr_latency.measure import lockstep
name, cut, log = sys.argv[1], sys.argv[2] == "cut", sys.argv[3]
def say(text):
    with open(log, "a") as out:
        out.write(text + "\\n")
class Cut(Exception):
    pass
def stop(*_):
    raise Cut()
signal.signal(signal.SIGALRM, stop)
lockstep.begin()
for case in range(2):
    say(f"prep{case}-{name}")
    lockstep.join()
    try:
        for block in range(3):
            if cut and case == 0 and block == 1:
                signal.setitimer(signal.ITIMER_REAL, 0.05)
            lockstep.turn()
            signal.setitimer(signal.ITIMER_REAL, 0)
            say(f"blck{case}-{name}{block}")
            time.sleep(0.1)  # the others wait for this long: the alarm falls in a wait
    except Cut:
        say(f"cut{case}-{name}")
    finally:
        lockstep.step_aside()
"""
HOLDS_ON = """
import time
from pytest_rfdetr_latency.measure import lockstep
lockstep.begin()
time.sleep(30)
"""


def _start(code: str, *args: str) -> tuple[subprocess.Popen[bytes], lockstep.Pipes]:
    pipe = lockstep.Pipes.open()
    env = {**os.environ, **pipe.child_env()}
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, pass_fds=pipe.child_fds)
    pipe.close_child_ends()
    return proc, pipe


def _alternate(log: Path, *children: tuple[str, ...]) -> tuple[list[str], list[int], list[int]]:
    """Start ``children`` (code, name, its other arguments), let them take turns; what they wrote, their turns, their
    exit codes."""
    started = [_start(code, name, *more, str(log)) for code, name, *more in children]
    try:
        turns = lockstep.alternate([pipe for _, pipe in started], time.monotonic() + 60)
    finally:
        for proc, pipe in started:
            proc.wait(timeout=30)
            pipe.close()
    return log.read_text().split(), turns, [proc.returncode for proc, _ in started]


def test_two_children_alternate_block_by_block_and_the_longer_one_finishes_alone(tmp_path: Path) -> None:
    written, turns, codes = _alternate(tmp_path / "log.txt", (TAKES_TURNS, "a", "3"), (TAKES_TURNS, "b", "5"))
    assert written == ["a0", "b0", "a1", "b1", "a2", "b2", "b3", "b4"]
    assert turns == [3, 5] and codes == [0, 0]


def test_processes_prepare_together_and_sample_one_at_a_time_in_a_ring(tmp_path: Path) -> None:
    # Four processes (two pairs), the second slow to prepare: none samples before every one has prepared a case, none
    # prepares the next before every one has sampled this one, and their blocks take turns in the order given.
    children = [(IN_THE_RING, name, "2", "2", prepare) for name, prepare in
                (("a", "0"), ("b", "0.5"), ("c", "0"), ("d", "0"))]
    written, turns, codes = _alternate(tmp_path / "log.txt", *children)
    assert codes == [0, 0, 0, 0] and turns == [4, 4, 4, 4]  # a turn handed back before each block
    for case in ("0", "1"):
        phase = [line for line in written if line[4] == case]
        preps, rest = phase[:4], phase[4:]
        assert sorted(preps) == [f"prep{case}-{n}" for n in "abcd"]
        assert rest == [f"warm{case}-{n}" for n in "abcd"] + [f"blck{case}-{n}{b}" for b in "01" for n in "abcd"]
    assert written.index("prep1-a") > written.index("blck0-d1")  # the next case waits for the last block of this one


def test_each_cases_ring_starts_from_the_first_process_whatever_the_last_one_took(tmp_path: Path) -> None:
    # The first process takes one block more of the first case: the second case's ring still goes a b c d.
    children = [(IN_THE_RING, name, "2", blocks, "0") for name, blocks in (("a", "3,2"), ("b", "2"), ("c", "2"),
                                                                          ("d", "2"))]
    written, _, codes = _alternate(tmp_path / "log.txt", *children)
    assert codes == [0, 0, 0, 0]
    second = [line for line in written if line.startswith("blck1-")]
    assert second == [f"blck1-{n}{b}" for b in "01" for n in "abcd"]


def test_a_wait_cut_short_by_a_signal_leaves_the_process_in_step_for_the_next_case(tmp_path: Path) -> None:
    written, _, codes = _alternate(tmp_path / "log.txt", (CUT_SHORT, "a", "no"), (CUT_SHORT, "b", "cut"),
                                   (CUT_SHORT, "c", "no"))
    assert codes == [0, 0, 0] and "cut0-b" in written and "blck0-b1" not in written
    # Nobody prepares the second case before the last block of the first, and the second goes round in order.
    assert written.index("prep1-b") > written.index("blck0-c2")
    assert [line for line in written if line.startswith("blck1-")] == [f"blck1-{n}{b}" for b in "012" for n in "abc"]


def test_a_case_that_stops_before_it_samples_still_takes_its_place_in_the_ring(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from pytest_rfdetr_latency.measure.case import CaseMeasurement
    from pytest_rfdetr_latency.measure.cases import Case
    from pytest_rfdetr_latency.measure.environment import Device

    said: list[bytes] = []
    monkeypatch.setattr(lockstep, "_ends", (-1, -1))
    monkeypatch.setattr(lockstep, "_hand_back", lambda byte: said.append(byte) or 0.0)
    session = SimpleNamespace(device=Device("cpu", "a CPU", "cpu"), baseline_path=Path("nvidia-h200.json"),
                              workload=lambda case: {}, settings=SimpleNamespace(strict=False))
    measuring = CaseMeasurement(session, Case("RFDETRMedium", "torch-fp16"), ("device",),  # type: ignore[arg-type]
                                skip=pytest.skip, fail=pytest.fail, publish=lambda result: None)
    with pytest.raises(pytest.skip.Exception, match="needs a CUDA device"):
        measuring.run(None)
    assert said == [b"j", b"p"]  # joined for the case it did not sample, and stepped aside with the others


def test_taking_turns_a_case_collects_garbage_in_full_before_the_ring_and_its_scopes_only_young_garbage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A full collection of a process holding torch and rfdetr takes 0.2-0.3 s and frees nothing; sampling began with
    # one, in its turn, so every scope of every case held the other processes that long. Taking turns, the case
    # collects in full before it joins the ring, and a scope's sampling then only the young generations; with the
    # collector off while it times, either way. Elsewhere (the stored flow, the rfdetr_timer fixture) nothing changes.
    from types import SimpleNamespace

    from pytest_rfdetr_latency.measure import sampling, timing
    from pytest_rfdetr_latency.measure.case import CaseMeasurement
    from pytest_rfdetr_latency.measure.cases import Case
    from pytest_rfdetr_latency.measure.environment import Device

    said: list[object] = []
    monkeypatch.setattr(gc, "collect", lambda generation=2: said.append(f"collect {generation}") or 0)

    def sampled(collected: bool) -> list[object]:
        said.clear()
        timing.sample(lambda: said.append(f"collector on: {gc.isenabled()}"), timing.HostClock(), timing.GpuMonitor(),
                      sampling.PRESETS["turns"], "median", call_ms=1.0, block_size=1, fewest=2, collected=collected)
        return said[:]

    for collected, first in ((False, "collect 2"), (True, "collect 1")):
        taken = sampled(collected)
        assert taken[0] == first and len(taken) > 2 and set(taken[1:]) == {"collector on: False"}
    assert gc.isenabled()

    session = SimpleNamespace(device=Device("cpu", "a CPU", "cpu"), baseline_path=Path("nvidia-h200.json"),
                              workload=lambda case: {}, settings=SimpleNamespace(strict=False))
    measuring = CaseMeasurement(session, Case("RFDETRMedium", "torch-fp16"), ("forward",),  # type: ignore[arg-type]
                                skip=pytest.skip, fail=pytest.fail, publish=lambda result: None)
    result = SimpleNamespace(details={})
    said.clear()
    measuring._enter_ring(result)  # type: ignore[arg-type]  # not taking turns: no collection of its own
    assert said == [] and not measuring._collected
    for name, value in (("_ends", (-1, -1)), ("_in_ring", False), ("_cases", 0)):
        monkeypatch.setattr(lockstep, name, value)
    monkeypatch.setattr(lockstep, "_hand_back", lambda byte: said.append(byte) or 0.0)
    measuring._ring = 0
    measuring._enter_ring(result)  # type: ignore[arg-type]
    assert said == ["collect 2", b"j"] and measuring._collected  # in full, before it joins


class _NoProbe:
    """A memory probe that probes nothing (no GPU here)."""

    def __init__(self, *args: object) -> None:
        pass

    def start(self) -> None:
        pass

    def release(self) -> None:
        pass


@pytest.mark.parametrize(("backend", "expected"), [("onnx-cuda", ["shared 1", "collect 2", b"j", "prepare 16 None",
                                                                 b"p"]),
                                                   ("onnx-cpu", ["shared 1", "prepare 1 1", b"j", b"p"]),
                                                   ("torch-fp16", ["shared 1", "prepare 1 1", b"j", b"p"])])
def test_a_backend_that_tunes_on_the_gpu_prepares_alone_in_its_turn(
    monkeypatch: pytest.MonkeyPatch, backend: str, expected: list[object]
) -> None:
    # ONNX Runtime's CUDA provider times cuDNN's algorithms while it prepares: with seven other processes preparing on
    # the same GPU, each side could keep other choices. It joins the ring first; a backend that does not tune
    # prepares with the others and joins to sample. What is made at once with the others is made on this process's
    # share of the cores (here 1 thread of torch's 16, and the share a pool sized once, ONNX Runtime's CPU provider's,
    # is made with: test_onnx_cpu_prepares_on_its_share_and_is_timed_on_all_its_threads); what is made alone, on all.
    from types import SimpleNamespace

    import torch

    from pytest_rfdetr_latency.measure import memory
    from pytest_rfdetr_latency.measure.backends import BackendUnavailable
    from pytest_rfdetr_latency.measure.case import CaseMeasurement
    from pytest_rfdetr_latency.measure.cases import Case
    from pytest_rfdetr_latency.measure.environment import Device

    said: list[object] = []
    monkeypatch.setattr(lockstep, "_ends", (-1, -1))
    monkeypatch.setattr(lockstep, "_share", 1)
    monkeypatch.setattr(lockstep, "_in_ring", False)
    monkeypatch.setattr(lockstep, "_hand_back", lambda byte: said.append(byte) or 0.0)
    monkeypatch.setattr(memory, "MemoryProbe", _NoProbe)
    monkeypatch.setattr(gc, "collect", lambda generation=2: said.append(f"collect {generation}") or 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(16)

    def prepare(context: object) -> None:
        said.append(f"prepare {torch.get_num_threads()} {lockstep.cores_while_preparing()}")
        raise BackendUnavailable("stopped here: what matters is when it began")

    session = SimpleNamespace(
        device=Device("cuda:0", "NVIDIA H200", "cuda", 0), baseline_path=Path("nvidia-h200.json"),
        workload=lambda case: {}, settings=SimpleNamespace(strict=False, no_parity=True, detections=100,
                                                           inject_on="gpu"),
        placement=lambda: (None, {}), images=None, model=lambda *args: None, onnx_path=lambda case: None,
        threads=None, progress=lambda text: None, prepare=prepare,
        reference_outputs=lambda case: said.append(f"shared {torch.get_num_threads()}"))
    measuring = CaseMeasurement(session, Case("RFDETRMedium", backend), ("forward",),  # type: ignore[arg-type]
                                skip=pytest.skip, fail=pytest.fail, publish=lambda result: None)
    try:
        with pytest.raises(pytest.skip.Exception, match="stopped here"):
            measuring.run(None)
        assert said == expected
        assert torch.get_num_threads() == 16  # given back
    finally:
        torch.set_num_threads(threads)


def test_a_child_takes_the_share_of_the_cores_its_parent_passed_only_while_all_work_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    for name, value in (("_ends", None), ("_share", None), ("_in_ring", False), ("_cases", 0)):
        monkeypatch.setattr(lockstep, name, value)
    monkeypatch.setattr(lockstep, "_hand_back", lambda byte: 0.0)
    assert lockstep.Pipes(go=-1, done=-1, child_done=7, child_go=8).child_env(0) == {
        lockstep.TURNS_ENV: "7,8", lockstep.SHARE_ENV: "1"}  # never fewer than one thread
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    pipe = lockstep.Pipes.open()
    try:
        with lockstep.sharing_cores():  # not one of those taking turns: nothing changes
            assert torch.get_num_threads() == 4
        for key, value in pipe.child_env(2).items():
            monkeypatch.setenv(key, value)
        lockstep.begin()
        assert lockstep.taking_turns() and lockstep.SHARE_ENV not in os.environ
        with lockstep.sharing_cores():
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 4
        lockstep.join()
        with lockstep.sharing_cores():  # alone in the ring: every thread
            assert torch.get_num_threads() == 4
        lockstep.step_aside()
        with lockstep.sharing_cores():
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
        pipe.close()


# A child that prepares on its share of the cores, then is pinned to one core for the ring and makes its first
# parallel call there; it prints how many of its other threads can run only on that core.
PINNED_AFTER_SHARING = """
import os, threading, torch
from pytest_rfdetr_latency.measure import lockstep
torch.set_num_threads(2)
pipe = lockstep.Pipes.open()
os.environ.update(pipe.child_env(1))
lockstep._hand_back = lambda byte: 0.0  # no parent: nobody answers the byte
lockstep.begin()
with lockstep.sharing_cores():
    torch.ones(1 << 20).add_(1.0)  # preparing: one thread
core = min(os.sched_getaffinity(0))
os.sched_setaffinity(0, {core})  # the ring pins the launching thread
torch.ones(1 << 20).add_(1.0)  # the first call in the ring
me = threading.get_native_id()
print(sum(1 for task in os.listdir("/proc/self/task")
          if int(task) != me and os.sched_getaffinity(int(task)) == {core}))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two cores and sched_setaffinity (Linux)")
def test_the_threads_given_back_after_sharing_start_before_the_ring_pins_the_launching_thread() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY")}
    pinned = subprocess.run([sys.executable, "-c", PINNED_AFTER_SHARING], capture_output=True, text=True, timeout=120,
                            check=True, env=env).stdout.split()
    assert pinned[-1] == "0"  # started lazily, torch's second thread would start on the pinned core and keep it


def test_a_child_that_does_not_take_turns_runs_to_its_end_first_and_is_counted_as_taking_none(tmp_path: Path) -> None:
    written, turns, _ = _alternate(tmp_path / "log.txt", (RUNS_ALONE, "o", "3"), (TAKES_TURNS, "n", "2"))
    assert written == ["o0", "o1", "o2", "n0", "n1"]
    assert turns == [0, 2]


def test_a_child_holding_its_turn_past_the_deadline_is_reported() -> None:
    proc, pipe = _start(HOLDS_ON)
    try:
        with pytest.raises(lockstep.TurnTimeout, match="kept the others waiting past the time limit"):
            lockstep.alternate([pipe], time.monotonic() + 1.0)
    finally:
        proc.kill()
        proc.wait()
        pipe.close()


def test_outside_a_pair_a_turn_costs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(lockstep.TURNS_ENV, raising=False)
    lockstep.begin()
    assert lockstep.turn() == 0.0


class _Launch:
    """What run_in_turns needs of a launch: a command and a folder (a plain script instead of pytest)."""

    def __init__(self, code: str, *args: str) -> None:
        self.cwd = Path.cwd()
        self._command = [sys.executable, "-c", code, *args]

    def command(self, targets: object) -> list[str]:
        return self._command


@pytest.mark.parametrize("old_first", [True, False])
def test_a_child_that_does_not_take_turns_never_overlaps_the_other_whichever_starts_first(
    tmp_path: Path, old_first: bool
) -> None:
    from pytest_rfdetr_latency.measure.processes import Child, run_in_turns
    from pytest_rfdetr_latency.measure.settings import Settings

    log = tmp_path / "log.txt"
    old = Child(_Launch(RUNS_ALONE, "o", "3", str(log)), (), Settings())  # type: ignore[arg-type]
    new = Child(_Launch(TAKES_TURNS, "n", "2", str(log)), (), Settings())  # type: ignore[arg-type]
    outcomes, turns = run_in_turns([old, new] if old_first else [new, old], timeout=60)
    written = log.read_text().split()
    # Neither wrote a report (they are not pytest), so each outcome says why; what matters is the order.
    assert all(o.error and "exit code 0" in o.error for o in outcomes)
    assert written == ["o0", "o1", "o2", "n0", "n1"]  # the old one ran alone, whether it started first or second
    assert turns == ([0, 2] if old_first else [2, 0])


# A stopped run (processes.run_in_turns): the parent hangs up. A child waiting for its turn ends as Ctrl-C would,
# with a wait in its ``finally`` (case.py steps aside there) ending at once too.
HUNG_UP = """
import sys
from pytest_rfdetr_latency.measure import lockstep
log = sys.argv[1]
lockstep.begin()
try:
    lockstep.join()
except KeyboardInterrupt as stop:
    with open(log, "a") as out:
        out.write(type(stop).__name__ + "\\n")
    try:
        lockstep.step_aside()
    except lockstep.HungUp:
        with open(log, "a") as out:
            out.write("again\\n")
    sys.exit(2)
"""


def test_a_child_hung_up_on_ends_its_wait_as_an_interrupt_and_every_later_wait_at_once(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    proc, pipe = _start(HUNG_UP, str(log))
    try:
        assert os.read(pipe.done, 1) == b"p"  # begin: stepped aside, waiting to be let go
        lockstep._write_go(pipe)
        assert os.read(pipe.done, 1) == b"j"  # joined the ring: waiting for its turn
        pipe.hang_up()
        assert proc.wait(timeout=30) == 2
    finally:
        proc.kill()
        pipe.close()
    assert log.read_text().split() == ["HungUp", "again"]
    assert pipe.go == -1  # closed once: close() leaves it alone


# A process of a head to head as a stopped run meets it: case A taken in the ring by every process, then case B. The
# first child holds its turn in B (a long block); the second, once A is done, ignores SIGTERM and, hung up on, does
# not end (a process stuck in native code); the third ignores SIGTERM throughout and waits for its turn, so that only
# the hang-up ends its wait. Each writes what it finished on an interrupt.
STOPPED_IN_B = """
import json, os, pickle, signal, sys, time
from pathlib import Path
from typing import Any
from pytest_rfdetr_latency import sigterm
from pytest_rfdetr_latency.measure import lockstep
from pytest_rfdetr_latency.measure.processes import CHILD_ENV
role, folder = sys.argv[1], Path(sys.argv[2])
signal.signal(signal.SIGTERM, signal.SIG_IGN if role == "waits" else sigterm.stop_as_interrupted)
settings = pickle.loads(Path(os.environ[CHILD_ENV]).read_bytes())
done = []
try:
    lockstep.begin()
    lockstep.join()
    lockstep.turn()
    lockstep.step_aside()
    done.append({"id": "A", "scopes": {"e2e": {"value_ms": 1.0}}})
    if role == "stuck":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        lockstep.join()
    except lockstep.HungUp:
        if role == "stuck":
            time.sleep(60)
        raise
    if role == "holds":
        (folder / "holding").write_text("")
        time.sleep(60)
    done.append({"id": "B", "scopes": {"e2e": {"value_ms": 1.0}}})
finally:
    settings.child_report.write_text(json.dumps(done))
"""


@pytest.mark.parametrize("again", [False, True])
def test_a_stopped_ring_keeps_what_every_process_finished_and_kills_one_that_does_not_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, again: bool
) -> None:
    import signal
    import threading
    from dataclasses import dataclass

    from pytest_rfdetr_latency import sigterm
    from pytest_rfdetr_latency.measure import processes
    from pytest_rfdetr_latency.measure.settings import Settings

    @dataclass(frozen=True)
    class Runs(processes.Launch):
        role: str = ""

        def command(self, targets: Any) -> list[str]:
            return [sys.executable, "-c", STOPPED_IN_B, self.role, str(tmp_path)]

    main = threading.main_thread().ident
    assert main is not None
    done = threading.Event()
    request.addfinalizer(done.set)

    def stop_when_held() -> None:  # Ctrl-C in this process once the first child holds its turn in case B
        until = time.monotonic() + 60
        while not (tmp_path / "holding").exists() and time.monotonic() < until and not done.is_set():
            time.sleep(0.05)
        if (tmp_path / "holding").exists() and not done.is_set():
            signal.pthread_kill(main, signal.SIGINT)  # a real signal: it ends the main thread's wait on a pipe

    if again:  # SIGTERM (as CI sends it after its SIGINT) while the run reads what its processes wrote
        read = processes._outcome

        def stopped_again_while_read(*args: Any) -> Any:
            signal.raise_signal(signal.SIGTERM)
            return read(*args)

        monkeypatch.setattr(processes, "_outcome", stopped_again_while_read)
    monkeypatch.setattr(processes, "STOP_GRACE", 3.0)
    before = signal.signal(signal.SIGTERM, sigterm.stop_as_interrupted)  # as the plugin's parent takes it
    request.addfinalizer(lambda: signal.signal(signal.SIGTERM, before))
    children = [processes.Child(Runs(cwd=tmp_path, rootdir=tmp_path, role=role), (), Settings())
                for role in ("holds", "stuck", "waits")]
    threading.Thread(target=stop_when_held, daemon=True).start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt) as stopped:
        processes.run_in_turns(children, timeout=60)
    assert time.monotonic() - start < 30
    assert isinstance(stopped.value, processes.Stopped), stopped.value  # raised again while read, all would be lost
    outcomes = stopped.value.outcomes
    # The one holding its turn (SIGTERM) and the one waiting (hung up on) wrote case A, not B; the stuck one was
    # killed after the grace, and reported nothing. None of them is an error of its own: the run was stopped.
    assert [[r["id"] for r in o.results] for o in outcomes] == [["A"], [], ["A"]]
    assert [o.error for o in outcomes] == [None, None, None]
    assert stopped.value.turns == [1, 1, 1]  # case A's one block each; B's holder never handed its turn back


@pytest.mark.slow
def test_onnx_cpu_prepares_on_its_share_and_is_timed_on_all_its_threads(nano_onnx: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime's CPU pool is sized once, when its session is made, so no share can cut it afterwards: taking
    turns, the case prepares at once with the others on a session of its share's threads (first run, calibration,
    outputs for parity) and is timed, in its turn, on a session of all its threads."""
    import gc
    import weakref

    from PIL import Image

    from pytest_rfdetr_latency.measure.backends import BackendContext, onnx_backend
    from pytest_rfdetr_latency.measure.cases import Case
    from pytest_rfdetr_latency.measure.environment import Device

    made: list[dict[str, Any]] = []
    real_open = onnx_backend.open_session

    def counted_open(*args: Any) -> Any:
        session = real_open(*args)
        record = {"threads": session.get_session_options().intra_op_num_threads, "runs": 0,
                  "alive": weakref.ref(session)}
        made.append(record)
        run = session.run

        def counted_run(*run_args: Any, **kwargs: Any) -> Any:
            record["runs"] += 1
            return run(*run_args, **kwargs)

        session.run = counted_run
        return session

    monkeypatch.setattr(onnx_backend, "open_session", counted_open)
    context = BackendContext(case=Case("RFDETRNano", "onnx-cpu"), device=Device("cpu", "a CPU", "cpu", None),
                             images=[Image.new("RGB", (64, 48))], detections=5, load_model=lambda: None,
                             onnx_path=lambda: nano_onnx, threads=3)
    for name, value in (("_ends", (-1, -1)), ("_share", 1), ("_in_ring", False)):
        monkeypatch.setattr(lockstep, name, value)
    prepared = onnx_backend.prepare(context)
    assert prepared.outputs is not None
    prepared.outputs()
    preparing, timed = made
    assert (preparing["threads"], timed["threads"]) == (1, 3)
    assert preparing["runs"] >= 3 and timed["runs"] == 0  # first run, calibration, parity's outputs: all on the share
    gc.collect()
    assert preparing["alive"]() is None and timed["alive"]() is not None  # let go once parity's outputs are taken
    monkeypatch.setattr(lockstep, "_in_ring", True)  # its turn
    prepared.scopes["forward"]()
    prepared.scopes["e2e"]()
    assert timed["runs"] == 2 and prepared.details["intra_op_threads"] == {"preparing": 1, "timed": 3}

    made.clear()  # not taking turns (or in the ring already): one session, all the threads, as before
    monkeypatch.setattr(lockstep, "_ends", None)
    onnx_backend.prepare(context)
    assert [record["threads"] for record in made] == [3]


def test_while_a_stopped_run_collects_what_it_finished_a_further_stop_is_noted_not_raised() -> None:
    """Raised between the hang-up and the waiting, or while the reports are read, a second stop would lose every
    process's results; noted, it only ends the waiting (processes._ask_to_stop). The handlers are put back after."""
    import signal

    from pytest_rfdetr_latency import sigterm

    before = signal.signal(signal.SIGTERM, sigterm.stop_as_interrupted)
    interrupt = signal.getsignal(signal.SIGINT)
    try:
        seen: list[int] = []
        with lockstep.stops_noted(seen):
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGTERM)
        assert seen == [signal.SIGINT, signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is sigterm.stop_as_interrupted
        assert signal.getsignal(signal.SIGINT) is interrupt
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            signal.raise_signal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, before)
