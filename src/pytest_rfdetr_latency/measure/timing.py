"""Timers, warm-up and block sampling.

GPU cases are timed with CUDA events, and each timed call ends with a synchronization so that the next one starts
on an idle device: the figure is the latency of one call, launch gaps included. CPU cases use the host clock.
Garbage collection is off while sampling. Where NVML answers, every block records the GPU's clocks, temperature
and throttle reasons; a block taken while the GPU throttled for heat or a hardware slowdown is dropped and counted.
"""

from __future__ import annotations

# Over 350 lines on purpose: clocks, warm-up and block sampling share the clock protocol and the throttle monitor; the
# injected slowdowns left for injection.py.
import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from pytest_rfdetr_latency.measure.sampling import SamplingPlan
from pytest_rfdetr_latency.verdict.stats import relative_uncertainty, statistic_of

Fn = Callable[[], object]


class Clock(Protocol):
    kind: str

    def time_calls(self, fn: Fn, count: int) -> list[float]:
        """Milliseconds taken by each of ``count`` calls of ``fn``."""
        ...


class HostClock:
    """``time.perf_counter_ns`` around each call: right for anything that blocks until its work is done."""

    kind = "host"

    def time_calls(self, fn: Fn, count: int) -> list[float]:
        out: list[float] = []
        counter = time.perf_counter_ns
        for _ in range(count):
            start = counter()
            fn()
            out.append((counter() - start) / 1e6)
        return out


class CudaEventClock:
    """CUDA events on the current stream around each call, then a synchronization, so calls never overlap."""

    kind = "cuda-event"

    def __init__(self, device: Any) -> None:
        import torch

        self._torch = torch
        self._device = torch.device(device)
        self._pairs: list[tuple[Any, Any]] = []

    def _events(self, count: int) -> list[tuple[Any, Any]]:
        torch = self._torch
        while len(self._pairs) < count:
            with torch.cuda.device(self._device):
                self._pairs.append(
                    (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                )
        return self._pairs[:count]

    def time_calls(self, fn: Fn, count: int) -> list[float]:
        torch = self._torch
        pairs = self._events(count)
        stream = torch.cuda.current_stream(self._device)
        torch.cuda.synchronize(self._device)
        for start, end in pairs:
            start.record(stream)
            fn()
            end.record(stream)
            end.synchronize()
        return [float(start.elapsed_time(end)) for start, end in pairs]


def clock_for(device: str) -> Clock:
    return CudaEventClock(device) if device.startswith("cuda") else HostClock()


# ---------------------------------------------------------------------------------------------------------------
# GPU state through NVML (nvidia-ml-py). Optional: where NVML does not answer, nothing is recorded or dropped.

# Throttle reasons that change the speed of the work being timed; the power cap is recorded but not dropped
# (a GPU at its power limit is in its normal loaded state).
_DROP_REASONS = {
    "hw_slowdown": 0x8,
    "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40,
    "hw_power_brake_slowdown": 0x80,
}
_NOTE_REASONS = {"sw_power_cap": 0x4}


@dataclass(frozen=True)
class GpuState:
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    temperature_c: int | None = None
    power_w: float | None = None
    reasons: tuple[str, ...] = ()

    @property
    def throttled(self) -> bool:
        return any(r in _DROP_REASONS for r in self.reasons)

    def to_json(self) -> dict[str, Any]:
        return {
            "sm_clock_mhz": self.sm_clock_mhz,
            "mem_clock_mhz": self.mem_clock_mhz,
            "temperature_c": self.temperature_c,
            "power_w": self.power_w,
            "reasons": list(self.reasons),
        }


class GpuMonitor:
    """Reads one GPU's clocks, temperature and throttle reasons; ``available`` is False where NVML is missing."""

    def __init__(self, handle: Any = None, nvml: Any = None) -> None:
        self._handle = handle
        self._nvml = nvml

    @property
    def available(self) -> bool:
        return self._handle is not None

    @classmethod
    def for_device(cls, device: str) -> GpuMonitor:
        if not device.startswith("cuda"):
            return cls()
        import torch

        from pytest_rfdetr_latency.measure.environment import nvml_handle

        found = nvml_handle(torch.device(device).index or 0)
        return cls() if found is None else cls(found[1], found[0])

    def read(self) -> GpuState:
        if self._handle is None:
            return GpuState()
        nvml, handle = self._nvml, self._handle

        def ask(call: Callable[[], Any]) -> Any:
            try:
                return call()
            except Exception:
                return None

        mask = ask(lambda: nvml.nvmlDeviceGetCurrentClocksEventReasons(handle))
        if mask is None:
            mask = ask(lambda: nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle))
        reasons = tuple(
            name for name, bit in {**_DROP_REASONS, **_NOTE_REASONS}.items() if mask is not None and mask & bit
        )
        power = ask(lambda: nvml.nvmlDeviceGetPowerUsage(handle))
        return GpuState(
            sm_clock_mhz=ask(lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
            mem_clock_mhz=ask(lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM)),
            temperature_c=ask(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
            power_w=None if power is None else power / 1000.0,
            reasons=reasons,
        )


# ---------------------------------------------------------------------------------------------------------------
# Warm-up and sampling.


@contextmanager
def gc_paused(full: bool = True) -> Iterator[None]:
    """The garbage collector off for the block, after a collection: a full one, or (``full=False``) of the young
    generations only, where the caller collected in full before (head to head, before the case joined the ring). A
    full collection of a process holding torch and rfdetr walks every object it has (about 433 000, freeing none, in
    0.21-0.32 s on this project's 2-core development machine: benchmarks/gc_cost.py); taken in a turn of the ring
    (lockstep.py), it held the other processes waiting that long for every scope of every case."""
    was_enabled = gc.isenabled()
    gc.collect(2 if full else 1)
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class Warmup:
    calls: int = 0
    seconds: float = 0.0
    settled: bool = False  # False: the cap was reached before clocks and call times settled
    sm_clocks_mhz: list[int] = field(default_factory=list)
    call_ms: float | None = None  # median of the last timed warm-up calls


# A block should last about this long: long enough to average out timer resolution and single hiccups, short enough
# that a scope's time budget holds many blocks (the verdict's test counts blocks).
BLOCK_MS = 50.0


def block_size_for(call_ms: float | None, plan: SamplingPlan) -> int:
    """Calls per block: ``plan.block_size`` at most, fewer for slow calls (one 120 ms ONNX-CPU call is a block)."""
    if call_ms is None or call_ms <= 0:
        return plan.block_size
    return max(1, min(plan.block_size, round(BLOCK_MS / call_ms)))


def _close(a: float, b: float, tolerance: float) -> bool:
    return abs(a - b) <= tolerance * max(abs(a), abs(b), 1e-9)


def warm_up(fn: Fn, clock: Clock, monitor: GpuMonitor, plan: SamplingPlan) -> Warmup:
    """Call ``fn`` until the GPU clock and the call time have settled, or ``plan.warmup_seconds`` have passed.

    First up to ``plan.warmup_calls`` untimed calls, fewer when calls are slow (they may take a quarter of the time
    cap: ten 250 ms ONNX-CPU calls would use it all); then timed groups of calls until the last three SM-clock
    readings agree within 1 % (where NVML answers) and the median of the last group of call times agrees within 5 %
    with that of the group before.
    """
    record = Warmup()
    start = time.perf_counter()
    first = clock.time_calls(fn, 1)[0]
    record.calls = 1
    fixed = min(plan.warmup_calls - 1, int(0.25 * plan.warmup_seconds * 1000.0 / max(first, 1e-3)))
    for _ in range(max(0, fixed)):
        fn()
        record.calls += 1
    group = 5 if first < 50.0 else 2
    times: list[float] = []
    while time.perf_counter() - start < plan.warmup_seconds:
        times.extend(clock.time_calls(fn, group))
        record.calls += group
        state = monitor.read()
        if state.sm_clock_mhz is not None:
            record.sm_clocks_mhz.append(state.sm_clock_mhz)
        clocks = record.sm_clocks_mhz[-3:]
        clocks_settled = not monitor.available or (
            len(clocks) == 3 and all(_close(c, clocks[-1], 0.01) for c in clocks)
        )
        times_settled = len(times) >= 2 * group and _close(
            statistic_of(times[-group:], "median"), statistic_of(times[-2 * group:-group], "median"), 0.05
        )
        if clocks_settled and times_settled:
            record.settled = True
            break
    record.call_ms = statistic_of(times[-5:] or [first], "median")
    record.seconds = time.perf_counter() - start
    return record


@dataclass
class Sampled:
    """The raw blocks of one scope: kept and dropped, each with the GPU state read and the host yardstick timed
    after it."""

    blocks: list[list[float]] = field(default_factory=list)
    states: list[GpuState] = field(default_factory=list)
    host_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    block_size: int = 0
    # Of ``seconds``, what went to reading the GPU's state and timing the yardstick after each block, and (not in
    # ``seconds``) to waiting for the turn (head to head): what a block costs beyond its calls.
    monitor_seconds: float = 0.0
    yardstick_seconds: float = 0.0
    waited_seconds: float = 0.0

    @property
    def kept(self) -> list[list[float]]:
        return [b for b, s in zip(self.blocks, self.states) if not s.throttled]

    @property
    def kept_host_ms(self) -> list[float]:
        return [h for h, s in zip(self.host_ms, self.states) if not s.throttled]

    @property
    def dropped(self) -> int:
        return sum(1 for s in self.states if s.throttled)


def sample(
    fn: Fn,
    clock: Clock,
    monitor: GpuMonitor,
    plan: SamplingPlan,
    statistic: str,
    call_ms: float | None = None,
    block_size: int | None = None,
    fewest: int | None = None,
    collected: bool = False,
) -> Sampled:
    """Take blocks until the statistic's relative uncertainty reaches ``plan.target``, or time is up.

    ``block_size`` (a baseline's, so that a check samples as its baseline did) or else ``call_ms`` (from the warm-up)
    sizes the blocks. Never fewer than ``fewest`` kept blocks (head to head's, shared by every process), else
    ``plan.fewest_blocks``, unless throttling drops them past three times the time cap. Taking turns, exactly
    ``fewest``: every process the same count, so that the i-th blocks of a pair's two processes are a turn apart in
    every scope (headtohead.HeadToHead.ratios pairs them call by call). ``collected``: the caller collected garbage in
    full before (gc_paused).
    """
    from pytest_rfdetr_latency.measure import lockstep
    from pytest_rfdetr_latency.measure.environment import yardstick_ms

    result = Sampled(block_size=block_size or block_size_for(call_ms, plan))
    need = plan.fewest_blocks(call_ms, result.block_size) if fewest is None else fewest
    exactly = fewest is not None and lockstep.taking_turns()
    start = time.perf_counter()
    with gc_paused(full=not collected):
        while len(result.blocks) < plan.max_blocks:
            waited = lockstep.turn()  # head to head, the other side's blocks come between two of ours
            start += waited
            result.waited_seconds += waited
            result.blocks.append(clock.time_calls(fn, result.block_size))
            read = time.perf_counter()
            result.states.append(monitor.read())
            timed = time.perf_counter()
            result.host_ms.append(yardstick_ms())
            result.monitor_seconds += timed - read
            result.yardstick_seconds += time.perf_counter() - timed
            kept = result.kept
            elapsed = time.perf_counter() - start
            if len(kept) >= need:
                if exactly:
                    break
                values = [statistic_of(b, statistic) for b in kept]
                overall = statistic_of([x for b in kept for x in b], statistic)
                if relative_uncertainty(values, overall) <= plan.target or elapsed >= plan.max_seconds:
                    break
            elif elapsed >= 3 * plan.max_seconds and len(kept) < len(result.blocks):
                break
    result.seconds += time.perf_counter() - start
    return result


# ---------------------------------------------------------------------------------------------------------------
# CUDA graphs.


def capture_cuda_graph(fn: Fn, device: str) -> Fn:
    """Capture ``fn``'s GPU work as a CUDA graph and return its replay. Raises if ``fn`` cannot be captured."""
    import torch

    dev = torch.device(device)
    side = torch.cuda.Stream(dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream(dev).wait_stream(side)
    torch.cuda.synchronize(dev)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()

    def replay() -> None:  # holds the graph, and so its memory pool, for as long as the replay lives
        graph.replay()

    return replay


class Timer:
    """Warm-up, block sampling and a summary in one call: what the ``rfdetr_timer`` fixture hands to tests."""

    def __init__(self, clock: Clock, monitor: GpuMonitor, plan: SamplingPlan) -> None:
        self.clock = clock
        self.monitor = monitor
        self.plan = plan

    def measure(self, fn: Fn, statistic: str = "median") -> Any:
        """Warm ``fn`` up, sample it until precise enough (or out of time), and return its ``ScopeStats``."""
        from pytest_rfdetr_latency.verdict.stats import summarize

        warm = warm_up(fn, self.clock, self.monitor, self.plan)
        sampled = sample(fn, self.clock, self.monitor, self.plan, statistic, call_ms=warm.call_ms)
        return summarize(sampled.kept, statistic, sampled.dropped, sampled.block_size, sampled.kept_host_ms)

    @property
    def host(self) -> Timer:
        """The same timer on the host clock, for work that blocks until done (CPU backends, ONNX Runtime)."""
        return Timer(HostClock(), GpuMonitor(), self.plan)
