"""ONNX Runtime's CUDA allocations, counted to the byte: a session of its own whose every device allocation goes
through PyTorch's caching allocator, so that ``torch.cuda.max_memory_allocated`` reads ONNX Runtime's peak.

The CUDA provider takes three C callbacks as provider options (``gpu_external_alloc``, ``gpu_external_free``,
``gpu_external_empty_cache``: their addresses as text) and then allocates through them instead of its arena; ctypes
makes the callbacks. The provider refuses them together with a stream of the caller's (``user_compute_stream``: "!(
info.has_user_compute_stream && info.external_allocator_info.UseExternalAllocator())", ONNX Runtime 1.31.1 on the
H200), so the session runs on its own stream and PyTorch books the blocks to its current one: only this session
allocates while the window is open, on its one stream, so a block is reused in the order it was freed. Each
allocation is a call into Python: fine for the memory window after a case is timed (memory.py), far too slow for a
timed session, which keeps ONNX Runtime's own arena."""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

_ALLOC = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_size_t)
_FREE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_EMPTY = ctypes.CFUNCTYPE(None)
RUNS = 2  # the first run also searches convolution algorithms (and their workspaces); the second is a steady one


def _address(callback: Any) -> str:
    return str(ctypes.cast(callback, ctypes.c_void_p).value)


def window(ort: Any, path: Path, index: int, feeds: Mapping[str, Any]) -> Callable[[Callable[[str], None]], None]:
    """``window(phase)``: make a session of ``path`` on CUDA device ``index`` that allocates through PyTorch, call
    ``phase("load")``, run it on ``feeds`` RUNS times, call ``phase("run")``, and close it. Raises where ONNX Runtime
    did not allocate through the callbacks (a build without external allocators), so that the caller falls back."""

    def run_window(phase: Callable[[str], None]) -> None:
        import torch

        device = torch.device("cuda", index)
        calls = {"alloc": 0}

        def alloc(size: int) -> int:
            calls["alloc"] += 1
            return int(torch.cuda.caching_allocator_alloc(size, device))

        def free(pointer: int | None) -> None:
            if pointer:
                torch.cuda.caching_allocator_delete(pointer)  # type: ignore[no-untyped-call]

        callbacks = (_ALLOC(alloc), _FREE(free), _EMPTY(lambda: None))  # alive until the session is gone
        provider = {
            "device_id": str(index),
            "gpu_external_alloc": _address(callbacks[0]),
            "gpu_external_free": _address(callbacks[1]),
            "gpu_external_empty_cache": _address(callbacks[2]),
        }
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1  # every allocation on the calling thread
        session = ort.InferenceSession(str(path), sess_options=options,
                                       providers=[("CUDAExecutionProvider", provider)])
        try:
            if session.get_providers()[0] != "CUDAExecutionProvider":
                raise RuntimeError(f"the session runs on {session.get_providers()[0]} (the CUDA provider refused "
                                   "the external allocator; ONNX Runtime printed why)")
            torch.cuda.synchronize(device)
            phase("load")
            for _ in range(RUNS):
                session.run(None, dict(feeds))
            torch.cuda.synchronize(device)
            phase("run")
            if calls["alloc"] == 0:
                raise RuntimeError("ONNX Runtime made no allocation through the external allocator")
        finally:
            del session
            torch.cuda.synchronize(device)
        del callbacks

    return run_window
