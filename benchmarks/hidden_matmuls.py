"""A hidden regression inside RF-DETR's forward, for trying the gate and its diagnosis from the outside (not the
plugin's own injector): with ``HIDDEN_MATMULS=COUNT,SIZE`` in the environment, loading this module as a pytest plugin
(``PYTHONPATH=benchmarks pytest -p hidden_matmuls ...``) wraps ``rfdetr.models.lwdetr.LWDETR.forward_export`` — the
graph that rfdetr's optimized PyTorch paths trace and its ONNX export writes — so that it also multiplies a SIZE x SIZE
matrix made from the input image by itself COUNT times, and adds the result, scaled to nothing, to the boxes. The
outputs stay the same; the work is real: traced, exported, and run by every backend.

The ONNX export is cached by model and shape, not by code: give the regressed run a cache folder of its own
(``--rfdetr-cache-dir``), or it times the clean export."""

from __future__ import annotations

import os
from typing import Any


def pytest_configure(config: Any) -> None:
    spec = os.environ.get("HIDDEN_MATMULS", "").strip()
    if not spec:
        return
    count, size = (int(part) for part in spec.split(","))
    import torch
    from rfdetr.models import lwdetr

    original = lwdetr.LWDETR.forward_export

    def forward_export(self: Any, tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = original(self, tensors)
        m = torch.nn.functional.interpolate(tensors[:, :1], size=(size, size))[0, 0]
        m = m / (m.abs().max() + 1.0)  # entries below 1: the chain neither overflows nor vanishes in fp16 at once
        y = m
        for _ in range(count):
            y = torch.matmul(y, m) / size
        return (outputs[0] + y.mean() * 1e-30, *outputs[1:])

    lwdetr.LWDETR.forward_export = forward_export  # type: ignore[method-assign]
