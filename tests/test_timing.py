"""The GPU-only timing paths, run on a CPU with fakes: NVML readings and throttle dropping, warm-up, block
sampling, and the self-test's kernel sized inside a CUDA graph."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_rfdetr_latency.measure import injection, timing
from pytest_rfdetr_latency.measure.sampling import PRESETS, parse_sampling


class FakeClock:
    """Times a call as the milliseconds the callable returns (a model of the GPU), instead of measuring it."""

    kind = "fake"

    def __init__(self) -> None:
        self.calls = 0

    def time_calls(self, fn: Callable[[], object], count: int) -> list[float]:
        self.calls += count
        return [float(fn()) for _ in range(count)]  # type: ignore[arg-type]


class FakeNvml:
    """pynvml's calls the monitor makes, answering from a script of (SM clock, throttle mask) readings."""

    NVML_CLOCK_SM = 0
    NVML_CLOCK_MEM = 1
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, readings: list[tuple[int, int]]) -> None:
        self.readings = readings
        self.index = 0

    def _now(self) -> tuple[int, int]:
        return self.readings[min(self.index, len(self.readings) - 1)]

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        mask = self._now()[1]
        self.index += 1
        return mask

    def nvmlDeviceGetClockInfo(self, handle: Any, kind: int) -> int:
        return self._now()[0] if kind == self.NVML_CLOCK_SM else 3201

    def nvmlDeviceGetTemperature(self, handle: Any, kind: int) -> int:
        return 40

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return 250_000


def test_the_monitor_reads_clocks_power_and_throttle_reasons() -> None:
    monitor = timing.GpuMonitor(handle="gpu0", nvml=FakeNvml([(1980, 0x20 | 0x4)]))
    state = monitor.read()
    assert monitor.available and state.sm_clock_mhz == 1980 and state.power_w == 250.0
    assert state.reasons == ("sw_thermal_slowdown", "sw_power_cap") and state.throttled
    assert not timing.GpuMonitor().read().throttled  # no NVML: nothing recorded, nothing dropped


def test_blocks_taken_while_the_gpu_throttled_are_dropped_and_counted() -> None:
    # Every third block reads a hardware slowdown.
    nvml = FakeNvml([(1980, 0x8 if i % 3 == 2 else 0) for i in range(200)])
    plan = parse_sampling("quick,min-blocks=6,max-blocks=9,target=0.0001")
    sampled = timing.sample(lambda: 2.0, FakeClock(), timing.GpuMonitor("gpu0", nvml), plan, "median", block_size=4)
    assert len(sampled.blocks) == 8 and sampled.dropped == 2 and len(sampled.kept) == 6  # six kept: precise, stop
    assert all(len(b) == 4 for b in sampled.blocks) and len(sampled.host_ms) == 8


def test_the_turns_minimum_asks_no_more_than_three_seconds_of_calls() -> None:
    # Head to head's default: 50 one-call blocks for a GPU call of up to 60 ms; ONNX Runtime's CPU calls (114-290 ms
    # on the H200) about 3 s of them, never fewer than ten blocks; a plan without the cap keeps its minimum.
    turns = PRESETS["turns"]
    assert turns.warmup_seconds == 1.0
    assert [turns.fewest_blocks(ms, 1) for ms in (5.0, 60.0, 114.0, 290.0, 2000.0, None)] == [50, 50, 27, 11, 10, 50]
    assert PRESETS["standard"].fewest_blocks(290.0, 1) == 10 and PRESETS["thorough"].fewest_blocks(290.0, 1) == 20
    assert parse_sampling("turns,min-blocks-seconds=12").fewest_blocks(290.0, 1) == 42
    for bad in ("0", "nan", "inf"):
        with pytest.raises(ValueError, match="min-blocks-seconds > 0 and finite"):
            parse_sampling(f"turns,min-blocks-seconds={bad}")
    # sample() stops at that many when the calls agree (identical calls: precise at once), or at the count head to
    # head shares between its processes where one is given.
    sampled = timing.sample(lambda: 290.0, FakeClock(), timing.GpuMonitor(), turns, "median", call_ms=290.0)
    assert len(sampled.blocks) == 11 and sampled.block_size == 1
    shared = timing.sample(lambda: 290.0, FakeClock(), timing.GpuMonitor(), turns, "median", call_ms=290.0, fewest=14)
    assert len(shared.blocks) == 14


def test_taking_turns_every_process_takes_exactly_the_shared_count(monkeypatch: pytest.MonkeyPatch) -> None:
    import itertools

    from pytest_rfdetr_latency.measure import lockstep

    calls = itertools.cycle([5.0, 9.0])  # far from precise: alone, a process samples on past the count it was given
    plan = PRESETS["turns"]
    alone = timing.sample(lambda: next(calls), FakeClock(), timing.GpuMonitor(), plan, "p20", call_ms=7.0, fewest=40)
    assert len(alone.blocks) > 40
    monkeypatch.setattr(lockstep, "_ends", (-1, -1))  # one of the processes taking turns (the turns themselves faked)
    monkeypatch.setattr(lockstep, "turn", lambda: 0.0)
    assert lockstep.taking_turns()
    turns = timing.sample(lambda: next(calls), FakeClock(), timing.GpuMonitor(), plan, "p20", call_ms=7.0, fewest=40)
    assert len(turns.blocks) == 40


def test_what_a_block_costs_beyond_its_calls_is_written_down(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from pytest_rfdetr_latency.measure import lockstep

    class SlowMonitor(timing.GpuMonitor):
        def read(self) -> timing.GpuState:
            time.sleep(0.002)
            return timing.GpuState()

    monkeypatch.setattr(lockstep, "_ends", (-1, -1))

    def turn() -> float:  # each turn waits for the others
        start = time.perf_counter()
        time.sleep(0.05)
        return time.perf_counter() - start

    monkeypatch.setattr(lockstep, "turn", turn)
    plan = PRESETS["turns"]
    start = time.perf_counter()
    sampled = timing.sample(lambda: 5.0, FakeClock(), SlowMonitor(), plan, "p20", call_ms=5.0, fewest=10)
    took = time.perf_counter() - start
    assert len(sampled.blocks) == 10 and sampled.waited_seconds >= 0.5
    assert 0.02 <= sampled.monitor_seconds <= sampled.seconds and 0 < sampled.yardstick_seconds < sampled.seconds
    assert sampled.seconds <= took - sampled.waited_seconds + 1e-6  # the waits are not the scope's own time


def test_head_to_head_processes_take_the_first_ones_block_size_and_fewest_blocks(tmp_path: Path) -> None:
    from pytest_rfdetr_latency.measure.case import _shared_sizes

    sizes = tmp_path / "sizes.json"
    assert _shared_sizes(sizes, "M-onnx-cpu/forward", (1, 53)) == (1, 53)
    assert _shared_sizes(sizes, "M-onnx-cpu/forward", (2, 61)) == (1, 53)  # a later process's own does not count
    assert json.loads(sizes.read_text()) == {"M-onnx-cpu/forward": 1, "M-onnx-cpu/forward/fewest": 53}


def test_sampling_stops_once_precise_and_keeps_the_block_size_it_is_given() -> None:
    plan = PRESETS["standard"]
    clock = FakeClock()
    sampled = timing.sample(lambda: 5.0, clock, timing.GpuMonitor(), plan, "median", call_ms=5.0, block_size=7)
    assert sampled.block_size == 7 and len(sampled.blocks) == plan.min_blocks  # identical calls: precise at once
    assert timing.sample(lambda: 5.0, clock, timing.GpuMonitor(), plan, "median", call_ms=25.0).block_size == 2


def test_warm_up_waits_for_the_clock_to_settle_and_keeps_slow_calls_few() -> None:
    nvml = FakeNvml([(345, 0), (900, 0), (1500, 0), (1980, 0), (1980, 0), (1980, 0)])
    warm = timing.warm_up(lambda: 1.0, FakeClock(), timing.GpuMonitor("gpu0", nvml), PRESETS["standard"])
    assert warm.settled and warm.sm_clocks_mhz[-3:] == [1980, 1980, 1980] and warm.call_ms == 1.0
    counted = {"slow": 0, "fast": 0}

    def call(kind: str, ms: float) -> Callable[[], float]:
        def fn() -> float:
            counted[kind] += 1
            return ms

        return fn

    timing.warm_up(call("fast", 1.0), FakeClock(), timing.GpuMonitor(), PRESETS["standard"])
    timing.warm_up(call("slow", 250.0), FakeClock(), timing.GpuMonitor(), PRESETS["standard"])
    # Fast calls: one timed, nine untimed, two groups of five timed. Slow calls (a 250 ms ONNX-CPU run): one timed,
    # as many untimed as fit a quarter of the 2 s cap (two), then groups of two.
    assert counted == {"fast": 1 + 9 + 10, "slow": 1 + 2 + 4}


def test_the_injected_kernel_is_resized_until_it_adds_what_was_asked_inside_the_graph() -> None:
    # A model GPU: the forward takes 1.9 ms; inside a graph a spin kernel adds only 60 % of its nominal time.
    spent: list[float] = []

    def spin(cycles: int | None) -> Any:
        count = cycles if cycles is not None else 60_000  # "calibrated alone" for 0.03 ms at 2000 cycles/µs

        def kernel() -> None:
            spent.append(0.6 * count / 2_000_000)

        kernel.cycles = count  # type: ignore[attr-defined]
        return kernel

    def capture(fn: Callable[[], object]) -> Callable[[], float]:
        def replay() -> float:
            spent.clear()
            fn()
            return 1.9 + sum(spent)

        return replay

    forward = lambda: None  # noqa: E731
    replay, kernel = injection.injected_graph(forward, lambda: 1.9, 0.038, FakeClock(), capture, spin)
    assert replay() == pytest.approx(1.938, abs=0.038 * 0.05)
    assert kernel.cycles > 60_000  # type: ignore[attr-defined]


def test_launching_on_pins_this_thread_moves_the_others_and_restores_it(tmp_path: Path) -> None:
    import os
    import threading

    from pytest_rfdetr_latency.measure import placement

    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("placing threads needs two cores")
    chosen = placement.Placement(launch=allowed[-1], quiet=(), rest=tuple(allowed[:-1]))
    stop = threading.Event()
    pool = threading.Thread(target=stop.wait)
    pool.start()
    me = threading.get_native_id()
    before = os.sched_getaffinity(me)
    facts: dict[str, int] = {}
    try:
        with placement.launching_on(chosen, facts):
            assert os.sched_getaffinity(me) == {allowed[-1]}
            assert os.sched_getaffinity(pool.native_id) == set(allowed[:-1])  # type: ignore[arg-type]
            assert placement.trespassers(chosen, me) == []
    finally:
        stop.set()
        pool.join()
    assert os.sched_getaffinity(me) == before
    assert facts["moved"] >= 1 and facts["failed"] == 0 and "trespassers" not in facts
    speeds = placement.core_speeds([allowed[0]], repeats=1)
    assert list(speeds) == [allowed[0]] and speeds[allowed[0]] > 0
