"""Taking turns: a head to head's two sides, one live process each, measuring block by block in alternation.

On a shared runner the launching core's speed changes from one second to the next (docs/pr-gate.md), so two
processes measured one after the other see different hosts. Here a pair of processes, one per side, runs at once
and takes turns: the parent hands each child two pipes, a child waits for its turn before it starts work and before
each timed block (timing.sample), and hands the turn back by writing one byte. Only one process of the pair works at
any moment, the other blocked on a read, not spinning; consecutive blocks of the two sides are a block apart in
time, so a host state that lasts longer than a block is seen by both.

The second process of a pair starts only once the first has handed back its first turn (or exited), so that a
child whose plugin predates this module, which never hands the turn back, runs to its end while the other waits,
whichever goes first: the pair is then measured one after the other, and the parent says so.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Sequence
from dataclasses import dataclass

TURNS_ENV = "_PYTEST_RFDETR_LATENCY_TURNS"  # "DONE_FD,GO_FD": the child's ends of its two pipes

_ends: tuple[int, int] | None = None  # this process's (done, go) ends, once begin() found them


def begin() -> None:
    """In a child: take the ends the parent passed, and wait for the first turn. Does nothing elsewhere."""
    global _ends
    given = os.environ.pop(TURNS_ENV, None)
    if not given or _ends is not None:
        return
    done, go = (int(part) for part in given.split(","))
    for fd in (done, go):  # a process this one starts must not hold the pair's pipes open
        os.set_inheritable(fd, False)
    _ends = (done, go)
    _wait(go)


def turn() -> float:
    """Hand the turn to the other side and wait until it comes back; the seconds waited (0 outside a pair)."""
    if _ends is None:
        return 0.0
    done, go = _ends
    start = time.perf_counter()
    os.write(done, b".")
    _wait(go)
    return time.perf_counter() - start


def _wait(go: int) -> None:
    if not os.read(go, 1):  # the parent is gone: nobody will read what this process measures
        os._exit(3)


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

    def child_env(self) -> dict[str, str]:
        return {TURNS_ENV: f"{self.child_done},{self.child_go}"}

    @property
    def child_fds(self) -> tuple[int, int]:
        return self.child_done, self.child_go

    def close_child_ends(self) -> None:
        _close(self.child_done)
        _close(self.child_go)
        self.child_done = self.child_go = -1

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


class TurnTimeout(RuntimeError):
    """A child held its turn past the deadline."""


def alternate(pipes: Sequence[Pipes], deadline: float) -> list[int]:
    """Give the turn to each live child in order, round after round, until every child has exited; how many turns
    each handed back. Raises TurnTimeout when a child holds its turn past ``deadline`` (time.monotonic)."""
    turns = [0] * len(pipes)
    live = list(range(len(pipes)))
    while live:
        for index in list(live):
            if not give(pipes[index], deadline):
                live.remove(index)
            else:
                turns[index] += 1
    return turns


def give(pipe: Pipes, deadline: float) -> bool:
    """One turn of one child: True once it handed the turn back, False once it has exited."""
    try:
        os.write(pipe.go, b".")
    except BrokenPipeError:  # exited between turns; its end of file is still to read
        pass
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TurnTimeout("a process held its turn past the time limit")
        ready, _, _ = select.select([pipe.done], [], [], min(left, 5.0))
        if ready:
            return bool(os.read(pipe.done, 1))
