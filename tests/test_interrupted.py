"""A run stopped from outside: SIGTERM (a CI job's time limit or cancel) ends it as Ctrl-C does, the processes it
started are stopped with it, and nothing is half saved."""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_rfdetr_latency.measure.processes import run_child
from pytest_rfdetr_latency.measure.settings import Settings
from pytest_rfdetr_latency.sigterm import held, stop_as_interrupted

SLEEPER = """
import sys, time
open(sys.argv[1], "w").write(str(__import__("os").getpid()))
time.sleep(60)
"""


class _Launch:
    """What run_child needs of a launch: a command and a folder (a plain script instead of pytest)."""

    def __init__(self, *args: str) -> None:
        self.cwd = Path.cwd()
        self._command = [sys.executable, "-c", SLEEPER, *args]

    def command(self, targets: object) -> list[str]:
        return self._command


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_sigterm_stops_a_fresh_process_that_lives_in_a_session_of_its_own(tmp_path: Path) -> None:
    # A fresh process (a recording's, a confirmation's) gets a session of its own, so neither Ctrl-C at a terminal nor
    # a SIGTERM to this process reaches it: unless it is stopped, it measures on alone, on the runner's GPU.
    pid_file = tmp_path / "pid"

    def terminate_once_started() -> None:
        while not pid_file.exists() or not pid_file.read_text():
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.signal(signal.SIGTERM, stop_as_interrupted)
    try:
        threading.Thread(target=terminate_once_started, daemon=True).start()
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            run_child(_Launch(str(pid_file)), [], Settings(), timeout=60)  # type: ignore[arg-type]
    finally:
        signal.signal(signal.SIGTERM, before)
    assert time.monotonic() - start < 30
    assert _gone(int(pid_file.read_text()))


SUITE = """
import os, signal

def test_latency(rfdetr_case):
    rfdetr_case.check()

def test_stopped_from_outside():
    os.kill(os.getpid(), signal.SIGTERM)
"""


def test_a_recording_stopped_by_sigterm_saves_nothing_and_reports_what_it_measured(
    pytester: pytest.Pytester, tmp_path: Path, fake_backend: Any
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    baselines, history, report = tmp_path / "baselines", tmp_path / "history", tmp_path / "report.json"
    result = pytester.runpytest_subprocess(
        "--save-baseline", "--rfdetr-device=cpu", "--rfdetr-models=RFDETRNano", "--rfdetr-backends=torch-fp32",
        "--rfdetr-sampling=quick,min-blocks=4,max-seconds=1,warmup-seconds=0.5", "--rfdetr-images=2",
        f"--rfdetr-cache-dir={tmp_path / 'cache'}", f"--rfdetr-baseline-dir={baselines}",
        f"--rfdetr-history={history}", f"--rfdetr-report={report}", "-p", "no:randomly", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED, result.stdout.str()
    out = result.stdout.str()
    assert "stopped by signal 15 (SIGTERM)" in out
    assert "interrupted after 1 case(s): no baseline saved and no history added (their files are as they were)" in out
    assert not baselines.exists() or not list(baselines.glob("*.json"))
    assert not history.exists() or not list(history.iterdir())
    written = json.loads(report.read_text())
    assert written["interrupted"] is True and written["baseline_file"] is None
    assert [(case["id"], case["outcome"]) for case in written["cases"]] == [("RFDETRNano-torch-fp32", "not-saved")]
    assert "NOT SAVED" in out


def test_the_handler_is_the_runs_alone_and_pytest_gets_the_old_one_back(
    pytester: pytest.Pytester, tmp_path: Path, fake_backend: Any
) -> None:
    # In this process: a run that is not stopped records its case, and leaves SIGTERM as it found it.
    pytester.makepyfile(test_suite=SUITE.replace("os.kill(os.getpid(), signal.SIGTERM)", "pass"))
    before = signal.getsignal(signal.SIGTERM)
    saved = pytester.runpytest(
        "--save-baseline", "--rfdetr-device=cpu", "--rfdetr-models=RFDETRNano", "--rfdetr-backends=torch-fp32",
        "--rfdetr-sampling=quick,min-blocks=4,max-seconds=1,warmup-seconds=0.5", "--rfdetr-images=2",
        f"--rfdetr-cache-dir={tmp_path / 'cache'}", f"--rfdetr-baseline-dir={tmp_path / 'baselines'}",
        "-p", "no:randomly", "-p", "no:cacheprovider")
    assert saved.ret == 0 and len(list((tmp_path / "baselines").glob("*.json"))) == 1
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_sigterm_while_the_files_are_written_waits_for_them_and_is_said() -> None:
    notes: list[str] = []
    before = signal.signal(signal.SIGTERM, stop_as_interrupted)
    try:
        with held(notes):
            os.kill(os.getpid(), signal.SIGTERM)  # held: nothing is raised here
            # Another thread of this process (an earlier test's torch pool) may take the signal; writing files takes
            # long enough for it to have been scheduled and handled it (one that arrives as the hold ends stops the
            # run then, its files whole).
            time.sleep(0.2)
            written = True
        assert signal.getsignal(signal.SIGTERM) is stop_as_interrupted  # the run's own handler back
        with held(notes):
            pass
    finally:
        signal.signal(signal.SIGTERM, before)
    assert written and notes == ["SIGTERM arrived while this run's files were written; they were finished first"]


def test_where_a_sigterm_cannot_be_blocked_it_is_held_all_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    # macOS has no sigtimedwait: the hold is the handler that only notes the signal.
    monkeypatch.delattr(signal, "sigtimedwait")
    notes: list[str] = []
    before = signal.signal(signal.SIGTERM, stop_as_interrupted)
    try:
        with held(notes):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
            written = True
        assert signal.getsignal(signal.SIGTERM) is stop_as_interrupted
    finally:
        signal.signal(signal.SIGTERM, before)
    assert written and notes == ["SIGTERM arrived while this run's files were written; they were finished first"]


def test_a_ctrl_c_due_as_the_hold_ends_still_gets_the_runs_handler_put_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # signal.signal first runs any handler still due; where that raises (a Ctrl-C, or GitHub's cancel, which sends
    # SIGINT before SIGTERM), it swaps nothing. Left in place, the noting handler would swallow every later SIGTERM.
    real = signal.signal
    raised: list[bool] = []

    def with_a_ctrl_c_due(signum: int, handler: Any) -> Any:
        if handler is stop_as_interrupted and not raised:
            raised.append(True)
            raise KeyboardInterrupt("ctrl-c")  # as CPython does when the handler due raises: nothing swapped
        return real(signum, handler)

    before = signal.signal(signal.SIGTERM, stop_as_interrupted)
    try:
        monkeypatch.setattr(signal, "signal", with_a_ctrl_c_due)
        with pytest.raises(KeyboardInterrupt, match="ctrl-c"), held([]):
            pass
        monkeypatch.undo()
        assert raised and signal.getsignal(signal.SIGTERM) is stop_as_interrupted
    finally:
        real(signal.SIGTERM, before)


def test_a_sigterm_another_thread_takes_while_the_files_are_written_waits_too() -> None:
    # A SIGTERM to the process may land on any thread that does not block it: torch's and ONNX Runtime's pools. It
    # is held all the same; raised here, it would end the run between two files.
    notes: list[str] = []
    waiting, done = threading.Event(), threading.Event()

    def pool_thread() -> None:
        waiting.set()
        done.wait(30)

    other = threading.Thread(target=pool_thread, daemon=True)
    read, write = os.pipe()
    os.set_blocking(write, False)
    wakeup = signal.set_wakeup_fd(write)  # the other thread's C-level handler writes here once it has the signal
    before = signal.signal(signal.SIGTERM, stop_as_interrupted)
    try:
        other.start()
        waiting.wait(30)
        with held(notes):
            assert other.ident is not None
            signal.pthread_kill(other.ident, signal.SIGTERM)
            assert select.select([read], [], [], 30)[0], "the other thread never took the SIGTERM"
            written = True
        assert signal.getsignal(signal.SIGTERM) is stop_as_interrupted
    finally:
        done.set()
        signal.signal(signal.SIGTERM, before)
        signal.set_wakeup_fd(wakeup)
        os.close(read)
        os.close(write)
    assert written and notes == ["SIGTERM arrived while this run's files were written; they were finished first"]
