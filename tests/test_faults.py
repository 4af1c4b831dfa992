"""Faults end in one clear message and lose nothing: checkpoints, exports, NaN, providers, the network."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_rfdetr_latency.measure.environment import cpu_name
from pytest_rfdetr_latency.store.baselines import slugify

SUITE = """
def test_latency(rfdetr_case):
    rfdetr_case.check()
"""
# Mechanism tests: a plan that measures little (precision is not what they check).
FAST = "--rfdetr-sampling=quick,min-blocks=4,max-seconds=1,warmup-seconds=0.5"
QUICK = ("--rfdetr-device=cpu", FAST, "--rfdetr-images=2", "--rfdetr-scopes=forward",
         "-p", "no:randomly")


@pytest.fixture(scope="module")
def nano_state() -> dict[str, Any]:

    from pytest_rfdetr_latency.measure.models import build_model

    model = build_model("RFDETRNano", "cpu", seed=0)
    return {k: v.clone() for k, v in model.model.model.state_dict().items()}


def save_checkpoint(path: Path, state: dict[str, Any], name: str = "RFDETRNano") -> Path:
    import torch

    torch.save({"model": state, "args": {"pretrain_weights": "none"}, "model_name": name}, path)
    return path


def baseline_entries(pytester: pytest.Pytester) -> list[str]:
    path = pytester.path / "latency_baselines" / f"{slugify(cpu_name())}.json"
    return sorted(json.loads(path.read_text())["entries"]) if path.exists() else []


def test_missing_checkpoint_names_the_path(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(test_suite=SUITE)
    missing = tmp_path / "nope.pth"
    result = pytester.runpytest(*QUICK, "--save-baseline", "--rfdetr-models=RFDETRNano", "--rfdetr-backends=torch-fp32",
                                f"--rfdetr-weights={missing}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*checkpoint {missing} for RFDETRNano does not exist: check --rfdetr-weights*"])
    assert baseline_entries(pytester) == []


def test_unreadable_checkpoint_names_the_path(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(test_suite=SUITE)
    folder = tmp_path / "a-folder.pth"
    folder.mkdir()
    result = pytester.runpytest(*QUICK, "--save-baseline", "--rfdetr-models=RFDETRNano", "--rfdetr-backends=torch-fp32",
                                f"--rfdetr-weights={folder}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*checkpoint {folder} for RFDETRNano is not a readable file*"])


def test_checkpoint_of_another_architecture_is_refused(
    pytester: pytest.Pytester, tmp_path: Path, nano_state: dict[str, Any]
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    checkpoint = save_checkpoint(tmp_path / "nano.pth", nano_state)
    result = pytester.runpytest(*QUICK, "--save-baseline", "--rfdetr-models=RFDETRSmall",
                                "--rfdetr-backends=torch-fp32", f"--rfdetr-weights={checkpoint}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"*checkpoint {checkpoint} holds a RFDETRNano model, but the case asks for RFDETRSmall: select "
        "--rfdetr-models RFDETRNano*",
    ])
    assert baseline_entries(pytester) == []


@pytest.mark.slow
def test_checkpoint_architecture_is_detected(
    pytester: pytest.Pytester, tmp_path: Path, nano_state: dict[str, Any]
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    checkpoint = save_checkpoint(tmp_path / "mine.pth", nano_state)
    collected = pytester.runpytest("--collect-only", "-q", f"--rfdetr-weights={checkpoint}",
                                   "--rfdetr-backends=torch-fp32")
    collected.stdout.fnmatch_lines(["*test_latency[[]RFDETRNano-torch-fp32[]]", "*1 test collected*"])
    measured = pytester.runpytest(*QUICK, "--save-baseline", f"--rfdetr-weights={checkpoint}",
                                  "--rfdetr-backends=torch-fp32")
    measured.assert_outcomes(passed=1)
    assert baseline_entries(pytester) == ["RFDETRNano-torch-fp32"]


@pytest.mark.slow
def test_nan_outputs_fail_and_are_never_saved(
    pytester: pytest.Pytester, tmp_path: Path, nano_state: dict[str, Any]
) -> None:
    import torch

    pytester.makepyfile(test_suite=SUITE)
    broken = dict(nano_state)
    key = next(k for k in broken if k.startswith("class_embed") and k.endswith("weight"))
    broken[key] = torch.full_like(broken[key], float("nan"))
    checkpoint = save_checkpoint(tmp_path / "nan.pth", broken)
    result = pytester.runpytest(*QUICK, "--save-baseline", "--rfdetr-models=RFDETRNano",
                                "--rfdetr-backends=torch-fp32", f"--rfdetr-weights={checkpoint}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*output 'logits' holds * NaN/inf value(s)*never saved as a baseline*"])
    assert baseline_entries(pytester) == []


@pytest.mark.slow
def test_failed_export_errors_its_case_and_the_others_still_run(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeconftest(
        """
        import pytest
        import rfdetr

        def broken_export(self, *args, **kwargs):
            raise RuntimeError("exporter crashed: unsupported operator GridSample")

        @pytest.fixture(autouse=True)
        def break_the_exporter(monkeypatch):
            monkeypatch.setattr(rfdetr.RFDETR, "export", broken_export)
        """
    )
    result = pytester.runpytest(*QUICK, "--save-baseline", "--rfdetr-models=RFDETRNano",
                                "--rfdetr-backends=torch-fp32,onnx-cpu", f"--rfdetr-cache-dir={tmp_path / 'fresh'}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*ONNX export of RFDETRNano failed: RuntimeError: exporter crashed: unsupported operator GridSample*",
    ])
    assert baseline_entries(pytester) == ["RFDETRNano-torch-fp32"]
    assert not list((tmp_path / "fresh" / "onnx").glob("*.onnx"))  # nothing half-exported left in the cache


@pytest.mark.slow
def test_a_whole_run_works_with_the_network_blocked(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeconftest(
        """
        import socket

        SAVED = {}

        def refuse(*args, **kwargs):
            raise OSError("network blocked by the test")

        def pytest_configure(config):  # for the whole session, and undone at its end
            for owner, name in ((socket.socket, "connect"), (socket.socket, "connect_ex"),
                                (socket, "create_connection"), (socket, "getaddrinfo")):
                SAVED[(owner, name)] = getattr(owner, name)
                setattr(owner, name, refuse)

        def pytest_unconfigure(config):
            for (owner, name), value in SAVED.items():
                setattr(owner, name, value)
        """
    )
    args = (*QUICK, "--rfdetr-models=RFDETRNano", "--rfdetr-backends=torch-fp32,onnx-cpu",
            f"--rfdetr-cache-dir={tmp_path / 'offline'}", "--rfdetr-tolerance=100%")
    pytester.runpytest(*args, "--save-baseline").assert_outcomes(passed=2)
    pytester.runpytest(*args, "--rfdetr-latency").assert_outcomes(passed=2)


def test_cuda_provider_absent_is_a_skip_with_its_reason() -> None:
    from pytest_rfdetr_latency.measure.backends import BackendContext, BackendUnavailable
    from pytest_rfdetr_latency.measure.backends.onnx_backend import prepare
    from pytest_rfdetr_latency.measure.cases import Case
    from pytest_rfdetr_latency.measure.environment import Device

    context = BackendContext(
        case=Case("RFDETRNano", "onnx-cuda"), device=Device("cuda:0", "NVIDIA H200", "cuda", 0), images=[],
        detections=50, load_model=lambda: None, onnx_path=lambda: Path("unused.onnx"),
    )
    with pytest.raises(BackendUnavailable, match="CUDAExecutionProvider is not available in onnxruntime .*"
                                                 r"install onnxruntime-gpu, not onnxruntime"):
        prepare(context)


@pytest.mark.slow
def test_a_session_that_falls_back_to_the_cpu_fails(nano_onnx: Path) -> None:
    """The CPU build of onnxruntime, asked for CUDA, quietly runs on the CPU: the trap the check exists for."""
    import onnxruntime

    from pytest_rfdetr_latency.measure.backends import BackendMisconfigured
    from pytest_rfdetr_latency.measure.backends.onnx_backend import open_session

    with pytest.raises(BackendMisconfigured, match="onnx-cuda asked ONNX Runtime for CUDAExecutionProvider but the "
                                                   "session runs on CPUExecutionProvider"):
        open_session(onnxruntime, nano_onnx, "onnx-cuda", 0, onnxruntime.SessionOptions())


def test_exports_are_keyed_by_the_exporting_code_not_only_its_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pull request's base and head share one export cache: where their rfdetr says the same version but its code
    differs (a patched copy, an editable checkout), each exports its own; the same code twice is one export."""
    import importlib

    from pytest_rfdetr_latency.measure.models import export_source

    def side(name: str, body: str) -> str:
        package = tmp_path / name / "fake_rfdetr"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text('__version__ = "1.0"\n')
        (package / "export.py").write_text(body)
        monkeypatch.syspath_prepend(str(tmp_path / name))
        importlib.invalidate_caches()
        export_source.cache_clear()
        return export_source("fake_rfdetr")

    base = side("base", "OPSET = 17\n")
    same = side("same", "OPSET = 17\n")  # prepended: found first now
    head = side("head", "OPSET = 18\n")
    assert base == same != head
    export_source.cache_clear()
    assert export_source("no_such_package_here") == "missing"
    export_source.cache_clear()


def test_the_export_cache_keeps_one_export_per_exporting_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session's export cache, as both sides of a head to head share it: rfdetr's code (``export_source``) is
    part of the key, so code that differs exports apart, and the same code finds the export made before."""
    from pytest_rfdetr_latency.measure import models
    from pytest_rfdetr_latency.measure.cases import Case
    from pytest_rfdetr_latency.measure.environment import Device
    from pytest_rfdetr_latency.measure.session import LatencySession
    from pytest_rfdetr_latency.measure.settings import Settings

    exported: list[str] = []

    def export_onnx(model: Any, out_dir: Path, resolution: int, batch: int) -> Path:
        exported.append(models.export_source())
        (out_dir / "model.onnx").write_text(models.export_source())
        return out_dir / "model.onnx"

    monkeypatch.setattr(models, "export_onnx", export_onnx)
    monkeypatch.setattr(LatencySession, "model", lambda self, name, resolution=None: None)
    case = Case("RFDETRNano", "onnx-cpu", resolution=384)
    paths = []
    for source in ("base-code", "head-code", "base-code"):
        monkeypatch.setattr(models, "export_source", lambda package="rfdetr", source=source: source)
        session = LatencySession(Settings(baseline_dir=tmp_path / "baselines"), Device("cpu", "a CPU", "cpu", None),
                                 tmp_path / "cache", tmp_path)
        paths.append(session.onnx_path(case))
    assert exported == ["base-code", "head-code"]  # the third found the first's export
    assert paths[0] == paths[2] != paths[1]
    assert [p.read_text() for p in paths] == ["base-code", "head-code", "base-code"]
