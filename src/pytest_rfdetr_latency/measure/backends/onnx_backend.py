"""ONNX Runtime backends: CPU, CUDA and TensorRT execution providers on the model's cached ONNX export.

A session that was asked for a GPU provider and quietly runs on the CPU is the classic trap of ONNX Runtime
benchmarks (a missing CUDA library only logs an error). The session's providers are checked after creation, and
one profiled run tells where the nodes really ran; a CUDA case that ends up on the CPU fails.
"""

from __future__ import annotations

# Over 350 lines on purpose: one ONNX Runtime session's preparation, its provider check and its IO binding belong to one
# backend family.
import contextlib
import ctypes.util
import json
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

from pytest_rfdetr_latency.measure import lockstep
from pytest_rfdetr_latency.measure.backends import ort_memory
from pytest_rfdetr_latency.measure.backends.base import (
    BackendContext,
    BackendMisconfigured,
    BackendUnavailable,
    Prepared,
    calibrate,
    image_cycle,
    preprocess_tensor,
)
from pytest_rfdetr_latency.measure.environment import cpu_count

PROVIDERS = {
    "onnx-cpu": "CPUExecutionProvider",
    "onnx-cuda": "CUDAExecutionProvider",
    "onnx-tensorrt": "TensorrtExecutionProvider",
}
_MEANS = [0.485, 0.456, 0.406]
_STDS = [0.229, 0.224, 0.225]


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable(
            "onnxruntime is not installed: pip install 'pytest-rfdetr-latency[cpu]' (or [gpu] for CUDA)"
        ) from exc
    return onnxruntime


def decode(outputs: dict[str, Any], size: tuple[int, int], threshold: float, num_select: int) -> dict[str, Any]:
    """Detections from one image's raw outputs, as rfdetr's post-processing makes them: per-class sigmoid, top-k
    over query × class pairs, threshold, boxes to pixels; masks upsampled to the image, keypoints scaled."""
    import numpy as np

    from pytest_rfdetr_latency.measure.parity import top_scores

    width, height = size
    logits = outputs["logits"][0][:, :-1]  # the last slot is the no-object class
    top, best = top_scores(logits.astype(np.float32), num_select)
    kept = best > threshold
    keep = top[kept]
    classes = logits.shape[1]
    query = keep // classes
    cx, cy, w, h = outputs["boxes"][0][query].astype(np.float32).T
    xyxy = np.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], 1)
    result: dict[str, Any] = {"xyxy": xyxy, "confidence": best[kept], "class_id": keep % classes}
    if "masks" in outputs and len(query):
        import torch

        low = torch.from_numpy(np.ascontiguousarray(outputs["masks"][0][query], dtype=np.float32))[:, None]
        result["mask"] = torch.nn.functional.interpolate(low, size=(height, width), mode="bilinear")[:, 0].numpy() > 0
    if "keypoints" in outputs and len(query):
        points = outputs["keypoints"][0][query].astype(np.float32)
        points[..., 0] *= width
        points[..., 1] *= height
        result["keypoints"] = points
    return result


def _named(session: Any, raw: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for meta, value in zip(session.get_outputs(), raw):
        name = meta.name
        key = "boxes" if "dets" in name else "logits" if "labels" in name else name
        out[key] = value
    return out


def _placement(profile: Path) -> dict[str, float]:
    """Share of node time per execution provider, from an ONNX Runtime profile."""
    totals: dict[str, float] = defaultdict(float)
    for event in json.loads(profile.read_text()):
        provider = event.get("args", {}).get("provider")
        if event.get("cat") == "Node" and provider:
            totals[provider] += float(event.get("dur", 0))
    grand = sum(totals.values()) or 1.0
    return {provider: round(dur / grand, 4) for provider, dur in sorted(totals.items())}


def _tensorrt_missing() -> str | None:
    if ctypes.util.find_library("nvinfer") is not None:
        return None
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return (
            "the TensorRT libraries (libnvinfer) are not installed: pip install tensorrt, or put TensorRT's lib "
            "folder on LD_LIBRARY_PATH"
        )
    return None


def _provider_entry(backend: str, index: int, cache: Path) -> list[Any]:
    want = PROVIDERS[backend]
    if backend == "onnx-cpu":
        return [want]
    cuda = ("CUDAExecutionProvider", {"device_id": index})
    if backend == "onnx-cuda":
        return [cuda, "CPUExecutionProvider"]
    trt = (
        "TensorrtExecutionProvider",
        {
            "device_id": index,
            "trt_fp16_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
        },
    )
    return [trt, cuda, "CPUExecutionProvider"]


def _precision(backend: str, session: Any) -> str:
    """What the session computes in. ONNX Runtime's CUDA provider runs float32 matmuls and convolutions in TF32
    unless told otherwise (provider option use_tf32, on by default): a float32 model on it is a TF32 measurement."""
    if backend == "onnx-tensorrt":
        return "fp16"
    if backend == "onnx-cuda":
        options = session.get_provider_options().get("CUDAExecutionProvider", {})
        return "fp32" if str(options.get("use_tf32", "1")) == "0" else "tf32"
    return "fp32"


def open_session(ort: Any, path: Path, backend: str, index: int, options: Any) -> Any:
    """An InferenceSession on ``backend``'s provider, or an error if ONNX Runtime quietly chose another one."""
    session = ort.InferenceSession(
        str(path), sess_options=options, providers=_provider_entry(backend, index, path.parent / "trt-cache")
    )
    want = PROVIDERS[backend]
    used = session.get_providers()
    if used[0] != want:
        message = (
            f"{backend} asked ONNX Runtime for {want} but the session runs on {', '.join(used)}: "
            "the provider failed to load (for CUDA: check that onnxruntime-gpu matches the installed CUDA and cuDNN)"
        )
        if backend == "onnx-tensorrt":
            raise BackendUnavailable(message)
        raise BackendMisconfigured(message)
    return session


def _onnxruntime_for(ctx: BackendContext) -> Any:
    """ONNX Runtime, once the case's provider is known to be there (BackendUnavailable says what is missing)."""
    backend = ctx.case.backend
    device = ctx.device
    if ctx.case.info.needs_cuda and not device.is_cuda:
        raise BackendUnavailable(f"{backend} needs a CUDA device; this run measures on {device.spec} ({device.name})")
    ort = import_onnxruntime()
    want = PROVIDERS[backend]
    available = ort.get_available_providers()
    if want not in available:
        hint = " (install onnxruntime-gpu, not onnxruntime: pip install 'pytest-rfdetr-latency[gpu]')"
        raise BackendUnavailable(
            f"{want} is not available in onnxruntime {ort.__version__} (providers: {', '.join(available)})"
            + (hint if want != "CPUExecutionProvider" else "")
        )
    if backend == "onnx-tensorrt":
        missing = _tensorrt_missing()
        if missing:
            raise BackendUnavailable(missing)
    return ort


def _threads(ctx: BackendContext) -> int:
    """As many intra-op threads as this process may use cores (ONNX Runtime's default counts the host's cores, which
    oversubscribes a process bound to a share of them: an xdist worker, a runner's slice)."""
    return ctx.threads if ctx.threads is not None else cpu_count()


def _options(ort: Any, threads: int) -> Any:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    return options


def _profiled_session(ort: Any, ctx: BackendContext, path: Path, index: int,
                      threads: int | None = None) -> tuple[Any, Path]:
    """The case's session on ``threads`` intra-op threads (``_threads``'s where None), profiling its first run (into
    the folder returned, which the caller removes)."""
    profile_dir = Path(tempfile.mkdtemp(prefix="rfdetr-ort-profile-"))
    options = _options(ort, _threads(ctx) if threads is None else threads)
    options.enable_profiling = True
    options.profile_file_prefix = str(profile_dir / "ort")
    try:
        return open_session(ort, path, ctx.case.backend, index, options), profile_dir
    except BaseException:
        shutil.rmtree(profile_dir, ignore_errors=True)
        raise


def _first_run(session: Any, ctx: BackendContext, path: Path,
               profile_dir: Path) -> tuple[str, int, Any, dict[str, Any], dict[str, float]]:
    """The session's first run, profiled: its input's name and height, that input, the outputs, and where the node
    time ran. The profile's folder is removed whatever the run finds (an input of a dynamic height, for one)."""
    try:
        input_name, height = _square_input(session, path)
        x = preprocess_tensor(ctx.images[:1] * ctx.case.batch, int(height), _MEANS, _STDS).numpy()
        first = _named(session, session.run(None, {input_name: x}))
        return input_name, int(height), x, first, _placement(Path(session.end_profiling()))
    except BaseException:
        with contextlib.suppress(Exception):
            session.end_profiling()  # before its folder goes: a session that is deleted ends its profile too
        raise
    finally:
        shutil.rmtree(profile_dir, ignore_errors=True)


def _check_first_run(backend: str, path: Path, first: dict[str, Any], names: list[str],
                     placement: dict[str, float]) -> None:
    """The export's outputs are RF-DETR's, and a GPU provider really ran the model (not the CPU behind it)."""
    want = PROVIDERS[backend]
    if "boxes" not in first or "logits" not in first:
        raise BackendMisconfigured(
            f"{path.name}: outputs are named {names}; a latency case decodes RF-DETR's export, whose outputs are "
            "'dets' (boxes) and 'labels' (logits), then 'masks' or keypoints: export the model with rfdetr"
        )
    on_gpu = sum(share for provider, share in placement.items() if provider != "CPUExecutionProvider")
    if want != "CPUExecutionProvider" and on_gpu < 0.5:
        raise BackendMisconfigured(
            f"{backend}: the session lists {want} first, yet {placement.get('CPUExecutionProvider', 0.0):.0%} of the "
            f"node time ran on CPUExecutionProvider ({placement}): the model is mostly not running on the GPU"
        )


def _threads_while(ctx: BackendContext) -> tuple[int, int]:
    """The intra-op threads of the sessions that prepare the case and that time it. Head to head, the CPU provider
    prepares at once with the other processes, on this process's share of the cores: an ONNX Runtime pool is sized
    once, when its session is made, and eight sessions of sixteen threads each preparing at once on sixteen cores did
    not finish one case in 105 s on the H200 (docs/pr-gate.md, ninth session; the pools oversubscribing the cores is
    the likely cause, not shown). What is timed runs on a session of all the threads, made while preparing and first
    run in the process's turn (its warm-up)."""
    threads = _threads(ctx)
    if ctx.case.backend != "onnx-cpu":
        return threads, threads
    return min(threads, lockstep.cores_while_preparing() or threads), threads


def prepare(ctx: BackendContext) -> Prepared:
    import numpy as np

    backend = ctx.case.backend
    ort = _onnxruntime_for(ctx)
    path = ctx.onnx_path()
    index = ctx.device.index or 0
    preparing, threads = _threads_while(ctx)
    session, profile_dir = _profiled_session(ort, ctx, path, index, preparing)
    used = session.get_providers()
    input_name, height, x, first, placement = _first_run(session, ctx, path, profile_dir)
    timed = session if preparing == threads else open_session(ort, path, backend, index, _options(ort, threads))
    held = [session] if timed is not session else []  # the preparing session, until parity's outputs are taken
    batch = ctx.case.batch
    images = ctx.images

    def run(array: Any, on: Any = timed) -> dict[str, Any]:
        return _named(on, on.run(None, {input_name: array}))

    _check_first_run(backend, path, first, [o.name for o in session.get_outputs()], placement)
    num_select = int(first["logits"].shape[1])

    def scores(image: Any, at: float) -> Any:
        single = preprocess_tensor([image] * batch, int(height), _MEANS, _STDS).numpy()
        return decode(run(single, session), image.size, at, num_select)["confidence"]

    threshold, detections = calibrate(scores, images, ctx.detections)
    take = image_cycle(images, batch)

    def e2e() -> object:
        picked = take()
        array = preprocess_tensor(picked, int(height), _MEANS, _STDS).numpy()
        outputs = run(array)
        return decode(outputs, picked[0].size, threshold, num_select)

    def forward() -> object:
        return timed.run(None, {input_name: x})

    scopes: dict[str, Any] = {"e2e": e2e, "forward": forward}
    unavailable: dict[str, str] = {}
    details: dict[str, Any] = {"providers": used, "node_time_share": placement, "onnx_file": path.name,
                               "intra_op_threads": {"preparing": preparing, "timed": threads}}
    keep_alive: list[Any] = []
    if backend == "onnx-cpu":
        unavailable["iobinding"] = "IO binding keeps inputs on the GPU; onnx-cpu has none"
        unavailable["device"] = "the device scope replays a CUDA graph; onnx-cpu runs on the CPU"
    else:
        _gpu_scopes(ort, ctx, session, path, input_name, x, scopes, unavailable, keep_alive)

    def outputs() -> dict[str, Any]:  # checked once, while preparing: on the preparing session, then let go
        return {k: np.asarray(v, dtype=np.float32) for k, v in run(x, held.pop() if held else timed).items()}

    def close() -> None:
        keep_alive.clear()
        held.clear()

    return Prepared(scopes=scopes, graphable=None, unavailable=unavailable, precision=_precision(backend, session),
                    detections=detections, score_threshold=threshold, details=details, outputs=outputs,
                    close=close, **_after_timing(ort, ctx, path, index, {input_name: x}))


class _AfterTiming(TypedDict):
    memory_window: Callable[[Callable[[str], None]], None] | None
    operators: Callable[[int], list[dict[str, Any]]] | None


def _after_timing(ort: Any, ctx: BackendContext, path: Path, index: int, feeds: dict[str, Any]) -> _AfterTiming:
    """What runs once the case is timed, each in a session of its own: ONNX Runtime's memory counted by PyTorch's
    allocator (onnx-cuda, ort_memory.py), its operators profiled by itself (onnx-cpu, --rfdetr-profile)."""
    backend = ctx.case.backend
    return {"memory_window": ort_memory.window(ort, path, index, feeds) if backend == "onnx-cuda" else None,
            "operators": _operators(ort, ctx, path, feeds) if backend == "onnx-cpu" else None}


def _operators(ort: Any, ctx: BackendContext, path: Path, feeds: dict[str, Any]) -> Callable[[int], list[Any]]:
    """onnx-cpu's operators as ONNX Runtime profiles them, once the case is timed, in a session of its own: what
    torch.profiler cannot see inside a run. (On a GPU provider a node's host time holds the CUDA calls torch.profiler
    already counts, so it would count them twice; CUPTI names the kernels there.)"""

    def operators(calls: int) -> list[dict[str, Any]]:
        """``calls`` runs on ``feeds`` after one not counted: time a run per operator type, as profile rows."""
        from pytest_rfdetr_latency.measure.profiling import ort_rows

        session, folder = _profiled_session(ort, ctx, path, 0)
        try:
            for _ in range(calls + 1):
                session.run(None, feeds)
            rows = ort_rows(json.loads(Path(session.end_profiling()).read_text()), calls)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if not rows:
            raise RuntimeError("ONNX Runtime's profile held no operator time in its model runs (a format this "
                               "plugin does not read)")
        return rows

    return operators


def _square_input(session: Any, path: Path) -> tuple[str, int]:
    """The session's input name and its fixed square image size (BackendMisconfigured where it has none)."""
    meta = session.get_inputs()[0]
    input_name = meta.name
    height = meta.shape[2] if len(meta.shape) == 4 else None
    if not isinstance(height, int) or meta.shape[3] != height:
        raise BackendMisconfigured(
            f"{path.name}: input {input_name!r} has the shape {meta.shape}; a latency case needs a fixed square "
            "image size, as rfdetr's export(shape=(H, W)) writes it (export again with a fixed shape)"
        )
    return input_name, height


def _gpu_scopes(ort: Any, ctx: BackendContext, session: Any, path: Path, input_name: str, x: Any,
                scopes: dict[str, Any], unavailable: dict[str, str], keep_alive: list[Any]) -> None:
    """A GPU provider's own scopes, added to ``scopes`` (or to ``unavailable``, with why): IO binding, and the
    device scope's CUDA graph (onnx-cuda only); what they need alive goes to ``keep_alive``."""
    index = ctx.device.index or 0
    if "iobinding" in ctx.scopes:
        scopes["iobinding"], binding_alive = _iobinding(ort, session, input_name, x, index)
        keep_alive.append(binding_alive)
    if ctx.case.backend == "onnx-tensorrt":
        unavailable["device"] = "CUDA graphs are measured on onnx-cuda only"
    elif "device" in ctx.scopes:
        try:
            scopes["device"], graph_alive = _cuda_graph(ort, path, input_name, x, index, session)
            keep_alive.append(graph_alive)
        except Exception as exc:  # ONNX Runtime refuses graphs when any node is not on the CUDA EP
            reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            unavailable["device"] = f"ONNX Runtime could not capture a CUDA graph: {reason}"


def _iobinding(ort: Any, session: Any, input_name: str, x: Any, index: int) -> tuple[Any, Any]:
    x_gpu = ort.OrtValue.ortvalue_from_numpy(x, "cuda", index)
    binding = session.io_binding()
    binding.bind_ortvalue_input(input_name, x_gpu)
    for out in session.get_outputs():
        binding.bind_output(out.name, "cuda", index)
    session.run_with_iobinding(binding)

    def iobinding() -> object:
        session.run_with_iobinding(binding)
        return None

    return iobinding, (x_gpu, binding)


def _cuda_graph(ort: Any, path: Path, input_name: str, x: Any, index: int, plain: Any) -> tuple[Any, Any]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(path),
        sess_options=options,
        providers=[("CUDAExecutionProvider", {"device_id": index, "enable_cuda_graph": "1"})],
    )
    x_gpu = ort.OrtValue.ortvalue_from_numpy(x, "cuda", index)
    binding = session.io_binding()
    binding.bind_ortvalue_input(input_name, x_gpu)
    shapes = {o.name: o.shape for o in plain.get_outputs()}
    example = dict(zip(shapes, plain.run(None, {input_name: x})))
    outputs = []
    for name in shapes:
        value = ort.OrtValue.ortvalue_from_shape_and_type(
            list(example[name].shape), example[name].dtype.type, "cuda", index
        )
        binding.bind_ortvalue_output(name, value)
        outputs.append(value)
    session.run_with_iobinding(binding)  # captures the graph
    session.run_with_iobinding(binding)

    def replay() -> object:
        session.run_with_iobinding(binding)
        return None

    return replay, (session, x_gpu, binding, outputs)
