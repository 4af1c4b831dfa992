"""--rfdetr-profile: a window of a scope's calls profiled after its timed blocks (measure/profiling.py), set against
the baseline's (verdict/diagnosis.py) and shown under a regression and in the Markdown summary (report/why.py)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_rfdetr_latency.measure import profiling
from pytest_rfdetr_latency.measure.cases import Case
from pytest_rfdetr_latency.measure.results import CaseResult
from pytest_rfdetr_latency.measure.settings import Settings
from pytest_rfdetr_latency.report import failures, why
from pytest_rfdetr_latency.store import baselines
from pytest_rfdetr_latency.verdict import diagnosis, judge
from pytest_rfdetr_latency.verdict.stats import summarize


def profile(*rows: tuple[str, str, float], wall: float = 10.0, gpu: float = 0.0) -> dict[str, Any]:
    return {"calls": 5, "wall_ms": wall, "cpu_ms": wall, "gpu_ms": gpu, "seconds": 0.1,
            "rows": [{"name": n, "kind": k, "ms": ms} for n, k, ms in rows]}


BEFORE = profile(("aten::addmm", "cpu", 6.0), ("aten::conv2d", "cpu", 3.0), ("aten::relu", "cpu", 0.5), wall=10.0)
AFTER = profile(("aten::addmm", "cpu", 6.1), ("aten::conv2d", "cpu", 3.0), (profiling.INJECTED, "label", 4.0),
                wall=14.1)


def test_the_work_that_was_added_tops_the_table_and_explains_the_change() -> None:
    found = diagnosis.diagnose(BEFORE, AFTER, change_ms=4.2)
    top = found["rows"][0]
    assert (top["name"], top["kind"], top["status"]) == (profiling.INJECTED, "label", "new")
    assert top["before_ms"] == 0.0 and top["after_ms"] == 4.0 and top["delta_ms"] == 4.0
    statuses = {r["name"]: r["status"] for r in found["rows"]}
    assert statuses == {profiling.INJECTED: "new", "aten::addmm": "slower", "aten::relu": "gone"}  # conv2d: same
    on_host = [r["delta_ms"] for r in found["rows"] if r["kind"] != "gpu"]
    on_gpu = [r["delta_ms"] for r in found["rows"] if r["kind"] == "gpu"]
    assert [r["delta_ms"] for r in found["rows"]] == on_host + on_gpu  # the explaining timeline's rows first
    assert on_host == sorted(on_host, reverse=True) and on_gpu == sorted(on_gpu, reverse=True)
    assert found["explained"] == pytest.approx(4.1 / 4.2, abs=1e-3) and found["explained_by"] == "host"
    assert found["profiled_ms"] == [10.0, 14.1]
    # A change that made the scope faster has nothing to explain.
    assert diagnosis.diagnose(AFTER, BEFORE, change_ms=-4.0)["explained"] is None


def test_the_table_keeps_the_largest_changes_either_way_and_never_adds_the_two_timelines() -> None:
    # An operator replaced by another: the one that went is as large a change as the one that came.
    before = profile(*[(f"aten::small{i}", "cpu", 0.1) for i in range(9)], ("aten::old", "cpu", 5.0),
                     ("gemm_kernel", "gpu", 2.0), ("cudaDeviceSynchronize", "cpu", 2.0))
    after = profile(*[(f"aten::small{i}", "cpu", 0.2) for i in range(9)], ("aten::new", "cpu", 5.5),
                    ("gemm_kernel", "gpu", 3.0), ("cudaDeviceSynchronize", "cpu", 3.0))
    found = diagnosis.diagnose(before, after, change_ms=2.0)
    names = [r["name"] for r in found["rows"]]
    assert len(names) == diagnosis.TOP and names[0] == "aten::new" and "aten::old" in names
    on_host = [r["delta_ms"] for r in found["rows"] if r["kind"] != "gpu"]
    on_gpu = [r["delta_ms"] for r in found["rows"] if r["kind"] == "gpu"]
    assert [r["delta_ms"] for r in found["rows"]] == on_host + on_gpu  # the explaining timeline's rows first
    assert on_host == sorted(on_host, reverse=True) and on_gpu == sorted(on_gpu, reverse=True)
    # The slower kernel made the host wait as long again: 1 ms on each timeline, not 2 ms between them. The host
    # timeline explains more here (a new operator, the wait, small ones): it is the one named.
    assert found["explained_by"] == "host" and found["explained"] == pytest.approx((5.5 + 1.0 + 0.9) / 2.0)
    gpu_only = diagnosis.diagnose(profile(("gemm_kernel", "gpu", 2.0)), profile(("gemm_kernel", "gpu", 3.5)), 1.5)
    assert gpu_only["explained_by"] == "gpu" and gpu_only["explained"] == pytest.approx(1.0)


def test_the_device_scope_is_explained_on_the_gpus_timeline_its_added_kernel_first() -> None:
    # The H200's hidden chain of matrix products (RFDETRMedium torch-fp16, device scope judged +0.271 ms): the host
    # waited 0.23 ms longer for it, more than the new kernel's own 0.183 ms; the device scope times the GPU's work.
    before = profile(("cudaDeviceSynchronize", "cpu", 1.34), ("cudaGraphLaunch", "cpu", 0.418),
                     ("fmha_kernel", "gpu", 0.9), ("layernorm_kernel", "gpu", 0.59))
    after = profile(("cudaDeviceSynchronize", "cpu", 1.57), ("cudaGraphLaunch", "cpu", 0.496),
                    ("fmha_kernel", "gpu", 0.9), ("layernorm_kernel", "gpu", 0.60),
                    ("nvjet_sm90_hsh_256x128_64x4_1x2_h_bz_coopA_NNT", "gpu", 0.183))
    verdicts = {"device": verdict("device", "regression", 1.654, 1.925)}
    found = diagnosis.for_result(verdicts, {"device": after}, {"device": before})["device"]
    assert found["explained_by"] == "gpu" and found["explained"] == pytest.approx(0.193 / 0.271, abs=1e-3)
    assert found["rows"][0]["name"].startswith("nvjet_sm90") and found["rows"][0]["status"] == "new"
    assert why.lines("device", found)[0].startswith("why (device, profiled, time a call): nvjet_sm90_hsh")
    assert diagnosis.diagnose(before, after, 0.271)["explained_by"] == "host"  # left to itself, the wait explains more


def test_a_kernel_matches_across_the_launch_parameters_in_its_name() -> None:
    before = profile(("void gemm<float, 128, 64>(int, int)", "gpu", 1.0))
    after = profile(("void gemm<float, 256, 32>(int, int)", "gpu", 1.5))
    found = diagnosis.diagnose(before, after, change_ms=0.5)
    assert len(found["rows"]) == 1 and found["rows"][0]["status"] == "slower"
    assert diagnosis.matched_name("k<a<b, 3>, 7>  (x)") == "k<> (x)"


def verdict(scope: str, kind: str, baseline: float, current: float) -> judge.Verdict:
    return judge.Verdict(kind, scope, "p20", baseline, current, 0.1, "10%: asked", (baseline,), (current,))  # type: ignore[arg-type]


def regressed(diagnosed: bool) -> CaseResult:
    made = CaseResult(Case("RFDETRNano", "torch-fp32"), "AMD EPYC", "regression", baseline_file="b.json")
    made.verdicts = {"forward": verdict("forward", "regression", 10.0, 14.2),
                     "e2e": verdict("e2e", "pass", 20.0, 20.1)}
    made.baseline = {"profile": {"forward": BEFORE}} if diagnosed else {}
    if diagnosed:
        made.diagnosis = diagnosis.for_result(made.verdicts, {"forward": AFTER}, {"forward": BEFORE})
    return made


def test_a_regression_says_why_under_its_message_and_in_the_markdown() -> None:
    result = regressed(diagnosed=True)
    assert set(result.diagnosis) == {"forward"} and result.diagnosis["forward"]["change_ms"] == pytest.approx(4.2)
    text = failures.message(result.case.id, result, Settings(enabled=True, profile=True), None, "pytest ...",
                            lambda scope: False)
    assert (f"  why (forward, profiled, time a call): {profiling.INJECTED} (label, new) 0 -> 4 ms; aten::addmm "
            "(cpu, slower) 6 -> 6.1 ms, 98% of the judged +4.2 ms on the host timeline") in text.splitlines()
    table = "\n".join(why.markdown([result.to_json()]))
    assert ("**Why `RFDETRNano-torch-fp32` forward got slower** (profiled, time a call; measured +4.2 ms as judged; "
            "the rows that grew explain 98% of it on the host timeline):") in table
    assert f"| `{profiling.INJECTED}` | label | new | 0 ms | 4 ms | +4 ms |" in table
    assert "e2e" not in table  # it passed


def test_a_regression_asked_to_be_profiled_says_why_it_has_no_diagnosis() -> None:
    result = regressed(diagnosed=False)
    text = failures.message(result.case.id, result, Settings(enabled=True, profile=True), None, "pytest ...",
                            lambda scope: False)
    assert ("  forward: no diagnosis: the baseline entry holds no profile to compare with (record it with "
            "--save-baseline --rfdetr-profile)") in text.splitlines()
    result.details["profile_errors"] = {"forward": "RuntimeError: no profiler", "e2e": "RuntimeError: other"}
    said = why.missing("forward", result.details, result.baseline)
    assert said == "no diagnosis: the profile could not be taken (RuntimeError: no profiler)"
    assert why.missing("e2e", {}, {"profile": {"forward": BEFORE}}) == (
        "no diagnosis: this scope was not profiled on both sides")
    unasked = failures.message(result.case.id, result, Settings(enabled=True), None, "pytest ...", lambda s: False)
    assert "diagnosis" not in unasked
    # A memory regression is no timing scope: nothing is said of profiles under it.
    result.verdicts = {"memory": verdict("memory", "regression", 100.0, 120.0)}
    text = failures.message(result.case.id, result, Settings(enabled=True, profile=True), None, "pytest ...",
                            lambda scope: False)
    assert "diagnosis" not in text


def test_head_to_head_says_why_a_regression_has_no_diagnosis_from_either_side(tmp_path: Path) -> None:
    from pytest_rfdetr_latency.measure import headtohead
    from pytest_rfdetr_latency.measure.processes import ChildOutcome

    result = regressed(diagnosed=False)
    result.scopes = {"forward": summarize([[10.0, 10.1], [9.9, 10.0]], "p20", block_size=2)}
    failed = {headtohead.THIS: ChildOutcome(error="exit 1: this broke"),
              headtohead.OTHER: ChildOutcome(error="exit 1: that broke")}
    versus = headtohead.HeadToHead(tmp_path / "python", profiler=lambda target, case, sizes: failed)
    headtohead.diagnose(versus, "test_x.py::test_latency", result, asked=False)
    assert result.details["profile_process"]["scopes"] == ["forward"] and not result.diagnosis
    assert result.details["profile_errors"] == {"forward": "the profiling process failed: exit 1: that broke; this "
                                                           "side: the profiling process failed: exit 1: this broke"}
    text = failures.message(result.case.id, result, Settings(enabled=True), tmp_path / "python", "pytest ...",
                            lambda scope: False)
    assert ("  forward: no diagnosis: the profile could not be taken (the profiling process failed: exit 1: that "
            "broke; this side: the profiling process failed: exit 1: this broke)") in text.splitlines()


def test_with_no_profile_a_regression_starts_no_profiling_process_and_says_why_there_is_no_diagnosis(
    tmp_path: Path,
) -> None:
    # A gate with a tight time limit: on the H200, profiling a regressed case on both sides takes about a minute.
    from pytest_rfdetr_latency.measure import headtohead

    result = regressed(diagnosed=False)
    result.scopes = {"forward": summarize([[10.0, 10.1], [9.9, 10.0]], "p20", block_size=2)}
    from pytest_rfdetr_latency.measure.processes import ChildOutcome

    started: list[str] = []

    def profiler(target: str, case: str, sizes: object) -> dict[str, ChildOutcome]:
        started.append(case)
        return {side: ChildOutcome(error="not run here") for side in (headtohead.THIS, headtohead.OTHER)}

    versus = headtohead.HeadToHead(tmp_path / "python", profiler=profiler)
    refused = Settings(enabled=True, no_profile=True)
    headtohead.diagnose(versus, "test_x.py::test_latency", result, *refused.profiling)
    assert started == [] and "profile_process" not in result.details
    text = failures.message(result.case.id, result, refused, tmp_path / "python", "pytest ...", lambda scope: False)
    said = "  not profiled (--rfdetr-no-profile): run without it to see which operators or kernels changed"
    assert said in text.splitlines()
    result.baseline = {"scopes": {}}  # a stored baseline recorded without profiles: nothing would be profiled anyway
    assert said not in failures.message(result.case.id, result, refused, None, "pytest ...", lambda scope: False)
    result.baseline = {"scopes": {}, "profile": {"forward": {}}}
    assert said in failures.message(result.case.id, result, refused, None, "pytest ...", lambda scope: False)
    headtohead.diagnose(versus, "test_x.py::test_latency", result, *Settings(enabled=True).profiling)
    assert started == [result.case.id]  # without it, the regression is profiled


def test_a_change_the_profiler_cannot_see_is_said_so() -> None:
    found = diagnosis.diagnose(BEFORE, profile(("aten::addmm", "cpu", 5.0)), change_ms=3.0)
    assert why.lines("forward", found) == [
        "why (forward, profiled): no operator or kernel grew; the change is not in what the profiler sees"]
    assert found["explained"] == 0.0


def busy(ms: float) -> None:
    end = time.perf_counter() + ms / 1000.0
    while time.perf_counter() < end:
        pass


def test_a_profiled_window_names_the_labelled_work_and_keeps_stderr() -> None:
    import torch

    weights, x = torch.randn(64, 64), torch.randn(8, 64)

    def step() -> object:
        busy(3.0)
        return x @ weights

    stderr_was = os.fstat(2)
    found = profiling.capture(profiling.labelled(step), cuda=False, calls=3)
    rows = {r["name"]: r for r in found["rows"]}
    assert found["calls"] == 3 and found["seconds"] > 0 and found["gpu_ms"] == 0.0
    assert rows[profiling.INJECTED]["kind"] == "label" and 2.5 <= rows[profiling.INJECTED]["ms"] <= 30.0
    assert any(name.startswith("aten::") for name in rows) and profiling.OUTSIDE in rows
    assert found["wall_ms"] >= rows[profiling.INJECTED]["ms"]
    stderr_is = os.fstat(2)  # the process's stderr is back where it was
    assert (stderr_is.st_dev, stderr_is.st_ino) == (stderr_was.st_dev, stderr_was.st_ino)


def test_the_raw_trace_is_kept_gzipped_beside_the_report_and_bounded(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip
    import json

    folder = profiling.trace_folder(tmp_path / "check.json")
    assert folder == tmp_path / "check-traces" and profiling.trace_folder(None) is None
    details: dict[str, Any] = {}
    profiling.take_all(details, [("forward", profiling.labelled(lambda: busy(1.0)))], cuda=False, traces=folder,
                       case_id="RFDETRNano-torch-fp32")
    path = folder / "RFDETRNano-torch-fp32.forward.trace.json.gz"
    assert details["profile"]["forward"]["trace"] == str(path)
    events = json.loads(gzip.decompress(path.read_bytes()))["traceEvents"]
    assert any(e.get("name") == profiling.INJECTED for e in events)  # opens in Perfetto with the labelled work
    assert [p.name for p in folder.iterdir()] == [path.name]  # nothing left aside
    monkeypatch.setattr(profiling, "MAX_TRACE_BYTES", 10)
    found = profiling.capture(lambda: busy(1.0), cuda=False, calls=1, trace=folder / "big.trace.json.gz")
    assert "over the" in found["trace_error"] and not (folder / "big.trace.json.gz").exists()


def test_onnx_runtimes_own_profile_becomes_operator_rows_that_replace_the_unseen_host_time() -> None:
    def node(op: str, ts: float, dur: float) -> dict[str, Any]:
        return {"cat": "Node", "name": f"/{op.lower()}_1_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    events = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 900},  # the run not counted (warm-up)
        node("MatMul", 10, 800),
        {"cat": "Session", "name": "model_run", "ts": 1000, "dur": 500},
        node("MatMul", 1010, 300), node("Conv", 1320, 100),
        {"cat": "Node", "name": "/matmul_1_fence_before", "ts": 1009, "dur": 1, "args": {"op_name": "MatMul"}},
        {"cat": "Session", "name": "model_run", "ts": 2000, "dur": 500},
        node("MatMul", 2010, 340), node("Conv", 2360, 100),
    ]
    rows = {r["name"]: r for r in profiling.ort_rows(events, runs=2)}
    assert rows == {"ort::MatMul": {"name": "ort::MatMul", "kind": "cpu", "ms": 0.32},
                    "ort::Conv": {"name": "ort::Conv", "kind": "cpu", "ms": 0.1}}
    table = {"calls": 2, "wall_ms": 0.6, "cpu_ms": 0.05, "gpu_ms": 0.0,
             "rows": [{"name": "aten::to", "kind": "cpu", "ms": 0.05}, {"name": profiling.OUTSIDE, "kind": "host",
                                                                         "ms": 0.55}]}
    profiling.add_operators(table, list(rows.values()))
    named = {r["name"]: r["ms"] for r in table["rows"]}
    assert named[profiling.OUTSIDE] == pytest.approx(0.13) and named["ort::MatMul"] == 0.32
    assert sum(named.values()) == pytest.approx(table["wall_ms"]) and table["cpu_ms"] == pytest.approx(0.47)
    assert "session profiling" in table["operators"] and table["outside_taken_ms"] == pytest.approx(0.42)
    alone = diagnosis._without_operators(table)  # what a side without operators is set against
    assert {r["name"]: r["ms"] for r in alone["rows"]} == pytest.approx({"aten::to": 0.05, profiling.OUTSIDE: 0.55})


def test_without_a_spare_descriptor_the_profile_is_still_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_descriptor(fd: int) -> int:
        raise OSError("too many open files")

    monkeypatch.setattr(os, "dup", no_descriptor)
    assert profiling.capture(lambda: busy(1.0), cuda=False, calls=2)["calls"] == 2


def event(key: str, device: str, *, annotation: bool = False, cpu_us: float = 0.0, **gpu_us: float) -> Any:
    return SimpleNamespace(key=key, device_type=f"DeviceType.{device}", is_user_annotation=annotation,
                           self_cpu_time_total=cpu_us, **gpu_us)


def test_kernels_labels_and_operators_become_rows_of_time_a_call() -> None:
    events = [event("aten::mm", "CPU", cpu_us=300.0), event("sm90_gemm", "CUDA", self_device_time_total=900.0),
              event("older_gemm", "CUDA", self_cuda_time_total=600.0),  # torch before 2.4 names it after CUDA
              event(profiling.INJECTED, "CPU", annotation=True, cpu_us=1500.0),
              event(profiling.INJECTED, "CUDA", annotation=True, self_device_time_total=1500.0),  # its GPU span
              event("aten::empty", "CPU", cpu_us=0.0)]
    rows = {(r["name"], r["kind"]): r["ms"] for r in profiling.rows_of(events, calls=3)}
    assert rows == {("aten::mm", "cpu"): 0.1, ("sm90_gemm", "gpu"): 0.3, ("older_gemm", "gpu"): 0.2,
                    (profiling.INJECTED, "label"): 0.5}


def test_past_the_kept_rows_the_rest_is_summed_per_kind() -> None:
    rows = [{"name": f"k{i}", "kind": "gpu", "ms": 1.0 + i} for i in range(profiling.MAX_ROWS)]
    rows += [{"name": "tail1", "kind": "gpu", "ms": 0.25}, {"name": "tail2", "kind": "cpu", "ms": 0.5},
             {"name": "tail3", "kind": "gpu", "ms": 0.25}]
    kept = profiling.kept(rows)
    assert len(kept) == profiling.MAX_ROWS + 2 and kept[0]["name"] == f"k{profiling.MAX_ROWS - 1}"
    assert sorted(kept[-2:], key=lambda r: r["kind"]) == [{"name": "(other cpu rows)", "kind": "cpu", "ms": 0.5},
                                                          {"name": "(other gpu rows)", "kind": "gpu", "ms": 0.5}]


def test_work_is_left_unlabelled_without_torch_and_a_failed_profile_is_said(monkeypatch: pytest.MonkeyPatch) -> None:
    def work() -> None:
        pass

    monkeypatch.delitem(sys.modules, "torch")
    assert profiling.labelled(work) is work
    monkeypatch.undo()

    def broken() -> None:
        raise RuntimeError("no window")

    details: dict[str, Any] = {}
    profiling.take_all(details, [("forward", broken), ("e2e", lambda: busy(0.5))], cuda=False)
    assert details["profile_errors"] == {"forward": "RuntimeError: no window"} and list(details["profile"]) == ["e2e"]


def test_a_recording_keeps_the_first_processes_profile_in_its_entry(tmp_path: Path) -> None:
    figures = summarize([[10.0, 10.1], [9.9, 10.0]], "p20", block_size=2).to_json()
    first = {"id": "A", "backend": "torch-fp32", "fingerprint": {}, "scopes": {"forward": figures},
             "details": {"profile": {"forward": BEFORE}}}
    entry = baselines.entry_from_processes([first, {**first, "details": {}}], None)
    path = tmp_path / "amd-epyc.json"
    baselines.save(path, "AMD EPYC", {"A": entry})
    loaded = baselines.load(path)
    assert loaded is not None and loaded.entries["A"]["profile"] == {"forward": BEFORE}
    plain = baselines.entry_from_processes([{**first, "details": {}}], None)
    assert "profile" not in plain
    bad = {**entry, "profile": {"forward": {**BEFORE, "rows": [{"name": "x", "kind": "disk", "ms": 1.0}]}}}
    with pytest.raises(baselines.BaselineError):
        baselines.save(path, "AMD EPYC", {"A": bad})


def test_an_onnx_case_profiles_its_operators_once_into_its_session_scopes(tmp_path: Path) -> None:
    from pytest_rfdetr_latency.measure.backends import Prepared
    from pytest_rfdetr_latency.measure.case import CaseMeasurement
    from pytest_rfdetr_latency.measure.environment import Device

    session = SimpleNamespace(device=Device("cpu", "CPU", "cpu"), settings=Settings(trace_dir=tmp_path / "r-traces"))
    measuring = CaseMeasurement(session, Case("RFDETRNano", "onnx-cpu"), ("forward", "e2e"),  # type: ignore[arg-type]
                                skip=pytest.skip, fail=pytest.fail, publish=lambda result: None)
    measuring._to_profile = [("forward", lambda: busy(1.0)), ("e2e", lambda: busy(1.0))]
    asked: list[int] = []

    def operators(calls: int) -> list[dict[str, Any]]:
        asked.append(calls)
        return [{"name": "ort::MatMul", "kind": "cpu", "ms": 0.5}]

    prepared = Prepared(scopes={}, graphable=None, unavailable={}, precision="fp32", detections=1.0,
                        score_threshold=0.5, operators=operators)
    result = CaseResult(Case("RFDETRNano", "onnx-cpu"), "CPU", "measured")
    measuring._profile(prepared, result)
    assert asked == [profiling.WINDOW_CALLS]  # one session of its own for every scope that runs it
    for scope in ("forward", "e2e"):
        assert {"name": "ort::MatMul", "kind": "cpu", "ms": 0.5} in result.details["profile"][scope]["rows"]
    assert (tmp_path / "r-traces" / "RFDETRNano-onnx-cpu.forward.trace.json.gz").exists()

    def broken(calls: int) -> list[dict[str, Any]]:
        raise RuntimeError("profiling is not available in this build")

    failed = CaseResult(Case("RFDETRNano", "onnx-cpu"), "CPU", "measured")
    measuring._profile(Prepared(scopes={}, graphable=None, unavailable={}, precision="fp32", detections=1.0,
                                score_threshold=0.5, operators=broken), failed)
    assert "RuntimeError: profiling is not available" in failed.details["profile_errors"]["operators"]
    assert all(r["name"] != "ort::MatMul" for r in failed.details["profile"]["forward"]["rows"])  # tables stand


def test_a_profile_without_onnx_runtimes_operators_is_met_by_one_without_them() -> None:
    # A baseline profiled before the operators were taken, against a check that has them: ort:: rows would all read
    # as new and explain thousands of percent; given back to the host time outside operators, they read as it was.
    before = {**profile(("aten::to", "cpu", 0.2)), "wall_ms": 100.0}
    before["rows"].append({"name": profiling.OUTSIDE, "kind": "host", "ms": 99.8})
    after = {**profile(("aten::to", "cpu", 0.2), ("ort::Conv", "cpu", 60.0), ("ort::MatMul", "cpu", 45.0)),
             "wall_ms": 105.2, "operators": "ONNX Runtime's session profiling"}
    after["rows"].append({"name": profiling.OUTSIDE, "kind": "host", "ms": 0.0})
    found = diagnosis.diagnose(before, after, change_ms=5.2)
    assert [r["name"] for r in found["rows"]] == [profiling.OUTSIDE]
    assert found["rows"][0]["delta_ms"] == pytest.approx(5.2) and found["explained"] == pytest.approx(1.0)
    assert (diagnosis.ORT_PREFIX, diagnosis.OUTSIDE) == (profiling.ORT_PREFIX, profiling.OUTSIDE)


def test_onnx_runtimes_real_profile_reads_as_operator_rows(tmp_path: Path) -> None:
    import json

    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.eye(64, dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 64])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [64, 64])], [weight])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "ort")
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    for _ in range(4):
        session.run(None, {"x": np.ones((64, 64), np.float32)})
    rows = profiling.ort_rows(json.loads(Path(session.end_profiling()).read_text()), runs=3)
    names = {r["name"] for r in rows}
    assert {"ort::MatMul", "ort::Relu"} <= names and all(r["kind"] == "cpu" and r["ms"] > 0 for r in rows)
