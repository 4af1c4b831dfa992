"""The model × backend (× batch × resolution) matrix and its test ids. Pure data: nothing here imports torch."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

# Every RF-DETR variant that builds offline with random weights (deprecated aliases left out).
ALL_MODELS: tuple[str, ...] = (
    "RFDETRNano",
    "RFDETRSmall",
    "RFDETRMedium",
    "RFDETRLarge",
    "RFDETRSegNano",
    "RFDETRSegSmall",
    "RFDETRSegMedium",
    "RFDETRSegLarge",
    "RFDETRSegXLarge",
    "RFDETRSeg2XLarge",
    "RFDETRKeypointPreview",
)
DEFAULT_MODELS: tuple[str, ...] = ("RFDETRMedium", "RFDETRSegSmall", "RFDETRKeypointPreview")


@dataclass(frozen=True)
class BackendInfo:
    name: str
    needs_cuda: bool
    precision: str  # what the computation really runs in; the fingerprint records what was observed
    summary: str
    on_host: bool = False  # computes on the CPU even on a GPU run: host-clock timed, its GPU's state irrelevant
    # Preparing it times candidates on the GPU and keeps the fastest (cuDNN's algorithm search in ONNX Runtime's CUDA
    # provider, TensorRT's tactics, inductor's autotuning): head to head it prepares alone, in its turn.
    tunes_on_gpu: bool = False


BACKENDS: dict[str, BackendInfo] = {
    info.name: info
    for info in (
        BackendInfo("torch-fp32", False, "fp32", "predict() in strict FP32 (TF32 switched off while measuring)"),
        BackendInfo("torch-tf32", True, "tf32", "predict() with TF32 matmuls, as rfdetr sets them on import"),
        BackendInfo("torch-fp16", True, "fp16", "rfdetr's FP16 + TorchScript path: inference(dtype=float16)"),
        BackendInfo("torch-bf16", True, "bf16", "rfdetr's bfloat16 + TorchScript path: inference(dtype=bfloat16)"),
        BackendInfo("torch-compile", True, "fp16", "inference(compile_backend='inductor'), FP16; compile time "
                    "reported apart from latency", tunes_on_gpu=True),
        BackendInfo("onnx-cpu", False, "fp32", "exported ONNX on ONNX Runtime's CPUExecutionProvider", on_host=True),
        BackendInfo("onnx-cuda", True, "tf32", "exported ONNX on ONNX Runtime's CUDAExecutionProvider, whose "
                    "default use_tf32 runs float32 in TF32 (fails if the session falls back to CPU)",
                    tunes_on_gpu=True),
        BackendInfo("onnx-tensorrt", True, "fp16", "exported ONNX on ONNX Runtime's TensorrtExecutionProvider, FP16",
                    tunes_on_gpu=True),
    )
}
ALL_BACKENDS: tuple[str, ...] = tuple(BACKENDS)
DEFAULT_BACKENDS: tuple[str, ...] = ("torch-fp32", "torch-fp16", "onnx-cpu", "onnx-cuda")


def works_on_cpu(backend: str, device_is_cuda: bool) -> bool:
    """Whether a case's work runs on the host's CPU: a backend that computes on the host even on a GPU run
    (BackendInfo.on_host), or any backend on a CPU device."""
    return not device_is_cuda or BACKENDS[backend].on_host


def task_of(model: str) -> str:
    """``detection``, ``segmentation`` or ``keypoints``: what the model's outputs hold besides boxes."""
    if model.startswith("RFDETRSeg"):
        return "segmentation"
    if "Keypoint" in model:
        return "keypoints"
    return "detection"


@dataclass(frozen=True)
class Case:
    model: str  # an RF-DETR variant, or the name given to a user's ONNX file
    backend: str
    batch: int = 1
    resolution: int | None = None  # None: the model's own
    onnx_file: str | None = None  # a user's exported model, measured as it is (no PyTorch model behind it)

    @property
    def id(self) -> str:
        parts = [self.model, self.backend]
        if self.batch != 1:
            parts.append(f"b{self.batch}")
        if self.resolution is not None:
            parts.append(f"r{self.resolution}")
        return "-".join(parts)

    @property
    def info(self) -> BackendInfo:
        return BACKENDS[self.backend]

    @property
    def group(self) -> str:
        """Cases that share a model build and an ONNX export; xdist's loadgroup keeps them on one worker."""
        suffix = f"-r{self.resolution}" if self.resolution is not None else ""
        return f"{self.model}{suffix}"


def matrix(
    models: Iterable[str],
    backends: Iterable[str],
    batches: Iterable[int] = (1,),
    resolutions: Iterable[int | None] = (None,),
    onnx_models: Mapping[str, object] | None = None,
) -> list[Case]:
    """Every combination, models outermost so that one model's cases run one after another; then each user ONNX
    file on the selected ONNX Runtime backends (its resolution is the file's own)."""
    backends = tuple(backends)
    batches = tuple(batches)
    resolutions = tuple(resolutions)
    cases = [
        Case(model, backend, batch, resolution)
        for model in models
        for resolution in resolutions
        for batch in batches
        for backend in backends
    ]
    for name, path in (onnx_models or {}).items():
        cases += [Case(name, backend, onnx_file=str(path)) for backend in backends if backend.startswith("onnx-")]
    return cases


T = TypeVar("T")


def rotated(items: Sequence[T], case_of: Callable[[T], Case | None], k: int) -> list[T]:
    """The order of the ``k``-th process of a recording: the model groups rotated by ``k``, and the cases within
    each group rotated by ``k``, so that no case always runs first, last, or after the same neighbour. Items that
    are no latency case follow, in their order."""
    groups: dict[str, list[T]] = {}
    others: list[T] = []
    for item in items:
        case = case_of(item)
        if case is None:
            others.append(item)
        else:
            groups.setdefault(case.group, []).append(item)

    def turn(values: list[Any]) -> list[Any]:
        shift = k % len(values) if values else 0
        return values[shift:] + values[:shift]

    return [item for group in turn(list(groups.values())) for item in turn(group)] + others
