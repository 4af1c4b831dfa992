"""The rfdetr adapter: build a model offline, with seeded random weights or from a local checkpoint.

Everything that depends on rfdetr's API across versions lives here: ``inference()`` (rfdetr >= 1.9) versus the
older ``optimize_for_inference()``, and ``from_checkpoint`` where it exists.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import random
from pathlib import Path
from typing import Any


class ModelError(RuntimeError):
    """A model could not be built; the message names the model, the path and the fix."""


def rfdetr_class(name: str) -> Any:
    import rfdetr

    cls = getattr(rfdetr, name, None)
    if cls is None:
        available = sorted(n for n in dir(rfdetr) if n.startswith("RFDETR") and n != "RFDETR")
        raise ModelError(
            f"rfdetr {getattr(rfdetr, '__version__', '')} has no model {name!r}; it offers {', '.join(available)}"
        )
    return cls


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(
    name: str, device: str, seed: int = 0, checkpoint: Path | None = None, resolution: int | None = None
) -> Any:
    """An ``RFDETR`` instance of variant ``name`` on ``device``, built without any download."""
    cls = rfdetr_class(name)
    seed_everything(seed)
    extra: dict[str, Any] = {} if resolution is None else {"resolution": resolution}
    try:
        if checkpoint is None:
            return cls(pretrain_weights=None, device=device, **extra)
        return _from_checkpoint(name, cls, Path(checkpoint), device, extra)
    except ModelError:
        raise
    except Exception as exc:
        if resolution is not None:
            raise ModelError(f"{name} cannot be built at resolution {resolution}: {str(exc)[:400]}") from exc
        raise


def checkpoint_architecture(path: Path) -> str:
    """The RF-DETR variant a checkpoint holds, from the name it records (rfdetr >= 1.7 writes ``model_name``)."""
    import torch

    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist: check --rfdetr-weights")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"checkpoint {path} cannot be read: {type(exc).__name__}: {str(exc)[:300]}") from exc
    name = data.get("model_name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name.startswith("RFDETR"):
        raise ModelError(
            f"checkpoint {path} does not record its architecture (no model_name): name it, e.g. "
            f"--rfdetr-models RFDETRMedium --rfdetr-weights {path}"
        )
    return name


def _from_checkpoint(name: str, cls: Any, path: Path, device: str, extra: dict[str, Any]) -> Any:
    if not path.exists():
        raise ModelError(f"checkpoint {path} for {name} does not exist: check --rfdetr-weights")
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ModelError(f"checkpoint {path} for {name} is not a readable file: check its permissions")
    import rfdetr

    loader = getattr(rfdetr.RFDETR, "from_checkpoint", None)  # type: ignore[attr-defined]
    try:
        if loader is not None:
            model = loader(path, device=device, **extra)
        else:
            model = cls(pretrain_weights=str(path), device=device, **extra)
    except Exception as exc:
        raise ModelError(
            f"checkpoint {path} could not be loaded as {name}: {type(exc).__name__}: {str(exc)[:500]}"
        ) from exc
    found = type(model).__name__
    if found != name:
        raise ModelError(
            f"checkpoint {path} holds a {found} model, but the case asks for {name}: select "
            f"--rfdetr-models {found}, or point --rfdetr-weights at a {name} checkpoint"
        )
    return model


def optimize(
    model: Any, dtype: Any, *, compile: bool = True, compile_backend: str = "torchscript", batch_size: int = 1
) -> None:
    """rfdetr's inference optimization, under whichever name this rfdetr version gives it."""
    if hasattr(model, "inference"):
        kwargs: dict[str, Any] = {"compile": compile, "dtype": dtype, "batch_size": batch_size}
        if compile_backend != "torchscript":
            kwargs["compile_backend"] = compile_backend
        model.inference(**kwargs)
    elif hasattr(model, "optimize_for_inference"):
        if compile_backend != "torchscript":
            raise ModelError("this rfdetr version has no inductor compile path (needs rfdetr with inference())")
        model.optimize_for_inference(compile=compile, dtype=dtype, batch_size=batch_size)
    else:
        raise ModelError("this rfdetr version has neither inference() nor optimize_for_inference()")


def unoptimize(model: Any) -> None:
    remove = getattr(model, "remove_optimized_model", None)
    if remove is not None:
        remove()


def resolution_of(model: Any) -> int:
    return int(model.model.resolution)


def optimized_module(model: Any) -> Any:
    return model.model.inference_model


def export_onnx(model: Any, out_dir: Path, resolution: int, batch: int) -> Path:
    """Export ``model`` to ONNX in ``out_dir`` and return the file. rfdetr exports from a copy of the module."""
    path = model.export(
        output_dir=str(out_dir), verbose=False, shape=(resolution, resolution), batch_size=batch, opset_version=17
    )
    if path is None:  # rfdetr before 1.9 returned nothing
        found = sorted(out_dir.glob("*.onnx"))
        if not found:
            raise ModelError(f"rfdetr's export wrote no .onnx file in {out_dir}")
        path = found[0]
    return Path(path)


@functools.cache
def export_source(package: str = "rfdetr") -> str:
    """What an export depends on beyond versions: a digest of ``package``'s Python sources and of this module (which
    calls the export). Two environments whose rfdetr says the same version but differs in code (a patched or vendored
    copy, an editable checkout: the base and head of a pull request, which share one export cache) export apart;
    a fresh install of the same release exports once. "missing" where the package cannot be found."""
    spec = importlib.util.find_spec(package)  # finds the package without running its imports
    if spec is None:
        return "missing"
    files: list[tuple[str, Path]] = []
    for folder in spec.submodule_search_locations or []:  # a package's folders (a namespace package has several)
        files += sorted((str(path.relative_to(folder)), path) for path in Path(folder).rglob("*.py"))
    if not files and spec.origin is not None:  # a module of one file
        files = [(Path(spec.origin).name, Path(spec.origin))]
    digest = hashlib.sha256()
    for name, path in [*files, (Path(__file__).name, Path(__file__))]:
        digest.update(f"{name}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def detection_scores(result: Any) -> Any:
    """The confidences of a ``predict()`` result: ``Detections.confidence`` or ``KeyPoints.detection_confidence``."""
    import numpy as np

    # KeyPoints.confidence is the per-keypoint score (and deprecated); its detections' scores are elsewhere.
    scores = getattr(result, "detection_confidence", None)
    if scores is None:
        scores = getattr(result, "confidence", None)
    return np.asarray(scores if scores is not None else [], dtype=np.float64)
