"""ONNX Runtime's CUDA allocations, counted: a session of its own whose allocations through the CUDA provider's
allocator (weights, activations, workspaces) go to PyTorch's caching allocator, so that
``torch.cuda.max_memory_allocated`` reads their peak (rounded up to PyTorch's block sizes). What cuBLAS and cuDNN
allocate inside their handles, and the CUDA context, are not counted.

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
RUNS = 2  # the first run also searches convolution algorithms (and their workspaces); the peak covers both
_KEPT: list[tuple[Any, ...]] = []  # every callback handed to ONNX Runtime lives as long as the process: a session
# freed late (a reference cycle, a traceback) must never call into a freed thunk


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
        errors: list[BaseException] = []  # ctypes would print and swallow them: raised after the runs instead

        def alloc(size: int) -> int:
            calls["alloc"] += 1
            try:
                return int(torch.cuda.caching_allocator_alloc(size, device))
            except BaseException as exc:
                errors.append(exc)
                return 0

        def free(pointer: int | None) -> None:
            try:
                if pointer:
                    torch.cuda.caching_allocator_delete(pointer)  # type: ignore[no-untyped-call]
            except BaseException as exc:
                errors.append(exc)

        callbacks = (_ALLOC(alloc), _FREE(free), _EMPTY(lambda: None))
        _KEPT.append(callbacks)
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
            getattr(session, "disable_fallback", lambda: None)()  # a failing run raises, not reruns on the CPU
            _on_cuda(session)
            torch.cuda.synchronize(device)
            phase("load")
            for _ in range(RUNS):
                session.run(None, dict(feeds))
            torch.cuda.synchronize(device)
            phase("run")
            _on_cuda(session)
            if errors:
                raise RuntimeError(f"PyTorch's allocator failed ONNX Runtime: {errors[0]!r}") from errors[0]
            if calls["alloc"] == 0:
                raise RuntimeError("ONNX Runtime made no allocation through the external allocator")
        finally:
            del session
            torch.cuda.synchronize(device)

    return run_window


def _on_cuda(session: Any) -> None:
    if session.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"the session runs on {session.get_providers()[0]} (the CUDA provider refused the external "
                           "allocator; ONNX Runtime printed why)")
