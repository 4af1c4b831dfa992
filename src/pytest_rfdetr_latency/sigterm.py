"""A run stopped from outside: a CI job's time limit or its cancel button sends SIGTERM, and the run ends as Ctrl-C
ends it (plugin.pytest_configure installs ``stop_as_interrupted``), except while its files are written (``held``)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any


def stop_as_interrupted(signum: int, frame: object) -> None:
    """SIGTERM as Ctrl-C: pytest finishes the session, the processes this run started are stopped, the summary and
    the report say what was measured, and no baseline or history is half written (collector.ResultCollector)."""
    raise KeyboardInterrupt(f"stopped by signal {signum} (SIGTERM)")


@contextlib.contextmanager
def held(notes: list[str], ours: bool = True) -> Iterator[None]:
    """SIGTERM held back while the run's files are written whole; one that arrived meanwhile is taken then and said
    in ``notes``. Only where this run handles SIGTERM (``ours``: plugin.pytest_configure), from the main thread.

    Two holds, because a SIGTERM sent to the process goes to any thread that does not block it (torch's and ONNX
    Runtime's pools do not): blocked in this thread, it waits in the process's queue, where ``sigtimedwait`` takes it;
    taken by another thread, Python runs the handler in this one, and for the while that handler only notes it.
    ``signal.signal`` runs any handler still due before it puts the run's own back; a SIGTERM that arrives as the
    hold ends stops the run then, its files already whole."""
    if not (ours and threading.current_thread() is threading.main_thread()):
        yield
        return
    arrived: list[int] = []

    def note(signum: int, frame: object) -> None:
        arrived.append(signum)

    def take_the_blocked_one() -> None:
        if signal.sigtimedwait({signal.SIGTERM}, 0) is not None:
            arrived.append(signal.SIGTERM)

    def say_so() -> None:
        if arrived:
            notes.append("SIGTERM arrived while this run's files were written; they were finished first")

    blocks = hasattr(signal, "pthread_sigmask") and hasattr(signal, "sigtimedwait")  # macOS has no sigtimedwait
    with contextlib.ExitStack() as undo:  # undone last to first, each step even where one before it raised
        undo.callback(say_so)
        before = signal.signal(signal.SIGTERM, note)
        undo.callback(_put_back, signal.SIG_DFL if before is None else before)
        if blocks:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            undo.callback(signal.pthread_sigmask, signal.SIG_UNBLOCK, {signal.SIGTERM})
            undo.callback(take_the_blocked_one)
        yield


def _put_back(handler: signal.Handlers | Callable[[int, FrameType | None], Any] | int) -> None:
    """The run's SIGTERM handler back in place, whatever else is due: ``signal.signal`` first runs any handler still
    pending (a Ctrl-C, or GitHub's cancel, which sends SIGINT first) and, where that raises, swaps nothing. Then the
    swap is made and what was raised goes on."""
    try:
        signal.signal(signal.SIGTERM, handler)
    except BaseException:
        signal.signal(signal.SIGTERM, handler)  # the pending handler has run: nothing is due now
        raise
