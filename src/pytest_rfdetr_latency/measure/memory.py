"""Peak GPU memory of a case: the PyTorch allocator's peak for torch backends; for ONNX Runtime's CUDA provider, the
peak of a session of its own whose every allocation goes through PyTorch's allocator (ort_memory.py), made once the
case is timed; NVML's used-memory growth for the other GPU providers (whose allocations PyTorch cannot see). The
torch figure is measured from just before the case prepares its backend, so it covers what the case adds (optimized
copies, sessions, activations), not models other cases left loaded.

NVML's figure is the device's, and ONNX Runtime's arena grows in steps that differ between processes of the same
code (on the H200, one process in three of a clean recording read 88-336 MiB more): a +10 % growth hid behind
thresholds of 62-5392 %. The allocator's figure counts the bytes ONNX Runtime asked for, at their peak.

What a process keeps once it has made it would otherwise land in whichever case made it first: cuBLAS keeps a
workspace per stream it has run on (32 MiB on Hopper), and the allocator keeps freed blocks cached. So the probe
starts from a collected, emptied allocator with no cuBLAS workspaces, and each case pays for its own, whatever ran
before it. The peak is kept per phase (preparing, sampling) so that a figure that moves says where it moved."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from pytest_rfdetr_latency.measure.environment import Device, nvml_handle

MIB = 2**20


def release_process_caches(torch: Any) -> None:
    """Free what earlier cases left for reuse: garbage, the allocator's cached blocks, cuBLAS's per-stream
    workspaces (a private PyTorch call; where a PyTorch lacks it, the workspaces stay)."""
    gc.collect()
    clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear_workspaces is not None:
        clear_workspaces()
    torch.cuda.empty_cache()


class MemoryProbe:
    def __init__(self, device: Device, backend: str) -> None:
        # ONNX Runtime's CPU provider holds no GPU memory; a CPU run has no GPU to ask.
        self.enabled = device.is_cuda and backend != "onnx-cpu"
        self.device = device
        self.kind = "ort" if backend == "onnx-cuda" else "nvml" if backend.startswith("onnx-") else "torch"
        self._start_allocated = 0
        self._start_used: int | None = None
        self._handle: Any = None
        self._phases: dict[str, float] = {}
        self._reserved = 0
        self._held: Any = None  # a self-test's extra allocation (hold), released once the peak is read
        self._held_bytes = 0
        self._window = False  # inside ONNX Runtime's window (kind "ort"): phases count from its start

    def _nvml_used(self) -> int | None:
        if self._handle is None:
            self._handle = nvml_handle(self.device.index or 0)
        if self._handle is None:
            return None
        pynvml, handle = self._handle
        try:
            return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
        except Exception:
            return None

    def start(self) -> None:
        if not self.enabled:
            return
        import torch

        torch.cuda.synchronize(self.device.spec)
        release_process_caches(torch)
        torch.cuda.reset_peak_memory_stats(self.device.spec)
        self._start_allocated = torch.cuda.memory_allocated(self.device.spec)
        self._phases = {}
        if self.kind != "torch":
            self._start_used = self._nvml_used()

    def phase(self, name: str) -> None:
        """Close the phase ``name``: keep the allocator's peak above the start since the last phase, and start
        counting the next one afresh (PyTorch backends, and ONNX Runtime's window; NVML has no peak to reset)."""
        if not self.enabled or not (self.kind == "torch" or self._window):
            return
        import torch

        torch.cuda.synchronize(self.device.spec)
        peak = torch.cuda.max_memory_allocated(self.device.spec) - self._start_allocated
        self._phases[name] = round(max(0, peak) / MIB, 1)
        self._reserved = max(self._reserved, torch.cuda.max_memory_reserved(self.device.spec))
        torch.cuda.reset_peak_memory_stats(self.device.spec)

    def hold(self, mib: float) -> bool:
        """Self-test (--rfdetr-inject-on=memory): keep ``mib`` more device memory allocated, through PyTorch's
        allocator (so NVML sees it too), from now until ``stop`` has read the peak. False where nothing is probed."""
        if not self.enabled or mib <= 0:
            return False
        import torch

        self._held = torch.empty(int(mib * MIB), dtype=torch.uint8, device=self.device.spec)
        self._held_bytes = int(mib * MIB)
        return True

    def stop(self, session_window: Callable[[Callable[[str], None]], None] | None = None) -> dict[str, Any] | None:
        """``{"peak_mib": ..., "kind": ...}`` (PyTorch: also the peak of each phase and what the case still holds),
        or None on the CPU or where NVML does not answer. ONNX Runtime's CUDA provider: ``session_window(phase)``
        makes and runs a session through PyTorch's allocator, calling ``phase(name)`` after each step; where it
        cannot, the NVML figure, with why."""
        try:
            if self.enabled and self.kind == "ort":
                return self._read_window(session_window)
            return self._read()
        finally:
            self.release()

    def release(self) -> None:
        """Give back what ``hold`` kept (also where the case failed before its peak was read)."""
        self._held = None
        self._held_bytes = 0

    def _read_window(self, session_window: Callable[[Callable[[str], None]], None] | None) -> dict[str, Any] | None:
        """ONNX Runtime's peak in a window of its own: from a collected, emptied allocator (what a self-test holds
        counted in), the peak of each step of ``session_window``."""
        import torch

        nvml = self._nvml_figure()
        why = "no session through PyTorch's allocator was offered"
        if session_window is not None:
            torch.cuda.synchronize(self.device.spec)
            release_process_caches(torch)
            torch.cuda.reset_peak_memory_stats(self.device.spec)
            self._start_allocated = torch.cuda.memory_allocated(self.device.spec) - self._held_bytes
            self._phases, self._window = {}, True
            try:
                session_window(self.phase)
            except Exception as exc:  # an ONNX Runtime without external allocators: NVML's figure, and why
                why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            else:
                if self._phases:
                    return {"kind": "ort-allocator", "peak_mib": max(self._phases.values()),
                            "phases_mib": dict(self._phases), **({"nvml_mib": nvml} if nvml is not None else {})}
                why = "the session window closed no phase"
            finally:
                self._window = False
                release_process_caches(torch)
        if nvml is None:
            return None
        return {"kind": "nvml-device-used", "peak_mib": nvml,
                "note": f"ONNX Runtime's own allocations could not be counted ({why}): the device's used memory"}

    def _nvml_figure(self) -> float | None:
        used = self._nvml_used()
        if used is None or self._start_used is None:
            return None
        return round(max(0, used - self._start_used) / MIB, 1)

    def _read(self) -> dict[str, Any] | None:
        if not self.enabled:
            return None
        import torch

        torch.cuda.synchronize(self.device.spec)
        if self.kind == "torch":
            self.phase("sampling")
            held = torch.cuda.memory_allocated(self.device.spec) - self._start_allocated
            return {"kind": "torch-allocator", "peak_mib": max(self._phases.values()),
                    "reserved_mib": round(self._reserved / MIB, 1), "phases_mib": dict(self._phases),
                    "held_mib": round(held / MIB, 1)}
        nvml = self._nvml_figure()
        return None if nvml is None else {"kind": "nvml-device-used", "peak_mib": nvml}
