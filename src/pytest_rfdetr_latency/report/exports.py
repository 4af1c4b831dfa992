"""Results in pytest-benchmark's JSON format, so that its tooling (``pytest-benchmark compare``, the histogram and CSV
exports) and github-action-benchmark's ``pytest`` input read them.

One benchmark per case and scope, named ``CASE[SCOPE]`` and grouped by scope. Its statistics are computed by
pytest-benchmark's own ``Stats`` class from the kept samples, which were timed with CUDA events on a GPU (the host
clock on the CPU), not with pytest-benchmark's host timer; ``options.timer`` says which.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def benchmark_json(
    results: Sequence[Mapping[str, Any]], fingerprint: Mapping[str, Any] | None, commit: str | None
) -> dict[str, Any]:
    from pytest_benchmark import __version__
    from pytest_benchmark.stats import Stats

    benchmarks = []
    for result in results:
        samples = result.get("samples_ms") or {}
        for scope, values in samples.items():
            if not values:
                continue
            stats = Stats()
            for value in values:
                stats.update(value / 1000.0)
            data = stats.as_dict()
            data["data"] = [v / 1000.0 for v in values]
            data["iterations"] = 1
            timer = result.get("fingerprint", {}).get("timer", "host")
            benchmarks.append({
                "group": scope,
                "name": f"{result['id']}[{scope}]",
                "fullname": f"rfdetr-latency::{result['id']}[{scope}]",
                "params": {"model": result["model"], "backend": result["backend"], "scope": scope,
                           "batch": result.get("batch", 1)},
                "param": f"{result['id']}-{scope}",
                "extra_info": {
                    "device": result.get("device"),
                    "timer": timer,
                    "statistic": result.get("scopes", {}).get(scope, {}).get("statistic"),
                    "precision": result.get("fingerprint", {}).get("precision"),
                    "outcome": result.get("outcome"),
                    "images_per_call": result.get("batch", 1),
                },
                "options": {"timer": timer, "disable_gc": True, "warmup": True, "min_rounds": len(values),
                            "max_time": None, "min_time": None},
                "stats": data,
            })
    info = dict(fingerprint or {})
    return {
        "machine_info": {
            "node": platform.node(),
            "processor": info.get("cpu") or platform.processor(),
            "machine": platform.machine(),
            "python_implementation": platform.python_implementation(),
            "python_version": info.get("python") or platform.python_version(),
            "release": platform.release(),
            "system": platform.system(),
            "cpu": {"brand_raw": info.get("cpu"), "count": info.get("cpu_count")},
            "gpu": info.get("device"),
            "rfdetr_latency": {k: info.get(k) for k in ("driver", "cuda", "torch", "onnxruntime", "rfdetr")},
        },
        "commit_info": {"id": commit, "dirty": None, "project": "rfdetr-latency", "branch": None,
                        "time": None, "author_time": None},
        "benchmarks": benchmarks,
        "datetime": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "version": __version__,
    }


def unmade_storage(storage: object) -> Path | None:
    """The folder of pytest-benchmark's file storage (``--benchmark-storage``, default ``./.benchmarks``) where it does
    not exist yet: pytest-benchmark makes it in every run, saving or not, and it is removed again when left empty."""
    if not isinstance(storage, str) or ("://" in storage and not storage.startswith("file://")):
        return None
    folder = Path(storage.removeprefix("file://"))
    return None if folder.exists() else folder


def remove_if_left_empty(folder: Path | None) -> None:
    """Remove ``folder`` (made in this run by pytest-benchmark) when nothing was saved in it."""
    if folder is not None:
        with contextlib.suppress(OSError):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
