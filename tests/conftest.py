"""pytester's in-process runs restore ``sys.modules`` afterwards, so a C extension first imported inside one of them
(torch, onnx, onnxruntime, matplotlib...) is imported a second time by the next run, which crashes it. Everything
the plugin imports lazily during a latency run is therefore imported once, when the session starts (not when this
file is loaded: ``pytest --help`` in this repository stays fast). And every test starts without the caller's
RFDETR_LATENCY_* variables."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_rfdetr_latency.measure.fake import FAKE_ENV


def pytest_sessionstart(session: pytest.Session) -> None:
    import matplotlib

    matplotlib.use("Agg")

    import matplotlib.pyplot
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import rfdetr
    import rfdetr.export._onnx.exporter  # noqa: F401
    import supervision  # noqa: F401
    import torch  # noqa: F401
    import torchvision.transforms.functional  # noqa: F401

    import pytest_rfdetr_latency.collector
    import pytest_rfdetr_latency.measure.backends.onnx_backend
    import pytest_rfdetr_latency.measure.backends.torch_backend
    import pytest_rfdetr_latency.measure.case
    import pytest_rfdetr_latency.report.exports
    import pytest_rfdetr_latency.report.plots
    import pytest_rfdetr_latency.runner
    import pytest_rfdetr_latency.store.schema  # noqa: F401


@pytest.fixture(autouse=True)
def _without_the_callers_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's quick start exports RFDETR_LATENCY_* variables and then runs this suite in the same shell: every
    test starts without them (a test that needs one sets its own), and so do the pytest processes it starts."""
    private = ("_PYTEST_RFDETR_LATENCY_CHILD", FAKE_ENV)
    for name in [n for n in os.environ if n.startswith("RFDETR_LATENCY_") or n in private]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def onnx_exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ONNX export cache for the tests whose subject is not the export itself: each RF-DETR Nano export is made
    once per session, as a real user's runs reuse theirs (--rfdetr-cache-dir)."""
    return tmp_path_factory.mktemp("onnx-exports")


@pytest.fixture(scope="session")
def nano_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded RF-DETR Nano exported to ONNX (384 px, batch 1) once per session, for the tests that take an ONNX
    file apart or open it themselves."""
    from pytest_rfdetr_latency.measure.models import build_model, export_onnx

    return export_onnx(build_model("RFDETRNano", "cpu"), tmp_path_factory.mktemp("export"), 384, 1)


@pytest.fixture
def fake_backend(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Every case of the latency runs this test starts, and of their fresh processes, measured on the deterministic
    fake (measure/fake.py): a fixed wait per call, no model. Call it to change the spec, e.g.
    ``fake_backend(ms=4)`` for a machine twice as slow."""

    def use(**spec: object) -> None:
        monkeypatch.setenv(FAKE_ENV, json.dumps(spec))

    use()
    return use

