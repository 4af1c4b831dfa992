"""PyTorch backends: ``predict()`` in strict FP32 or TF32, and rfdetr's optimized FP16 / bf16 / inductor paths."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from pytest_rfdetr_latency.measure import models
from pytest_rfdetr_latency.measure.backends.base import (
    BackendContext,
    BackendUnavailable,
    Prepared,
    calibrate,
    image_cycle,
    observed_fp32_precision,
    preprocess_tensor,
    torch_matmul_precision,
)
from pytest_rfdetr_latency.measure.cases import task_of
from pytest_rfdetr_latency.measure.environment import Device

_DTYPES = {"torch-fp16": "float16", "torch-bf16": "bfloat16", "torch-compile": "float16"}


def tensor_outputs(raw: Any, task: str) -> dict[str, Any]:
    """Name a traced forward's outputs the way the ONNX export does: boxes, logits, then masks or keypoints."""
    extra = {"segmentation": "masks", "keypoints": "keypoints"}.get(task, "extra")
    return dict(zip(["boxes", "logits", extra], raw))


def prepare(ctx: BackendContext) -> Prepared:
    import torch

    backend, device = ctx.case.backend, ctx.device
    if ctx.case.info.needs_cuda and not device.is_cuda:
        raise BackendUnavailable(f"{backend} needs a CUDA device; this run measures on {device.spec} ({device.name})")
    if backend == "torch-bf16" and device.is_cuda and not torch.cuda.is_bf16_supported():
        raise BackendUnavailable(f"{device.name} does not support bfloat16")

    model = ctx.load_model()
    models.unoptimize(model)
    tf32 = backend == "torch-tf32"
    details: dict[str, Any] = {}

    def precision_context() -> contextlib.AbstractContextManager[None]:
        # Only the float32 paths care; the half-precision ones keep whatever the process has.
        return torch_matmul_precision(tf32) if backend in ("torch-fp32", "torch-tf32") else contextlib.nullcontext()

    batch = ctx.case.batch
    images = ctx.images
    resolution = ctx.case.resolution or models.resolution_of(model)
    with precision_context():
        net, dtype, precision = _optimized(model, backend, batch, device, details)
        x = preprocess_tensor(images[:1] * batch, resolution, model.means, model.stds).to(device.spec, dtype=dtype)

        threshold, detections = calibrate(
            lambda image, at: models.detection_scores(model.predict(image, threshold=max(at, 0.0))), images,
            ctx.detections,
        )
    take = image_cycle(images, batch)

    def e2e() -> object:
        picked = take()
        return model.predict(picked[0] if batch == 1 else picked, threshold=threshold)

    def forward() -> object:
        with torch.inference_mode():
            return net(x)

    def outputs() -> dict[str, Any]:
        with precision_context(), torch.inference_mode():
            raw = tensor_outputs(net(x), task_of(ctx.case.model))
        return {k: v.float().cpu().numpy() for k, v in raw.items() if hasattr(v, "float")}

    unavailable: dict[str, str] = {"iobinding": "IO binding is an ONNX Runtime scope"}
    if not device.is_cuda:
        unavailable["device"] = "the device scope replays a CUDA graph; this run measures on the CPU"
    elif backend == "torch-compile":
        unavailable["device"] = "inductor's reduce-overhead mode already replays CUDA graphs: its forward is that"

    def close() -> None:
        models.unoptimize(model)

    details["precision_flags"] = {
        "tf32_matmul": bool(tf32) if backend in ("torch-fp32", "torch-tf32") else None,
        "dtype": str(dtype).replace("torch.", ""),
    }
    return Prepared(scopes={"e2e": e2e, "forward": forward}, graphable=forward if device.is_cuda else None,
                    unavailable=unavailable, precision=precision, detections=detections, score_threshold=threshold,
                    details=details, outputs=outputs, context=precision_context, close=close)


def _optimized(model: Any, backend: str, batch: int, device: Device, details: dict[str, Any]) -> tuple[Any, Any, str]:
    """The network forward and device time, its dtype and its precision, with how long optimizing it took."""
    import torch

    if backend in _DTYPES:
        dtype = getattr(torch, _DTYPES[backend])
        compile_backend = "inductor" if backend == "torch-compile" else "torchscript"
        start = time.perf_counter()
        try:
            models.optimize(model, dtype, compile=True, compile_backend=compile_backend, batch_size=batch)
        except models.ModelError as exc:
            raise BackendUnavailable(str(exc)) from exc
        details["compile_seconds"] = round(time.perf_counter() - start, 3)
        details["forward_module"] = f"rfdetr inference(dtype={_DTYPES[backend]}, {compile_backend})"
        return models.optimized_module(model), dtype, {"float16": "fp16", "bfloat16": "bf16"}[_DTYPES[backend]]
    # predict() runs the eager training graph, which copies host tensors on every call and so cannot be captured as
    # a CUDA graph; forward and device time rfdetr's traced FP32 network instead, the module that
    # inference(dtype=float32) deploys. e2e stays plain predict(), as users call it.
    start = time.perf_counter()
    models.optimize(model, torch.float32, compile=True, batch_size=batch)
    net = models.optimized_module(model)
    models.unoptimize(model)
    details["compile_seconds"] = round(time.perf_counter() - start, 3)
    details["forward_module"] = "rfdetr inference(dtype=float32, torchscript)"
    return net, torch.float32, observed_fp32_precision(device)
