"""Budgets, parity, axes, a user's ONNX file, and measuring in fresh processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_rfdetr_latency.measure import parity
from pytest_rfdetr_latency.verdict import budgets

SUITE = """
def test_latency(rfdetr_case):
    rfdetr_case.check()
"""
# Mechanism tests: a plan that measures little (precision is not what they check).
FAST = "--rfdetr-sampling=quick,min-blocks=4,max-seconds=1,warmup-seconds=0.5"
QUICK = ("--rfdetr-device=cpu", FAST, "--rfdetr-images=2", "-p", "no:randomly")


def test_budget_specs_parse_and_apply() -> None:
    budget = budgets.parse("RFDETRMedium-*:e2e:median<=12ms@nvidia-h*")
    assert budget == budgets.Budget("RFDETRMedium-*", "e2e", "median", 12.0, "nvidia-h*")
    assert budgets.parse("forward:p90<=8.5ms", case="X-onnx-cuda").case == "X-onnx-cuda"
    assert len(budgets.parse_many("A:e2e:median<=1ms\nB:forward:min<=2ms@cpu")) == 2
    stats = {"e2e": {"median_ms": 13.0}}
    assert budgets.violations([budget], "RFDETRMedium-torch-fp16", "nvidia-h200", stats) == [
        "budget RFDETRMedium-*:e2e:median<=12ms@nvidia-h*: e2e median is 13 ms, +8.3% over the 12 ms limit"
    ]
    assert budgets.violations([budget], "RFDETRMedium-torch-fp16", "nvidia-l4", stats) == []
    assert budgets.violations([budget], "RFDETRSmall-torch-fp16", "nvidia-h200", stats) == []


@pytest.mark.parametrize("bad", ["e2e<=12ms", "X:e2e:median<12ms", "X:warp:median<=1ms", "X:e2e:mode<=1ms",
                                 "X:e2e:median<=0ms"])
def test_bad_budgets_name_the_form(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid budget"):
        budgets.parse(bad)


@pytest.fixture(scope="module")
def nano_outputs() -> dict[str, Any]:
    """Real FP32 outputs of a seeded RFDETRNano on a synthetic image."""
    import torch

    from pytest_rfdetr_latency.measure.backends.base import preprocess_tensor
    from pytest_rfdetr_latency.measure.backends.torch_backend import tensor_outputs
    from pytest_rfdetr_latency.measure.images import synthetic_images
    from pytest_rfdetr_latency.measure.models import build_model, optimize, optimized_module

    model = build_model("RFDETRNano", "cpu")
    optimize(model, torch.float32)
    x = preprocess_tensor(synthetic_images(1), 384, model.means, model.stds)
    with torch.inference_mode():
        raw = tensor_outputs(optimized_module(model)(x), "detection")
    return {k: v.numpy() for k, v in raw.items()}


def test_identical_outputs_pass_parity(nano_outputs: dict[str, Any]) -> None:
    found = parity.compare(nano_outputs, nano_outputs, "fp32")
    assert found.passed
    assert found.metrics["found_share"] == 1.0 and found.metrics["max_score_error"] == 0.0


def test_half_precision_rounding_passes_its_limits(nano_outputs: dict[str, Any]) -> None:
    import numpy as np

    rounded = {k: v.astype(np.float16).astype(np.float32) for k, v in nano_outputs.items()}
    assert parity.compare(nano_outputs, rounded, "fp16").passed


def test_wrong_outputs_fail_parity_whatever_their_speed(nano_outputs: dict[str, Any]) -> None:
    import numpy as np

    rng = np.random.default_rng(1)
    shuffled = dict(nano_outputs)
    shuffled["boxes"] = rng.permutation(nano_outputs["boxes"], axis=1)  # boxes no longer belong to their scores
    found = parity.compare(nano_outputs, shuffled, "fp16")
    assert not found.passed
    assert any("found again" in f or "IoU" in f for f in found.failures)
    nan = {k: v.copy() for k, v in nano_outputs.items()}
    nan["logits"][0, 0, 0] = np.nan
    assert parity.compare(nano_outputs, nan, "fp32").failures == ("output 'logits' holds NaN or inf",)


def test_axes_show_in_ids(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("--collect-only", "-q", "--rfdetr-models=RFDETRNano", "--rfdetr-backends=onnx-cpu",
                                "--rfdetr-batch-sizes=1,2", "--rfdetr-resolutions=native,320")
    result.stdout.fnmatch_lines([
        "*[[]RFDETRNano-onnx-cpu[]]", "*[[]RFDETRNano-onnx-cpu-b2[]]", "*[[]RFDETRNano-onnx-cpu-r320[]]",
        "*[[]RFDETRNano-onnx-cpu-b2-r320[]]", "*4 tests collected*",
    ])


@pytest.mark.slow
def test_batch_resolution_budget_and_a_users_onnx_file(pytester: pytest.Pytester, tmp_path: Path) -> None:
    from pytest_rfdetr_latency.measure.models import build_model, export_onnx

    own = export_onnx(build_model("RFDETRNano", "cpu", resolution=320), tmp_path / "export", 320, 1)
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest(
        *QUICK, "--save-baseline", "--rfdetr-models=RFDETRNano", "--rfdetr-backends=onnx-cpu",
        "--rfdetr-batch-sizes=2", "--rfdetr-resolutions=320", "--rfdetr-scopes=e2e",
        f"--rfdetr-onnx=mine={own}", f"--rfdetr-cache-dir={tmp_path / 'cache'}", "--rfdetr-report=report.json", "-v",
        "--rfdetr-budget=mine-*:e2e:median<=0.5ms",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "  [[]rfdetr-latency[]] exporting RFDETRNano to ONNX (cached in *",  # progress, shown live with -v
        "*mine-onnx-cpu on * is over budget:*",
        "*budget mine-[*]:e2e:median<=0.5ms: *",
    ])
    report = json.loads((pytester.path / "report.json").read_text())
    cases = {c["id"]: c for c in report["cases"]}
    batched = cases["RFDETRNano-onnx-cpu-b2-r320"]
    assert batched["outcome"] == "saved" and batched["batch"] == 2
    assert batched["parity"]["passed"]
    assert report["fps"]["RFDETRNano-b2-r320"]["onnx-cpu"] > 0
    mine = cases["mine-onnx-cpu"]
    assert mine["outcome"] == "over-budget"
    assert mine["details"]["parity"].startswith("not checked: a user's ONNX file")
    saved = next((pytester.path / "latency_baselines").glob("*.json"))
    assert sorted(json.loads(saved.read_text())["entries"]) == ["RFDETRNano-onnx-cpu-b2-r320"]  # over budget: not saved


# A fresh process leaves behind which of the heavy modules it imported.
IMPORTS = """
import os, pathlib, sys

def pytest_sessionfinish():
    if os.environ.get("_PYTEST_RFDETR_LATENCY_CHILD"):
        heavy = sorted(m for m in ("torch", "rfdetr", "onnxruntime") if m in sys.modules)
        pathlib.Path(f"imported-by-{os.getpid()}.txt").write_text(" ".join(heavy))
"""


def test_a_baseline_of_several_processes_and_a_check_confirmed_in_fresh_ones(
    pytester: pytest.Pytester, tmp_path: Path, fake_backend: Any
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeconftest(IMPORTS)
    # Two cases of one backend (native resolution and 320), on the fake: a fixed time per call, so that the verdicts
    # are the mechanism's, not two shared cores' (the real stack's run is test_end_to_end.py's).
    args = (*QUICK, "--rfdetr-models=RFDETRNano", "--rfdetr-backends=torch-fp32", "--rfdetr-scopes=forward",
            "--rfdetr-resolutions=native,320", "--rfdetr-detections=40", f"--rfdetr-cache-dir={tmp_path / 'cache'}",
            "--rfdetr-report=report.json")
    saved = pytester.runpytest(*args, "--save-baseline", "--rfdetr-save-processes=3")
    saved.assert_outcomes(passed=2)
    saved.stdout.fnmatch_lines(["*RFDETRNano-torch-fp32 *forward*3*saved as baseline, spread *",
                                "*2 case(s) recorded in * (0 other(s) kept; 3 process(es) each)"])
    entry = json.loads(next((pytester.path / "latency_baselines").glob("*.json")).read_text())["entries"][
        "RFDETRNano-torch-fp32"]
    forward = entry["scopes"]["forward"]
    assert entry["processes"] == 3 and len(forward["processes"]) == 3
    assert {p["block_size"] for p in forward["processes"]} == {forward["block_size"]}  # sampled alike
    assert entry["fingerprint"]["detections"] == 40
    assert 2.0 <= forward["value_ms"] < 2.5  # the fake's 2 ms a call
    # The fresh processes measured the fake without importing the real stack: they start in a fraction of a second.
    imported = [path.read_text() for path in pytester.path.glob("imported-by-*.txt")]
    assert len(imported) == 2 and imported == ["", ""]  # the 2nd and 3rd process of the recording

    slowed = pytester.runpytest(*args, "--rfdetr-latency", "--rfdetr-confirm=2", "--rfdetr-inject-slowdown=300%",
                                "--rfdetr-tolerance=50%")
    slowed.assert_outcomes(failed=2)
    slowed.stdout.fnmatch_lines([
        "*forward p20: baseline * (3 processes: *), now * (2 processes: *), +*% (threshold *) -> regression",
        "measured again in fresh processes:",
        "  RFDETRNano-torch-fp32 forward: 2 process(es): * ms -> regression",
    ])
    checked = next(case for case in json.loads((pytester.path / "report.json").read_text())["cases"]
                   if case["id"] == "RFDETRNano-torch-fp32")
    # Two processes beyond the line settle the median of three: the third is not started.
    record = checked["details"]["processes"]
    assert {k: record[k] for k in ("planned", "measured", "failed", "suspects")} == {
        "planned": 3, "measured": 2, "failed": 0, "suspects": ["forward"]}
    assert record["seconds"] > 0  # what the fresh process cost
    assert checked["processes"][0]["scopes"]["forward"]["block_size"] == forward["block_size"]
    assert checked["verdicts"]["forward"]["current"] > 3.5 * checked["verdicts"]["forward"]["baseline"]

    # A fresh process inherits the environment: with one that cannot start, the check is inconclusive and shows why.
    pytester.makeconftest("import os\nif os.environ.get('_PYTEST_RFDETR_LATENCY_CHILD'):\n"
                          "    raise SystemExit('this conftest refuses fresh processes')\n")
    refused = pytester.runpytest(*args, "--rfdetr-latency", "--rfdetr-confirm=1", "--rfdetr-inject-slowdown=300%",
                                 "--rfdetr-strict")
    refused.assert_outcomes(failed=2)
    refused.stdout.fnmatch_lines([
        "*forward p20: * -> inconclusive; the fresh processes that were to confirm it failed: exit code *; its last "
        "lines:*",
        "*this conftest refuses fresh processes*",
    ])


def test_what_a_fresh_process_and_a_recording_command_repeat_of_the_invocation() -> None:
    from pytest_rfdetr_latency.measure.processes import given_options, recording_arguments

    args = ["tests/latency", "-n", "2", "-k", "Medium", "--rfdetr-models", "RFDETRMedium", "--rfdetr-strict",
            "--rfdetr-report=out.json", "--rfdetr-plot", "plots", "-p", "myplugin", "-pno:randomly",
            "--rfdetr-tolerance=5%", "--rfdetr-confirm", "0", "-o", "x=1", "--import-mode=importlib", "--noconftest"]
    assert given_options(args) == ("-p", "myplugin", "-pno:randomly", "-o", "x=1", "--import-mode=importlib",
                                   "--noconftest")
    flags = ["--rfdetr-strict", "--rfdetr-latency"]
    # -n too: a baseline recorded with the check's workers has the check's cores (part of the workload).
    assert recording_arguments(args, ["tests/latency"], False, flags) == (
        "tests/latency", "-p", "myplugin", "-pno:randomly", "-o", "x=1", "--import-mode=importlib", "--noconftest",
        "-n", "2", "--rfdetr-models", "RFDETRMedium",
    )
    assert recording_arguments(["--rfdetr-latency"], ["pytest_rfdetr_latency.suite"], True, flags) == (
        "pytest_rfdetr_latency.suite", "--pyargs")
    # A self-test's and a head-to-head run's options are the check's alone: pasted into a recording they would be
    # refused (--rfdetr-inject-on without --rfdetr-inject-slowdown, --rfdetr-against with --save-baseline).
    checking = ["--rfdetr-latency", "--rfdetr-inject-slowdown=5%", "--rfdetr-inject-on", "host", "--rfdetr-against",
                "/opt/head/bin/python", "--rfdetr-against-tree=../head", "--rfdetr-against-aa", "--rfdetr-seed=3"]
    assert recording_arguments(checking, ["latency"], False, [*flags, "--rfdetr-against-aa"]) == (
        "latency", "--rfdetr-seed=3")


def test_a_fresh_process_gets_the_settings_exactly() -> None:
    import dataclasses

    from pytest_rfdetr_latency.measure.processes import child_settings
    from pytest_rfdetr_latency.measure.settings import Settings

    parent = Settings(enabled=True, seed=0, confirm=2, save_processes=3, report=Path("r.json"), detections=40)
    child = child_settings(parent, process_index=2, cache_dir=Path("/c"), inject=3.0, block_sizes={"A": {"e2e": 4}})
    changed = {f.name for f in dataclasses.fields(Settings) if getattr(child, f.name) != getattr(parent, f.name)}
    assert changed == {"no_parity", "confirm", "save_processes", "report", "inject", "cache_dir", "process_index",
                       "block_sizes"}
    assert child.seed == 0 and child.detections == 40 and child.block_sizes == {"A": {"e2e": 4}}
    # Only a fresh process started to profile profiles, its traces beside the parent's report: a profiler leaves
    # state behind that would slow what a judged process times next.
    assert not Settings(enabled=True, profile=True).profiles_here and not child.profiles_here
    profiler = child_settings(dataclasses.replace(parent, profile=True), process_index=0, cache_dir=Path("/c"),
                              profile=True)
    assert profiler.trace_dir == Path("r-traces") and not profiler.profiles_here  # until it is handed over:
    assert dataclasses.replace(profiler, child_report=Path("c.json")).profiles_here  # processes._hand_over
    assert not child_settings(dataclasses.replace(parent, profile=True), process_index=1, cache_dir=Path("/c"),
                              ).profiles_here


def test_what_building_prints_is_kept_quiet_and_counted_and_shown_when_it_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import logging
    import warnings

    from pytest_rfdetr_latency.measure.quiet import empty_tally, kept_quiet, summary_line, summed

    tally = empty_tally()
    with warnings.catch_warnings(), kept_quiet(tally):
        warnings.simplefilter("always")  # as pytest shows them
        warnings.warn("trace might be incorrect", RuntimeWarning, stacklevel=1)
        warnings.warn("deprecated", FutureWarning, stacklevel=1)
        print("Loading weights")
        logging.getLogger("rf-detr").warning("not loading DINOv2 backbone weights")
    assert tally == {"warnings": {"RuntimeWarning": 1, "FutureWarning": 1}, "output_lines": 2}
    assert capsys.readouterr() == ("", "")
    total = summed([tally, tally, None])
    assert total == {"warnings": {"RuntimeWarning": 2, "FutureWarning": 2}, "output_lines": 4}
    line = summary_line(total)
    assert line is not None and line.startswith("kept out of the way: 4 warning(s) (")
    assert summary_line(empty_tally()) is None

    def failing() -> None:
        with kept_quiet(empty_tally()):
            print("what rfdetr said before failing")
            raise ValueError("no such checkpoint")

    def skipping() -> None:
        with kept_quiet(empty_tally()):
            print("quiet")
            pytest.skip("onnx-cuda needs onnxruntime-gpu")

    with pytest.raises(ValueError, match="no such checkpoint"):
        failing()
    assert "what rfdetr said before failing" in capsys.readouterr().err  # the diagnosis, when it fails
    with pytest.raises(pytest.skip.Exception):
        skipping()
    assert capsys.readouterr().err == ""  # a skip says why itself

    def unavailable() -> None:
        with kept_quiet(empty_tally(), expected=(LookupError,)):
            print("quiet")
            raise LookupError("onnx-cuda needs onnxruntime-gpu")

    with pytest.raises(LookupError):
        unavailable()
    assert capsys.readouterr().err == ""  # an expected one, too

    def strict() -> None:  # the run's own warning filters stay: -W error still makes an error
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            with kept_quiet(empty_tally()):
                warnings.warn("deprecated", FutureWarning, stacklevel=1)

    with pytest.raises(FutureWarning):
        strict()
