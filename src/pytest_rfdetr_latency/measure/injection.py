"""Injected slowdowns, for the gate's self-tests (--rfdetr-inject-slowdown, --rfdetr-inject-on): a busy wait on the
launching thread, or a spinning GPU kernel calibrated against CUDA events and, inside a CUDA graph, resized until it
adds what was asked. measure/case.py decides which scope gets which; nothing here runs unless a self-test asks."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from pytest_rfdetr_latency.measure.profiling import labelled
from pytest_rfdetr_latency.measure.timing import Clock, CudaEventClock, Fn
from pytest_rfdetr_latency.verdict.stats import statistic_of


def host_delay(ms: float) -> Fn:
    """A busy wait of ``ms`` milliseconds on the calling thread (sleep() is too coarse below a millisecond)."""
    ns = int(ms * 1e6)

    def delay() -> None:
        end = time.perf_counter_ns() + ns
        while time.perf_counter_ns() < end:
            pass

    return delay


def gpu_delay(ms: float, device: str, cycles: int | None = None) -> Fn:
    """One GPU kernel that spins for ``ms`` milliseconds, calibrated on this GPU against CUDA events (or for the
    given number of ``cycles``)."""
    import torch

    dev = torch.device(device)
    if cycles is None:
        clock = CudaEventClock(dev)
        probes = [200_000, 2_000_000]
        with torch.cuda.device(dev):
            for c in probes:
                torch.cuda._sleep(c)  # warm
            times = [statistic_of(clock.time_calls(functools.partial(torch.cuda._sleep, c), 7), "median")
                     for c in probes]
        per_ms = (probes[1] - probes[0]) / max(times[1] - times[0], 1e-6)
        overhead_ms = max(0.0, times[0] - probes[0] / per_ms)
        cycles = max(1, int((ms - overhead_ms) * per_ms))
    count = cycles

    def delay() -> None:
        with torch.cuda.device(dev):
            torch.cuda._sleep(count)

    delay.cycles = count  # type: ignore[attr-defined]
    return delay


def injected_graph(
    forward: Fn, plain: Fn, ms: float, clock: Clock, capture: Callable[[Fn], Fn], spin: Callable[[int | None], Fn],
    tries: int = 3,
) -> tuple[Fn, Fn]:
    """The forward's CUDA graph with a spinning kernel that adds ``ms`` to its replay, as measured: a kernel
    calibrated alone adds less or more inside a graph (no launch overhead there; the GPU's tail), so the time it
    adds is measured against the plain replay and the kernel resized, a few times. ``capture`` makes a graph replay
    of a callable, ``spin(cycles)`` the kernel (None: calibrated alone). Returns the replay and the kernel."""
    extra = spin(None)
    base = statistic_of(clock.time_calls(plain, 30), "median")
    replay = capture(with_extra(forward, extra))
    for _ in range(tries):
        added = statistic_of(clock.time_calls(replay, 30), "median") - base
        if added <= 0 or abs(added - ms) <= 0.05 * ms:
            break
        extra = spin(max(1, int(extra.cycles * ms / added)))  # type: ignore[attr-defined]
        replay = capture(with_extra(forward, extra))
    return replay, extra


def with_extra_before(fn: Fn, extra: Fn, label: bool = False) -> Fn:
    """``extra`` then ``fn``: host work that delays the launches, as a slower Python path before a call would. With
    ``label`` (a run that profiles) the extra work carries a profiler label (profiling.INJECTED), so that a diagnosis
    can name it."""
    extra = labelled(extra) if label else extra

    def both() -> object:
        extra()
        return fn()

    return both


def with_extra(fn: Fn, extra: Fn | None, label: bool = False) -> Fn:
    """``fn`` then ``extra``, labelled as with_extra_before labels it."""
    if extra is None:
        return fn
    extra = labelled(extra) if label else extra

    def both() -> object:
        out = fn()
        extra()
        return out

    return both
