"""One module per family of backends, behind one function: ``prepare(context) -> Prepared``."""

from __future__ import annotations

from pytest_rfdetr_latency.measure.backends.base import (
    BackendContext,
    BackendMisconfigured,
    BackendUnavailable,
    Prepared,
)

__all__ = ["BackendContext", "BackendMisconfigured", "BackendUnavailable", "Prepared", "prepare"]


def prepare(context: BackendContext) -> Prepared:
    """Prepare ``context.case`` with its backend (imported only now: torch and onnxruntime load lazily)."""
    if context.case.backend.startswith("onnx-"):
        from pytest_rfdetr_latency.measure.backends import onnx_backend

        return onnx_backend.prepare(context)
    from pytest_rfdetr_latency.measure.backends import torch_backend

    return torch_backend.prepare(context)
