"""A deterministic stand-in for RF-DETR and its backends, for the plugin's own tests of its mechanism (strictness,
confirmation, drift, head to head, history): every case is a fixed wait per call, so that a verdict does not hang on
how two shared cores happened to run a real model. Nothing here imports torch, rfdetr or onnxruntime, so a fresh
process of a mechanism test starts in a fraction of a second.

It is no backend a user can select: a run takes it only where the environment variable ``FAKE_ENV`` holds its spec
(JSON; ``{}`` for the defaults), and then for every case of the run, in this process and in every fresh process it
starts (they inherit the environment). The plugin's one seam is ``stash.open_session``.

The spec's keys: ``ms`` (a forward call, in milliseconds; default 2), ``e2e`` (how much longer an end-to-end call
takes, as a factor; default 1.5), ``factors`` (a list: the n-th process of the run to prepare a case waits ``ms``
times its n-th factor, round and round, for a process-to-process spread that is the same on every run; the processes
are counted in a file of the cache folder, which a run's processes share). A self-test's injected slowdown
(--rfdetr-inject-slowdown) adds its busy wait on top, as on a real backend.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from pytest_rfdetr_latency.measure.backends import BackendContext, Prepared
from pytest_rfdetr_latency.measure.cases import Case
from pytest_rfdetr_latency.measure.environment import Device, DeviceError, _version, cpu_count, cpu_name
from pytest_rfdetr_latency.measure.session import LatencySession

FAKE_ENV = "_PYTEST_RFDETR_LATENCY_FAKE"
_SPIN_NS = 200_000  # the last part of a wait is spun, not slept: a sleep wakes up late by tens of microseconds


def spec() -> dict[str, Any] | None:
    """The fake's spec from the environment, or None where the run measures for real."""
    text = os.environ.get(FAKE_ENV)
    if not text:
        return None
    found = json.loads(text)
    if not isinstance(found, dict):
        raise ValueError(f"{FAKE_ENV} must hold a JSON object, not {text!r}")
    return found


def wait(ms: float) -> None:
    """Return ``ms`` milliseconds from now, on the wall clock, whatever else the host runs meanwhile."""
    end = time.perf_counter_ns() + int(ms * 1e6)
    rest = end - time.perf_counter_ns() - _SPIN_NS
    if rest > 0:
        time.sleep(rest / 1e9)
    while time.perf_counter_ns() < end:
        pass


class FakeSession(LatencySession):
    """A session whose cases all wait a fixed time per call; its device is this CPU, its fingerprint the installed
    versions (read from the package metadata, without importing them)."""

    _fake_factor: float | None = None

    @staticmethod
    def device_for(requested: str) -> Device:
        if requested not in ("cpu", "auto"):
            raise DeviceError(f"--rfdetr-device {requested}: the fake backend of the plugin's tests measures on the "
                              "CPU only")
        return Device("cpu", cpu_name(), "cpu")

    @property
    def fingerprint(self) -> dict[str, Any]:
        return {
            "device": self.device.name,
            "torch": _version("torch"),
            "torchvision": _version("torchvision"),
            "rfdetr": _version("rfdetr"),
            "onnxruntime": _version("onnxruntime-gpu", "onnxruntime"),
            "python": platform.python_version(),
            "cpu": cpu_name(),
            "cpu_count": cpu_count(),
            "plugin": _version("pytest-rfdetr-latency"),
            "fake": spec(),
            **self.extra_fingerprint,
        }

    def model(self, name: str, resolution: int | None = None) -> Any:
        return None

    def reference_outputs(self, case: Case) -> dict[str, Any] | None:
        return None

    def prepare(self, context: BackendContext) -> Prepared:
        given = spec() or {}
        ms = float(given.get("ms", 2.0)) * self._factor(given.get("factors") or [])
        e2e = ms * float(given.get("e2e", 1.5))
        unavailable = {"iobinding": "the fake backend has no IO binding",
                       "device": "the device scope replays a CUDA graph; this run measures on the CPU"}
        details: dict[str, Any] = {"fake_ms": round(ms, 6)}
        if context.case.backend.startswith("onnx-"):
            details["providers"] = ["CPUExecutionProvider"]
        return Prepared(scopes={"e2e": lambda: wait(e2e), "forward": lambda: wait(ms)}, graphable=None,
                        unavailable=unavailable, precision=context.case.info.precision,
                        detections=float(context.detections), score_threshold=0.5, details=details)

    def _factor(self, factors: list[float]) -> float:
        """This process's factor: the next of ``factors`` in the order the run's processes came to ask."""
        if not factors:
            return 1.0
        if self._fake_factor is None:
            from filelock import FileLock

            counter = Path(self.cache_dir) / "fake-processes"
            counter.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(counter) + ".lock"):
                n = int(counter.read_text()) if counter.exists() else 0
                counter.write_text(str(n + 1))
            self._fake_factor = float(factors[n % len(factors)])
        return self._fake_factor
