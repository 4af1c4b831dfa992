"""Peak GPU memory of a case: the PyTorch allocator's peak for torch backends, NVML's used-memory growth for ONNX
Runtime (whose allocations PyTorch cannot see). Each is measured from just before the case prepares its backend,
so it covers what the case adds (optimized copies, sessions, activations), not models other cases left loaded."""

from __future__ import annotations

from typing import Any

from pytest_rfdetr_latency.environment import Device, nvml_handle


class MemoryProbe:
    def __init__(self, device: Device, backend: str) -> None:
        # ONNX Runtime's CPU provider holds no GPU memory; a CPU run has no GPU to ask.
        self.enabled = device.is_cuda and backend != "onnx-cpu"
        self.device = device
        self.kind = "nvml" if backend.startswith("onnx-") else "torch"
        self._start_allocated = 0
        self._start_used: int | None = None
        self._handle: Any = None

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
        torch.cuda.reset_peak_memory_stats(self.device.spec)
        self._start_allocated = torch.cuda.memory_allocated(self.device.spec)
        if self.kind == "nvml":
            self._start_used = self._nvml_used()

    def stop(self) -> dict[str, Any] | None:
        """``{"peak_mib": ..., "kind": ...}``, or None on the CPU or where NVML does not answer."""
        if not self.enabled:
            return None
        import torch

        torch.cuda.synchronize(self.device.spec)
        mib = 2**20
        if self.kind == "torch":
            peak = torch.cuda.max_memory_allocated(self.device.spec) - self._start_allocated
            reserved = torch.cuda.max_memory_reserved(self.device.spec)
            return {"kind": "torch-allocator", "peak_mib": round(peak / mib, 1),
                    "reserved_mib": round(reserved / mib, 1)}
        used = self._nvml_used()
        if used is None or self._start_used is None:
            return None
        return {"kind": "nvml-device-used", "peak_mib": round(max(0, used - self._start_used) / mib, 1)}
