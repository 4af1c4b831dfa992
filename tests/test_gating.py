"""What gates (gating.py): unresolved comparisons, strictness by name, and what a recording says it can catch."""

from __future__ import annotations

import pytest

from pytest_rfdetr_latency.verdict import gating, judge
from pytest_rfdetr_latency.verdict.paired import judge_pairs


def stored(backend: str, **scopes: list[float]) -> dict[str, object]:
    return {"backend": backend, "scopes": {
        scope: {"statistic": "median", "processes": [{"value_ms": v} for v in values]}
        for scope, values in scopes.items()}}


def test_a_recording_states_per_case_and_scope_what_a_check_could_catch() -> None:
    entries = {
        "A-torch-fp16": stored("torch-fp16", device=[1.500, 1.503, 1.497], forward=[5.6, 7.9, 6.4]),
        "B-torch-fp16": stored("torch-fp16", device=[2.550, 2.556, 2.552], forward=[9.0, 9.1, 9.05]),
    }
    asked = {"device": 0.01, "forward": 0.10}.__getitem__
    found = gating.detectable(entries, asked, planned=3)
    # The device scope's processes agree to 0.2 %: what is asked (1 %) is what it catches. The forward scope's
    # disagree by 17 % in one case: its line is far above the 15 % a forward must resolve, and B's is floored by the
    # typical spread pooled over both cases.
    assert found["A-torch-fp16"]["device"] == pytest.approx(0.01)
    assert found["A-torch-fp16"]["forward"] > 0.5 and found["B-torch-fp16"]["forward"] > 0.15
    lines = gating.detectable_lines(found, lambda scope: None)
    assert lines[0].startswith("can catch on this runner: A-torch-fp16: device 1%, forward ")
    assert lines[0].endswith("(not gating: must resolve 15%)")


def test_a_pass_wider_than_its_scope_may_be_is_unresolved_and_a_regression_beyond_it_stands() -> None:
    wide = judge.judge("e2e", "p20", [10.0, 14.0, 12.0], [12.5], asked=0.15)
    assert wide.threshold > 0.25
    capped = gating.capped(wide, "e2e", None)
    assert capped.kind == "inconclusive" and gating.is_unresolved(capped) and capped.detail["resolve"] == 0.25
    # A tolerance asked for by name must be resolved to twice itself, where that is wider than the scope's limit.
    assert gating.capped(wide, "e2e", 0.15).detail["resolve"] == pytest.approx(0.30)
    failed = judge.judge("e2e", "p20", [10.0, 14.0, 12.0], [1000.0], asked=0.15)
    assert gating.capped(failed, "e2e", None).kind == "regression"
    sharp = judge.judge("device", "median", [1.5, 1.501, 1.499], [1.5], asked=0.01, typical_noise=0.001)
    assert gating.capped(sharp, "device", None) is sharp


def test_strict_fails_every_inconclusive_verdict_but_unresolved_ones_not_asked_for() -> None:
    unresolved = judge_pairs("forward", "p20", [5.0, 6.0, 5.5], [5.1, 5.2, 6.6], 0.025, 0.3, 6, 0.05)
    assert gating.is_unresolved(unresolved)
    lost = judge.Verdict("inconclusive", "device", "median", 1.5, 1.5, 0.0, "not measured")
    assert gating.strict_failures([unresolved, lost], lambda scope: False) == [lost]
    assert gating.strict_failures([unresolved, lost], lambda scope: scope == "forward") == [unresolved, lost]


def test_a_blind_comparison_is_unresolved_and_listed_with_its_reason() -> None:
    from pytest_rfdetr_latency.report import render as report

    seen = judge.judge_memory([1216.0, 1304.0, 1216.0], [1220.0], 0.10, exact=False)
    blind = gating.blind(seen, "NVML counts the other side's process too")
    assert blind.kind == "inconclusive" and gating.is_unresolved(blind)
    assert gating.strict_failures([blind], lambda scope: False) == []
    lines = report.unresolved_lines([{"id": "M-onnx-cuda", "verdicts": {"memory": blind.to_json()}}])
    assert lines == ["not gating on this runner: M-onnx-cuda memory, NVML counts the other side's process too"]
    # A kind given for another reason (a confirmation that failed, say) is no longer unresolved: strict fails it.
    failed = blind.with_kind("inconclusive", "the fresh processes that were to confirm it failed")
    assert not gating.is_unresolved(failed) and gating.strict_failures([failed], lambda scope: False) == [failed]


def test_work_on_the_cpu_carries_the_spread_between_sessions() -> None:
    from pytest_rfdetr_latency.verdict import stored
    from pytest_rfdetr_latency.verdict.scopes import session_noise

    # The H200, 2026-12-01: RFDETRKeypointPreview-onnx-cpu forward recorded at 13:46 (three processes), checked
    # clean at 14:00 in three: +20.3 % against a threshold of 18.9 % from the processes alone, a false alarm.
    recorded = {"statistic": "p20", "value_ms": 221.3,
                "processes": [{"value_ms": v} for v in (219.659, 239.788, 221.312)]}

    def verdict(session: float) -> judge.Verdict:
        found = stored.scope_verdict("forward", "p20", recorded, [261.6, 267.4, 266.3], [None] * 3, 0.10, None,
                                     lambda slope: (0.0462, 6), judge.DECIDE_Z, 3, False, "default", session)
        return gating.capped(found, "forward", None)

    assert verdict(0.0).kind == "regression"
    through = verdict(session_noise("forward", "onnx-cpu", on_cpu=True))
    assert through.kind == "inconclusive" and gating.is_unresolved(through) and through.threshold > 0.3
    assert "9.5% between sessions" in through.reason
    assert through.detail["session_noise"] == 0.095
    assert session_noise("device", "torch-fp32", on_cpu=True) == 0.0
    # What a recording says it can catch carries it too: 9.5 % on the CPU, the pooled 3.45 % were it a GPU's.
    entries = {"M-onnx-cpu": {"backend": "onnx-cpu", "scopes": {"forward": recorded}}}
    on_cpu = gating.detectable(entries, lambda scope: 0.10, 3, lambda case_id: True)["M-onnx-cpu"]["forward"]
    on_gpu = gating.detectable(entries, lambda scope: 0.10, 3)["M-onnx-cpu"]["forward"]
    assert on_cpu > on_gpu > 0.10


def test_gpu_work_carries_the_spread_between_sessions_its_clean_checks_showed() -> None:
    from pytest_rfdetr_latency.verdict import stored
    from pytest_rfdetr_latency.verdict.scopes import SESSION_NOISE_ON_GPU_POOLED, session_noise

    # The H200, 2026-12-02 (session 10): RFDETRKeypointPreview-onnx-cuda iobinding recorded at 10:35 (three
    # processes, host yardsticks as measured), checked clean at 10:39 (the whole default matrix, then two fresh
    # processes of the case alone, all three at the host's slow speed): +17.9 % host-normalized against 13.9 % from
    # the processes alone, a false alarm (c5-s0-check-0.json; the slope as printed, 0.38).
    recorded = {"statistic": "median", "value_ms": 7.42595,
                "processes": [{"value_ms": v, "host_ms": h}
                              for v, h in ((7.69259, 0.2305), (7.21515, 0.2256), (9.07659, 0.3931))]}

    def verdict(session: float) -> judge.Verdict:
        found = stored.scope_verdict("iobinding", "median", recorded, [10.1988, 9.62018, 10.3958],
                                     [0.3458, 0.3308, 0.3283], 0.10, 0.38, lambda slope: (0.034005, 6),
                                     judge.DECIDE_Z, 3, True, "default", session)
        return gating.capped(found, "iobinding", None)

    as_run = verdict(0.0)
    assert as_run.kind == "regression" and abs(as_run.delta - 0.179) < 0.003 and abs(as_run.threshold - 0.139) < 0.003
    through = verdict(session_noise("iobinding", "onnx-cuda", on_cpu=False))
    assert through.kind == "inconclusive" and gating.is_unresolved(through) and through.threshold > as_run.delta
    assert "4.01% between sessions" in through.reason
    # The device scope of PyTorch's FP32 showed none beyond its processes; a backend not measured takes the figures
    # pooled over those that were.
    assert session_noise("device", "torch-fp32", on_cpu=False) == 0.0
    assert session_noise("e2e", "onnx-cuda", on_cpu=False) == 0.0  # a measured backend without a term for a scope
    assert session_noise("iobinding", "torch-fp16", on_cpu=False) == 0.0
    assert session_noise("e2e", "torch-fp16", on_cpu=False) > 0  # session 11 drifted there
    assert session_noise("forward", "torch-bf16", on_cpu=False) == SESSION_NOISE_ON_GPU_POOLED["forward"] > 0
