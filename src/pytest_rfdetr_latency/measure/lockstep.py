"""Taking turns: a head to head's processes, both sides, live at once and measuring block by block in a ring.

On a shared runner the launching core's speed changes from one second to the next (docs/pr-gate.md), so two
processes measured one after the other see different hosts. Here the processes of one or more pairs (one process per
side each) run at once; the parent hands each child two pipes and conducts:

- **Aside.** A child that writes ``p`` (``begin`` at its start, ``step_aside`` once a case is sampled) waits until
  every live child has stepped aside or exited; then all are released together and work on their own, at once:
  importing, building, tracing, exporting, parity. What takes most of a process's time runs in parallel.
- **In the ring.** A child that writes ``j`` (``join``, before a case's first warm-up) waits until every live child
  has joined, stepped aside or exited; from then on only one child works at any moment. The parent gives the turn to
  each waiting child in order, round after round; the child warms up, sizes and times one block, and hands the turn
  back by writing ``.`` (``turn``, before its next timed block), or ``p`` once its case is sampled.

While all work at once, each takes its share of the cores (``sharing_cores``): the parent passes the cores it may use
divided by the children, and torch's intra-op pool is cut to that many threads while the process prepares. Eight
processes each running sixteen threads on sixteen cores spend most of their time waiting for each other: the H200's
ring prepared a torch case in 25-45 s this way, where one process alone takes 3-7 s; on shares of the cores it
took 3-9 s (docs/pr-gate.md, seventh and ninth sessions).

So nothing prepares while anything samples, and consecutive blocks of a pair's two processes are a block apart in
time: a host state that lasts longer than a block is seen by both. Each case's ring starts from the first child, so
that a pair's two stay neighbours in their order; a child keeps step case for case (case.py joins the ring even for a
case it does not sample, and a wait cut short by a signal's exception takes the byte it was due before the next). A
child whose plugin predates this protocol never writes a byte: it runs alone to its end while the others wait aside,
and is counted as taking no turns. A stopped run hangs up (``Pipes.hang_up``): a child's wait then ends as Ctrl-C
would, and its session writes the cases it finished.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

# "DONE_FD,GO_FD": the child's ends of its two pipes. Named apart from the pair-at-a-time protocol's
# _PYTEST_RFDETR_LATENCY_TURNS, whose children waited for a turn before writing anything: such a child never sees this
# one, writes nothing and runs alone.
TURNS_ENV = "_PYTEST_RFDETR_LATENCY_RING"
SHARE_ENV = "_PYTEST_RFDETR_LATENCY_RING_SHARE"  # the threads a child may use while every child works at once

_ends: tuple[int, int] | None = None  # this process's (done, go) ends, once begin() found them
_owed = False  # a wait for the parent's byte was cut short (an exception in a signal handler): that byte is still due
_cases = 0  # the cases this process has joined the ring for: its place in the run's sequence of cases
_share: int | None = None  # this process's share of the cores while every process works at once (SHARE_ENV)
_in_ring = False  # joined, and not yet stepped aside


def begin() -> None:
    """In a child: take the ends the parent passed, and step aside until every child has started (``step_aside``).
    Does nothing elsewhere."""
    global _ends, _share
    given = os.environ.pop(TURNS_ENV, None)
    share = os.environ.pop(SHARE_ENV, "")
    if not given or _ends is not None:
        return
    _share = int(share) if share.isdigit() and int(share) > 0 else None
    done, go = (int(part) for part in given.split(","))
    for fd in (done, go):  # a process this one starts must not hold the pipes open
        os.set_inheritable(fd, False)
    _ends = (done, go)
    step_aside()


def taking_turns() -> bool:
    """Whether this process is one of those that take turns (begin found the parent's pipes)."""
    return _ends is not None


def join() -> int:
    """Wait to enter the ring: until every live child has joined or stepped aside, and then for this one's turn. How
    many cases this process has joined for, this one included (0 outside a ring): processes that joined for the same
    case with the same count sampled it in the same ring."""
    global _cases, _in_ring
    if _ends is None:
        return 0
    _hand_back(b"j")
    _in_ring = True
    _cases += 1
    return _cases


def turn() -> float:
    """Hand the turn to the next child and wait until it comes back; the seconds waited (0 outside a ring)."""
    return _hand_back(b".")


def step_aside() -> None:
    """Leave the ring (a case is sampled) and wait until every live child has left it; then all work at once."""
    global _in_ring
    _hand_back(b"p")
    _in_ring = False


def cores_while_preparing() -> int | None:
    """This process's share of the cores where it works at once with the others (taking turns, not in the ring);
    None elsewhere. For a pool that is sized once when it is made (ONNX Runtime's), which ``sharing_cores`` cannot
    cut."""
    return _share if _ends is not None and not _in_ring else None


@contextmanager
def sharing_cores() -> Iterator[None]:
    """Taking turns and working at once with the others (not in the ring): torch's intra-op threads cut to this
    process's share of the cores for the block, and given back after it; after a block that ended cleanly, the pool's
    threads are started there and then (after an exception the case stops, and the next case's block starts them).
    Elsewhere nothing changes.

    Started lazily, the threads given back would start at the ring's first parallel call, on the launching thread
    that the ring pins to one core, and inherit that core: on the H200, fourteen threads on the launch core made
    torch's first end-to-end calls about 150 ms instead of 11-38 (the warm-up, sized by them, left 21 blocks instead of
    50, and a self-test's injected delay, sized by them too, was 45 % instead of 5 %) until the pool was swept off."""
    if _ends is None or _share is None or _in_ring:
        yield
        return
    import torch

    full = torch.get_num_threads()
    if _share >= full:
        yield
        return
    torch.set_num_threads(_share)
    try:
        yield
    finally:
        torch.set_num_threads(full)
    torch.ones(full * _GRAIN).add_(1.0)  # one parallel region of every thread: the pool starts here, on these cores


_GRAIN = 32768  # the elements torch gives a thread of an elementwise operation at least (at::internal::GRAIN_SIZE)


def _hand_back(byte: bytes) -> float:
    global _owed
    if _ends is None:
        return 0.0
    done, go = _ends
    start = time.perf_counter()
    if _owed:  # take the byte an interrupted wait was due first, so that the next one answers this byte
        _wait(go)
        _owed = False
    os.write(done, byte)
    _owed = True
    _wait(go)
    _owed = False
    return time.perf_counter() - start


def _wait(go: int) -> None:
    if not os.read(go, 1):  # the parent hung up (a stopped run) or is gone: end as Ctrl-C would, with what is done
        raise HungUp("the run that conducted the turns was stopped")


@dataclass
class Pipes:
    """The parent's ends of one child's pipes and the child's ends to pass it."""

    go: int  # the parent writes here to give the turn
    done: int  # the parent reads here: a byte when the turn is handed back, end of file when the child exits
    child_done: int
    child_go: int

    @classmethod
    def open(cls) -> Pipes:
        done_read, done_write = os.pipe()
        go_read, go_write = os.pipe()
        return cls(go=go_write, done=done_read, child_done=done_write, child_go=go_read)

    def child_env(self, share: int | None = None) -> dict[str, str]:
        """What a child needs to take part: its ends, and the threads it may use while all work at once."""
        env = {TURNS_ENV: f"{self.child_done},{self.child_go}"}
        if share is not None:
            env[SHARE_ENV] = str(max(1, share))
        return env

    @property
    def child_fds(self) -> tuple[int, int]:
        return self.child_done, self.child_go

    def close_child_ends(self) -> None:
        _close(self.child_done)
        _close(self.child_go)
        self.child_done = self.child_go = -1

    def hang_up(self) -> None:
        """No more turns: the child's waits, the one it is in and every later one, end (``HungUp``)."""
        _close(self.go)
        self.go = -1

    def close(self) -> None:
        self.close_child_ends()
        _close(self.go)
        _close(self.done)
        self.go = self.done = -1


def _close(fd: int) -> None:
    if fd < 0:
        return
    try:
        os.close(fd)
    except OSError:
        pass


class HungUp(KeyboardInterrupt):
    """In a child: the parent closed its end of the turns (``Pipes.hang_up``, a stopped run) or exited. A
    KeyboardInterrupt, so that the child's session ends as interrupted and still writes the cases it finished; every
    later wait ends the same way at once, a ``finally`` that steps aside included."""


@contextmanager
def stops_noted(seen: list[int]) -> Iterator[None]:
    """In the parent: Ctrl-C and SIGTERM noted in ``seen`` instead of raised, while a stopped run collects what its
    children finished. Raised there, a second stop (CI sends SIGTERM seconds after SIGINT) would drop all of it; the
    caller cuts its waiting short once ``seen`` holds one. Only from the main thread, and only for a signal whose
    handler Python set (one set from C stays as it is). Each is put back however the block ends. (sigterm.held does
    the like for the session's files; the measuring part may not import the pytest face.)"""
    import contextlib
    import signal
    import threading

    def note(signum: int, frame: object) -> None:
        seen.append(signum)

    with contextlib.ExitStack() as undo:
        for signum in (signal.SIGINT, signal.SIGTERM):
            if threading.current_thread() is threading.main_thread() and signal.getsignal(signum) is not None:
                undo.callback(signal.signal, signum, signal.signal(signum, note))
        yield


class TurnTimeout(RuntimeError):
    """A child kept the others waiting (its turn, or its work before joining or stepping aside) past the deadline."""


FREE, RING, ASIDE, GONE = "free", "ring", "aside", "gone"  # a child's state, as the parent conducts it


def alternate(pipes: Sequence[Pipes], deadline: float, turns: list[int] | None = None) -> list[int]:
    """Conduct ``pipes``' children (the module's protocol) until every one has exited; how many turns each handed
    back, counted in ``turns`` where given (so that a caller stopped midway still has them). Raises TurnTimeout when a
    child keeps the others waiting past ``deadline`` (time.monotonic)."""
    states = [FREE] * len(pipes)
    turns = [0] * len(pipes) if turns is None else turns
    following = 0  # where the ring's next round-robin search starts
    while True:
        free = [i for i, state in enumerate(states) if state == FREE]
        if free:  # wait for the children working on their own: each joins, steps aside or exits
            index = _first_to_speak([pipes[i] for i in free], deadline)
            _take(states, turns, free[index], _read(pipes[free[index]]))
            continue
        ring = [i for i in [*range(following, len(pipes)), *range(following)] if states[i] == RING]
        if ring:
            index = ring[0]
            following = index + 1
            _take(states, turns, index, _give_and_read(pipes[index], deadline))
            continue
        aside = [i for i, state in enumerate(states) if state == ASIDE]
        if not aside:
            return turns
        for index in aside:
            _write_go(pipes[index])
            states[index] = FREE
        following = 0  # each case's ring starts from the first child, so that a pair's two stay neighbours in order


def _take(states: list[str], turns: list[int], index: int, byte: bytes) -> None:
    """A child's new state from the byte it wrote (end of file: it exited)."""
    if byte == b".":
        turns[index] += 1
    states[index] = {b".": RING, b"j": RING, b"p": ASIDE}.get(byte, GONE)


def _give_and_read(pipe: Pipes, deadline: float) -> bytes:
    _write_go(pipe)
    _first_to_speak([pipe], deadline)
    return _read(pipe)


def _write_go(pipe: Pipes) -> None:
    try:
        os.write(pipe.go, b".")
    except BrokenPipeError:  # exited; its end of file is still to read
        pass


def _read(pipe: Pipes) -> bytes:
    try:
        return os.read(pipe.done, 1)
    except OSError:
        return b""


def _first_to_speak(pipes: Sequence[Pipes], deadline: float) -> int:
    """Which of ``pipes`` has a byte (or its end of file) to read first."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TurnTimeout("a process kept the others waiting past the time limit")
        ready, _, _ = select.select([pipe.done for pipe in pipes], [], [], min(left, 5.0))
        if ready:
            return [pipe.done for pipe in pipes].index(ready[0])
