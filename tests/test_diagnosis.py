"""--rfdetr-profile: a window of a scope's calls profiled after its timed blocks (measure/profiling.py), set against
the baseline's (verdict/diagnosis.py) and shown under a regression and in the Markdown summary (report/why.py)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
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
    assert [r["delta_ms"] for r in found["rows"]] == sorted((r["delta_ms"] for r in found["rows"]), reverse=True)
    assert found["explained"] == pytest.approx(4.1 / 4.2, abs=1e-3)
    assert found["profiled_ms"] == [10.0, 14.1]
    # A change that made the scope faster has nothing to explain.
    assert diagnosis.diagnose(AFTER, BEFORE, change_ms=-4.0)["explained"] is None


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
            "(cpu, slower) 6 -> 6.1 ms, 98% of the measured +4.2 ms") in text.splitlines()
    table = "\n".join(why.markdown([result.to_json()]))
    assert "**Why `RFDETRNano-torch-fp32` forward got slower** (profiled, time a call; measured +4.2 ms" in table
    assert f"| `{profiling.INJECTED}` | label | new | 0 ms | 4 ms | +4 ms |" in table
    assert "e2e" not in table  # it passed


def test_a_regression_asked_to_be_profiled_says_why_it_has_no_diagnosis() -> None:
    result = regressed(diagnosed=False)
    text = failures.message(result.case.id, result, Settings(enabled=True, profile=True), None, "pytest ...",
                            lambda scope: False)
    assert ("  forward: no diagnosis: the baseline entry holds no profile to compare with (record it with "
            "--save-baseline --rfdetr-profile)") in text.splitlines()
    result.details["profile_errors"] = {"forward": "RuntimeError: no profiler"}
    assert "could not be taken (forward: RuntimeError: no profiler)" in why.missing(result.details, result.baseline)
    unasked = failures.message(result.case.id, result, Settings(enabled=True), None, "pytest ...", lambda s: False)
    assert "diagnosis" not in unasked


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

    found = profiling.capture(profiling.labelled(step), cuda=False, calls=3)
    rows = {r["name"]: r for r in found["rows"]}
    assert found["calls"] == 3 and found["seconds"] > 0 and found["gpu_ms"] == 0.0
    assert rows[profiling.INJECTED]["kind"] == "label" and 2.5 <= rows[profiling.INJECTED]["ms"] <= 30.0
    assert any(name.startswith("aten::") for name in rows) and profiling.OUTSIDE in rows
    assert found["wall_ms"] >= rows[profiling.INJECTED]["ms"]
    os.fstat(2)  # the process's stderr is back where it was
    print("after", file=sys.stderr)


def test_work_is_left_unlabelled_without_torch_and_a_failed_profile_is_said(monkeypatch: pytest.MonkeyPatch) -> None:
    def work() -> None:
        pass

    monkeypatch.delitem(sys.modules, "torch")
    assert profiling.labelled(work) is work
    monkeypatch.undo()

    def broken() -> None:
        raise RuntimeError("no window")

    details: dict[str, Any] = {}
    profiling.take(details, "forward", broken, cuda=False)
    assert "profile" not in details and details["profile_errors"] == {"forward": "RuntimeError: no window"}


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
