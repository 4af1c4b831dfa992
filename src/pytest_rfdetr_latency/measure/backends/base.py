"""The small protocol every backend follows, and helpers they share."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_rfdetr_latency.verdict.scopes import ALL_SCOPES

if TYPE_CHECKING:
    from PIL import Image

    from pytest_rfdetr_latency.measure.cases import Case
    from pytest_rfdetr_latency.measure.environment import Device

Fn = Callable[[], object]


class BackendUnavailable(Exception):
    """This case cannot run here (no GPU, runtime or provider not installed): it is skipped with this reason."""


class BackendMisconfigured(Exception):
    """The case asked for something and silently got something else (e.g. ONNX Runtime fell back to the CPU)."""


@dataclass
class BackendContext:
    """What a backend gets to prepare a case: the case, the device, the model and its export, the images."""

    case: Case
    device: Device
    images: list[Image.Image]
    detections: int  # detections each image must yield
    load_model: Callable[[], Any]
    onnx_path: Callable[[], Path]
    scopes: tuple[str, ...] = ALL_SCOPES  # only these need preparing
    threads: int | None = None  # CPU threads this process may use, when bound to a slice of the cores


@dataclass
class Prepared:
    """A case ready to time: one callable per scope, plus what the report and the fingerprint need."""

    scopes: dict[str, Fn]
    graphable: Fn | None  # torch-only GPU work that the device scope captures as a CUDA graph
    unavailable: dict[str, str]
    precision: str
    detections: float  # mean detections per image at the calibrated threshold
    score_threshold: float
    details: dict[str, Any] = field(default_factory=dict)
    outputs: Callable[[], dict[str, Any]] | None = None  # raw forward outputs (numpy), for parity
    context: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext
    close: Callable[[], None] = lambda: None
    # ONNX Runtime's CUDA provider: a session counted by PyTorch's allocator, made and run after timing (memory.py)
    memory_window: Callable[[Callable[[str], None]], None] | None = None
    # ONNX Runtime: its operators profiled by itself (``calls`` -> profile rows), what torch.profiler cannot see
    operators: Callable[[int], list[dict[str, Any]]] | None = None


def threshold_for(scores: Any, count: int) -> float:
    """A score threshold that keeps the ``count`` best of ``scores`` (kept: strictly above the threshold)."""
    import numpy as np

    ordered = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    if ordered.size == 0:
        return 0.0
    if ordered.size <= count:
        return float(max(0.0, ordered[-1] - 1e-6))
    return float((ordered[count - 1] + ordered[count]) / 2.0)


def calibrate(scores: Callable[[Any, float], Any], images: list[Image.Image], count: int) -> tuple[float, float]:
    """The score threshold that keeps ``count`` detections per image on average over ``images``
    (``scores(image, threshold)`` returns the kept detections' scores), and the mean each image then yields:
    post-processing must do real work, which random weights at the default 0.5 threshold would not give it."""
    import numpy as np

    pooled = np.concatenate([np.asarray(scores(image, -1.0), dtype=np.float64) for image in images])
    threshold = threshold_for(pooled, count * len(images))
    kept = [len(scores(image, threshold)) for image in images]
    return threshold, sum(kept) / len(kept)


def image_cycle(images: list[Image.Image], batch: int) -> Callable[[], list[Image.Image]]:
    """Each call, the next ``batch`` images of the set, round and round: e2e never times one cached image only."""
    state = {"i": 0}

    def take() -> list[Image.Image]:
        i = state["i"]
        state["i"] = i + 1
        return [images[(i + k) % len(images)] for k in range(batch)]

    return take


@contextlib.contextmanager
def torch_matmul_precision(tf32: bool) -> Iterator[None]:
    """TF32 for float32 matmuls and convolutions on or off, restored afterwards. ``import rfdetr`` turns it on."""
    import torch

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (matmul.allow_tf32, cudnn.allow_tf32, torch.get_float32_matmul_precision())
    matmul.allow_tf32 = tf32
    cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved[0], saved[1]
        torch.set_float32_matmul_precision(saved[2])


def observed_fp32_precision(device: Device) -> str:
    """What float32 matmuls really run in right now: ``tf32`` on a GPU with TF32 allowed, else ``fp32``."""
    import torch

    if device.is_cuda and (torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest"):
        return "tf32"
    return "fp32"


def preprocess_tensor(images: list[Image.Image], resolution: int, means: list[float], stds: list[float]) -> Any:
    """The input ``predict()`` gives its network: [0, 1] floats, bilinear resize without antialias, normalized."""
    import numpy as np
    import torch
    import torchvision.transforms.functional as F

    batch = []
    for image in images:
        chw = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
        resized = F.resize(chw.float().div(255.0), [resolution, resolution], antialias=False)
        batch.append(F.normalize(resized, means, stds))
    return torch.stack(batch)
