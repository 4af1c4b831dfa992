"""Code that only a GPU runs, exercised on a CPU with fakes for what the CPU lacks: CUDA events, the memory probe,
ONNX Runtime's IO binding and CUDA graph sessions, and finding the visible GPUs through NVML."""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from pytest_rfdetr_latency.measure.environment import Device


class FakeEvent:
    """A CUDA event on a fake stream whose clock advances by what each call 'costs'."""

    now = 0.0

    def __init__(self, enable_timing: bool = False) -> None:
        self.at: float | None = None
        self.synchronized = False

    def record(self, stream: Any = None) -> None:
        self.at = FakeEvent.now

    def synchronize(self) -> None:
        self.synchronized = True

    def elapsed_time(self, end: FakeEvent) -> float:
        assert self.at is not None and end.at is not None
        return end.at - self.at


def test_cuda_events_time_each_call_and_wait_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    import torch

    from pytest_rfdetr_latency.measure import timing

    synchronized: list[Any] = []
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: "stream")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synchronized.append(device))
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    clock = timing.CudaEventClock("cuda:0")
    costs = iter([1.5, 2.0, 2.5])

    def call() -> None:
        FakeEvent.now += next(costs)

    assert clock.time_calls(call, 3) == [1.5, 2.0, 2.5]
    assert synchronized == [torch.device("cuda:0")]  # the device is idle before the first call
    assert all(end.synchronized for _, end in clock._pairs)  # and each call is waited for before the next


def test_the_memory_probe_measures_what_the_case_adds(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from pytest_rfdetr_latency.measure import memory

    mib = 2**20
    state = {"allocated": 300 * mib, "peak": 300 * mib, "used": 1000 * mib, "cached": 0, "workspaces": 0}
    released: list[str] = []

    def empty_cache() -> None:
        released.append("allocator cache")
        state["used"] -= state["cached"]
        state["cached"] = 0

    def clear_workspaces() -> None:  # cuBLAS's per-stream workspaces, kept by the process after earlier cases
        released.append("cublas workspaces")
        state["allocated"] -= state["workspaces"]
        state["workspaces"] = 0

    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", empty_cache)
    monkeypatch.setattr(torch._C, "_cuda_clearCublasWorkspaces", clear_workspaces, raising=False)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats",
                        lambda device=None: state.update(peak=state["allocated"]))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: state["allocated"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: state["peak"])
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 2048 * mib)
    nvml = SimpleNamespace(nvmlDeviceGetMemoryInfo=lambda handle: SimpleNamespace(used=state["used"]))
    monkeypatch.setattr(memory, "nvml_handle", lambda index: (nvml, "gpu0"))
    gpu = Device("cuda:0", "NVIDIA H200", "cuda", 0)

    def torch_case(uses_cublas: bool) -> dict[str, object] | None:
        probe = memory.MemoryProbe(gpu, "torch-fp16")
        probe.start()
        state["peak"] = state["allocated"] + 150 * mib  # preparing: the optimized copy and its trace
        state["allocated"] += 100 * mib  # what the prepared backend keeps
        probe.phase("prepare")
        if uses_cublas and not state["workspaces"]:  # the first matrix product on a stream makes its workspace
            state["workspaces"] = 32 * mib
            state["allocated"] += 32 * mib
        state["peak"] = state["allocated"] + 20 * mib  # sampling: activations above what is held
        figure = probe.stop()
        state["allocated"] -= 100 * mib  # closed; the workspace stays with the process
        return figure

    first = torch_case(uses_cublas=True)
    assert first == {"kind": "torch-allocator", "peak_mib": 152.0, "reserved_mib": 2048.0,
                     "phases_mib": {"prepare": 150.0, "sampling": 152.0}, "held_mib": 132.0}
    # The same case after another one: it pays for its own workspace again, so its figure does not depend on order.
    assert torch_case(uses_cublas=True) == first
    assert released.count("cublas workspaces") == 2

    state["cached"] = 256 * mib  # blocks PyTorch cached earlier are handed back before NVML is read
    probe = memory.MemoryProbe(gpu, "onnx-tensorrt")  # TensorRT allocates outside PyTorch: the device's used memory
    probe.start()
    assert state["cached"] == 0
    state["used"] += 512 * mib
    assert probe.stop() == {"kind": "nvml-device-used", "peak_mib": 512.0}

    # ONNX Runtime's CUDA provider: a session of its own, counted by PyTorch's allocator after the case is timed.
    probe = memory.MemoryProbe(gpu, "onnx-cuda")
    probe.start()
    state["used"] += 700 * mib  # the timed sessions' arenas: NVML sees them, the window does not count them
    probe.phase("prepare")  # outside the window: no phase for ONNX Runtime

    def window(phase: Any) -> None:
        state["peak"] = state["allocated"] + 90 * mib  # weights
        phase("load")
        state["peak"] = state["allocated"] + 130 * mib  # weights, activations, workspaces
        phase("run")

    assert probe.stop(window) == {"kind": "ort-allocator", "peak_mib": 130.0,
                                  "phases_mib": {"load": 90.0, "run": 130.0}, "nvml_mib": 700.0}

    def broken(phase: Any) -> None:
        raise RuntimeError("Unknown provider option: gpu_external_alloc")

    probe = memory.MemoryProbe(gpu, "onnx-cuda")
    probe.start()
    state["used"] += 64 * mib
    said = probe.stop(broken)  # where ONNX Runtime cannot allocate through PyTorch: NVML's figure, and why
    assert said is not None and said["kind"] == "nvml-device-used" and said["peak_mib"] == 64.0
    assert "RuntimeError: Unknown provider option: gpu_external_alloc" in said["note"]
    assert memory.MemoryProbe(gpu, "onnx-cpu").stop() is None  # holds no GPU memory
    assert memory.MemoryProbe(Device("cpu", "CPU", "cpu"), "torch-fp32").stop() is None


def test_a_memory_self_test_holds_its_share_of_the_baseline_peak_inside_the_probe(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from pytest_rfdetr_latency.measure import memory
    from pytest_rfdetr_latency.measure.case import CaseMeasurement
    from pytest_rfdetr_latency.measure.cases import Case

    mib = 2**20
    state = {"allocated": 0, "peak": 0, "used": 1000 * mib}
    held: list[Any] = []

    def empty(size: int, dtype: Any = None, device: Any = None) -> Any:  # through the allocator: NVML sees it too
        state["allocated"] += size
        state["peak"] = max(state["peak"], state["allocated"])
        state["used"] += size
        block = SimpleNamespace(size=size, device=device)
        held.append(block)
        return block

    monkeypatch.setattr(torch, "empty", empty)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats",
                        lambda device=None: state.update(peak=state["allocated"]))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: state["allocated"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: state["peak"])
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: state["peak"])
    nvml = SimpleNamespace(nvmlDeviceGetMemoryInfo=lambda handle: SimpleNamespace(used=state["used"]))
    monkeypatch.setattr(memory, "nvml_handle", lambda index: (nvml, "gpu0"))
    gpu = Device("cuda:0", "NVIDIA H200", "cuda", 0)
    baseline = {"memory": {"kind": "torch-allocator", "processes": [400.0, 420.0, 401.0]}}
    session = SimpleNamespace(device=gpu, baseline_entry=lambda case_id: baseline)
    measuring = CaseMeasurement(session, Case("RFDETRMedium", "torch-fp16"), ("device",),  # type: ignore[arg-type]
                                skip=pytest.skip, fail=pytest.fail, publish=lambda result: None)

    probe = memory.MemoryProbe(gpu, "torch-fp16")
    probe.start()
    said = measuring._inject_memory(probe, 10.0)
    state["peak"] = state["allocated"] + 400 * mib  # the case's own need on top
    figure = probe.stop()
    assert said == "40.0 MiB (10% of the baseline's 400.0 MiB)" and held[0].device == "cuda:0"
    assert figure is not None and figure["peak_mib"] == 440.0 and probe._held is None  # released once read
    nvml_probe = memory.MemoryProbe(gpu, "onnx-tensorrt")
    nvml_probe.start()
    measuring._inject_memory(nvml_probe, 10.0)
    assert nvml_probe.stop() == {"kind": "nvml-device-used", "peak_mib": 40.0}
    ort_probe = memory.MemoryProbe(gpu, "onnx-cuda")  # held through the case, counted inside ONNX Runtime's window
    ort_probe.start()
    measuring._inject_memory(ort_probe, 10.0)

    def window(phase: Any) -> None:
        state["peak"] = state["allocated"] + 400 * mib
        phase("run")

    assert ort_probe.stop(window)["peak_mib"] == 440.0  # type: ignore[index]
    baseline["memory"] = {}
    assert measuring._inject_memory(memory.MemoryProbe(gpu, "torch-fp16"), 10.0) == (
        "nothing: no baseline peak to size it by")
    baseline["memory"] = {"processes": [400.0]}
    assert measuring._inject_memory(memory.MemoryProbe(gpu, "onnx-cpu"), 10.0) == (
        "nothing: this case's memory is not probed here")


class FakeBinding:
    def __init__(self) -> None:
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}

    def bind_ortvalue_input(self, name: str, value: Any) -> None:
        self.inputs[name] = value

    def bind_output(self, name: str, device: str, index: int) -> None:
        self.outputs[name] = (device, index)

    def bind_ortvalue_output(self, name: str, value: Any) -> None:
        self.outputs[name] = value


class FakeSession:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.providers = kwargs.get("providers")
        self.runs = 0
        self.binding = FakeBinding()

    def io_binding(self) -> FakeBinding:
        return self.binding

    def get_outputs(self) -> list[Any]:
        return [SimpleNamespace(name="dets", shape=[1, 300, 4]), SimpleNamespace(name="labels", shape=[1, 300, 91])]

    def run(self, names: Any, feeds: dict[str, Any]) -> list[Any]:
        return [np.zeros((1, 300, 4), np.float32), np.zeros((1, 300, 91), np.float32)]

    def run_with_iobinding(self, binding: FakeBinding) -> None:
        assert binding is self.binding
        self.runs += 1


def fake_ort() -> Any:
    values = SimpleNamespace(
        ortvalue_from_numpy=lambda array, device, index: ("gpu-copy", array.shape, device, index),
        ortvalue_from_shape_and_type=lambda shape, kind, device, index: ("gpu-buffer", tuple(shape), kind, index),
    )
    return SimpleNamespace(OrtValue=values, SessionOptions=lambda: SimpleNamespace(), InferenceSession=FakeSession)


def test_io_binding_keeps_the_input_and_outputs_on_the_gpu_it_was_given() -> None:
    from pytest_rfdetr_latency.measure.backends.onnx_backend import _iobinding

    session = FakeSession()
    x = np.zeros((1, 3, 384, 384), np.float32)
    run, alive = _iobinding(fake_ort(), session, "input", x, 1)
    assert session.binding.inputs == {"input": ("gpu-copy", (1, 3, 384, 384), "cuda", 1)}
    assert session.binding.outputs == {"dets": ("cuda", 1), "labels": ("cuda", 1)}
    assert session.runs == 1  # a first run before timing
    run()
    assert session.runs == 2 and alive[1] is session.binding  # the caller keeps the buffers alive


def test_onnx_runtimes_cuda_graph_is_captured_on_fixed_buffers_before_timing(tmp_path: Any) -> None:
    from pytest_rfdetr_latency.measure.backends.onnx_backend import _cuda_graph

    plain = FakeSession()
    replay, (session, _, binding, outputs) = _cuda_graph(fake_ort(), tmp_path / "m.onnx", "input",
                                                          np.zeros((1, 3, 384, 384), np.float32), 0, plain)
    assert session.providers == [("CUDAExecutionProvider", {"device_id": 0, "enable_cuda_graph": "1"})]
    assert [o[:2] for o in outputs] == [("gpu-buffer", (1, 300, 4)), ("gpu-buffer", (1, 300, 91))]
    assert session.runs == 2  # the capture, then one replay
    replay()
    assert session.runs == 3 and set(binding.outputs) == {"dets", "labels"}


def test_the_visible_gpus_follow_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_rfdetr_latency.measure import workers

    names = ["NVIDIA H200", "NVIDIA H200", "NVIDIA L4"]
    pynvml = SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetCount=lambda: 3,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: names[h].encode(),
        nvmlDeviceGetUUID=lambda h: f"GPU-{h}aaa-bbb",
    )
    monkeypatch.setitem(sys.modules, "pynvml", pynvml)
    assert [g.visible_id for g in workers.visible_gpus({})] == ["0", "1", "2"]
    chosen = workers.visible_gpus({"CUDA_VISIBLE_DEVICES": "2,GPU-0aaa"})
    assert [(g.visible_id, g.name) for g in chosen] == [("2", "NVIDIA L4"), ("GPU-0aaa", "NVIDIA H200")]
    assert workers.visible_gpus({"CUDA_VISIBLE_DEVICES": "1,7,0"}) == [workers.Gpu("1", "NVIDIA H200")]  # CUDA stops
    monkeypatch.setitem(sys.modules, "pynvml", SimpleNamespace(nvmlInit=lambda: 1 / 0))
    assert workers.visible_gpus({}) == []  # no driver: no GPU, no crash


def test_a_forward_is_warmed_on_a_side_stream_then_captured_once_and_replayed(monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    import torch

    from pytest_rfdetr_latency.measure import timing

    events: list[str] = []
    where = {"stream": "default", "capturing": False}

    class FakeStream:
        def __init__(self, device: Any = None) -> None:
            self.name = "side"

        def wait_stream(self, other: Any) -> None:
            events.append(f"{getattr(self, 'name', 'default')} waits")

    class FakeGraph:
        def replay(self) -> None:
            events.append("replay")

    @contextlib.contextmanager
    def on(stream: FakeStream) -> Any:
        where["stream"] = stream.name
        yield
        where["stream"] = "default"

    @contextlib.contextmanager
    def graph(g: FakeGraph) -> Any:
        where["capturing"] = True
        yield
        where["capturing"] = False

    default = FakeStream()
    default.name = "default"
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: default)
    monkeypatch.setattr(torch.cuda, "stream", on)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("synchronize"))
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", graph)

    def forward() -> None:
        events.append(f"forward on {where['stream']}{' (captured)' if where['capturing'] else ''}")

    replay = timing.capture_cuda_graph(forward, "cuda:0")
    replay()
    replay()
    assert events == ["side waits", "forward on side", "forward on side", "forward on side", "default waits",
                      "synchronize", "forward on default (captured)", "replay", "replay"]


def test_onnx_runtimes_memory_window_allocates_through_pytorch(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """The CUDA provider is handed C callbacks (their addresses as text) that allocate with PyTorch's caching
    allocator, and no stream of the caller's (the provider refuses both together); the fake session calls them
    through those addresses, as ONNX Runtime would."""
    import ctypes

    import torch

    from pytest_rfdetr_latency.measure.backends import ort_memory

    pool: dict[int, int] = {}
    made: list[Any] = []

    def caching_allocator_alloc(size: int, device: Any = None, stream: Any = None) -> int:
        pointer = 0x1000 * (len(pool) + 1)
        pool[pointer] = size
        made.append((size, str(device), stream))
        return pointer

    monkeypatch.setattr(torch.cuda, "caching_allocator_alloc", caching_allocator_alloc)
    monkeypatch.setattr(torch.cuda, "caching_allocator_delete", lambda pointer: pool.pop(pointer))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)

    class Session:
        def __init__(self, path: str, sess_options: Any, providers: Any) -> None:
            self.options = dict(providers[0][1])
            seen.append(self)
            self.weights = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_size_t)(int(self.options["gpu_external_alloc"]))(
                4096)

        def get_providers(self) -> list[str]:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

        def run(self, names: Any, feeds: dict[str, Any]) -> None:
            scratch = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_size_t)(int(self.options["gpu_external_alloc"]))(512)
            ctypes.CFUNCTYPE(None, ctypes.c_void_p)(int(self.options["gpu_external_free"]))(scratch)

    seen: list[Session] = []
    ort = SimpleNamespace(SessionOptions=lambda: SimpleNamespace(), InferenceSession=Session)
    phases: list[tuple[str, dict[int, int]]] = []
    ort_memory.window(ort, tmp_path / "m.onnx", 1, {"input": "x"})(lambda name: phases.append((name, dict(pool))))
    options = seen[0].options
    assert options["device_id"] == "1" and "user_compute_stream" not in options
    assert all(int(options[key]) > 0 for key in ("gpu_external_alloc", "gpu_external_free", "gpu_external_empty_cache"))
    assert [name for name, _ in phases] == ["load", "run"]
    assert sorted(phases[1][1].values()) == [4096]  # the run's scratch went back to PyTorch's allocator
    assert made[0][:2] == (4096, "cuda:1") and len(made) == 1 + ort_memory.RUNS

    class Elsewhere(Session):
        def run(self, names: Any, feeds: dict[str, Any]) -> None:
            return None

        def __init__(self, path: str, sess_options: Any, providers: Any) -> None:  # an arena of its own
            self.options = dict(providers[0][1])

    quiet = SimpleNamespace(SessionOptions=lambda: SimpleNamespace(), InferenceSession=Elsewhere)
    with pytest.raises(RuntimeError, match="no allocation through the external allocator"):
        ort_memory.window(quiet, tmp_path / "m.onnx", 0, {})(lambda name: None)

    def out_of_memory(size: int, device: Any = None, stream: Any = None) -> int:
        raise MemoryError("CUDA out of memory")

    monkeypatch.setattr(torch.cuda, "caching_allocator_alloc", out_of_memory)
    with pytest.raises(RuntimeError, match="PyTorch's allocator failed ONNX Runtime: MemoryError"):
        ort_memory.window(ort, tmp_path / "m.onnx", 0, {})(lambda name: None)  # not swallowed by ctypes

    class FellBack(Elsewhere):
        def get_providers(self) -> list[str]:
            return ["CPUExecutionProvider"]

    with pytest.raises(RuntimeError, match="runs on CPUExecutionProvider"):
        ort_memory.window(SimpleNamespace(SessionOptions=lambda: SimpleNamespace(), InferenceSession=FellBack),
                          tmp_path / "m.onnx", 0, {})(lambda name: None)


def test_a_host_delay_is_sized_by_calls_made_once_the_warm_ups_pools_left_the_launch_core() -> None:
    # In the ring the launching thread runs on one core; a pool its warm-up starts there slows every call until the
    # pool is swept off (placement.resweep). On the H200 that made the calls sizing a +5 % injection ~9x slow, and
    # the delay +45 % of the scope. The warm-up comes first, then the sweep, then about a second of calls (9 to 50)
    # whose median sizes the delay.
    import time

    from pytest_rfdetr_latency.measure.backends import Prepared
    from pytest_rfdetr_latency.measure.case import CaseMeasurement
    from pytest_rfdetr_latency.measure.cases import Case
    from pytest_rfdetr_latency.measure.sampling import SamplingPlan
    from pytest_rfdetr_latency.measure.timing import GpuMonitor, HostClock

    calls = {"before": 0, "after": 0}

    def call() -> None:
        calls["after" if swept else "before"] += 1
        time.sleep(0.002 if swept else 0.02)

    swept: list[int] = []
    plan = SamplingPlan(block_size=1, min_blocks=2, max_blocks=10, target=0.01, max_seconds=1.0, warmup_calls=3,
                        warmup_seconds=0.1)
    session = SimpleNamespace(device=Device("cpu", "cpu", "cpu", None), baseline_entry=lambda case_id: None,
                              settings=SimpleNamespace(inject_on="host", sampling=plan, profiles_here=False),
                              clock=HostClock(), monitor=GpuMonitor())
    measuring = CaseMeasurement(session, Case("RFDETRMedium", "torch-fp32"), ("e2e",),  # type: ignore[arg-type]
                                skip=pytest.skip, fail=pytest.fail, publish=lambda result: None)
    prepared = Prepared(scopes={"e2e": call}, graphable=None, unavailable={}, precision="fp32", detections=1.0,
                        score_threshold=0.5)
    meta: dict[str, Any] = {}
    measuring._scope_fn(prepared, "e2e", 50.0, meta, lambda: swept.append(1))
    assert swept == [1] and calls["before"] >= 3  # the warm-up ran before the sweep
    assert 10 <= calls["after"] <= 50  # about a second of calls as the warm-up timed them (~20 ms), not nine
    assert meta["injection_sized_by"].startswith(f"median of {calls['after']} calls")
    assert 1.0 <= meta["injected_ms"] < 5.0  # half of a 2 ms call (sleep's overshoot allowed), not of a 20 ms one
