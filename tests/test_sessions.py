"""The spread between sessions learned from a runner's own checks (verdict/sessions.py): units on made-up figures,
then the fake (measure/fake.py) recording, checking and recording again with a history."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from pytest_rfdetr_latency.store import history
from pytest_rfdetr_latency.verdict import sessions
from pytest_rfdetr_latency.verdict.judge import judge, median_variance
from pytest_rfdetr_latency.verdict.scopes import SESSION_NOISE_ON_CPU, session_noise
from pytest_rfdetr_latency.verdict.stored import scope_verdict


def test_the_spread_is_what_makes_the_standardized_offsets_of_unit_variance() -> None:
    variance = 1e-4
    wide = [(2 * math.sqrt(variance), variance), (-2 * math.sqrt(variance), variance)] * 5  # offsets of 2 sigma
    assert sessions.unit_spread(wide) == pytest.approx(math.sqrt(3 * variance), rel=1e-6)  # 4v / (v + 3v) = 1
    assert sessions.unit_spread([(0.5 * math.sqrt(variance), variance)] * 10) == 0.0  # narrower than the processes
    assert sessions.unit_spread([]) == 0.0
    assert sessions.unit_spread([(3.0, 1e-12)]) == pytest.approx(3.0, rel=1e-6)  # past the first bracket of 1
    # Robust: nineteen clean comparisons one standard error away and one real +10 % change among them, counted at
    # most CAP standard errors away: it widens the spread, but no longer sets it alone.
    mixed = [(math.sqrt(variance) * (-1) ** i, variance) for i in range(19)] + [(math.log1p(0.10), variance)]
    capped = (19 + sessions.CAP ** 2) / 20  # the mean standardized square at s = 0, in units of the variance
    assert sessions.unit_spread(mixed, robust=True) == pytest.approx(math.sqrt((capped - 1) * variance), rel=1e-6)
    whole = (19 * variance + math.log1p(0.10) ** 2) / 20
    assert sessions.unit_spread(mixed) == pytest.approx(math.sqrt(whole - variance), rel=1e-6)


def test_a_stored_comparison_is_standardized_by_the_variance_its_threshold_set_aside() -> None:
    made = judge("e2e", "p20", [10.0, 10.1, 9.9], [10.5], asked=0.1, typical_noise=0.02, planned=3).to_json()
    change, variance = sessions.standardized(made) or (0.0, 0.0)
    assert change == pytest.approx(math.log1p(made["delta"]))
    noise = max(n for n in (made["detail"]["own_noise"], made["detail"]["typical_noise"]) if n is not None)
    assert variance == pytest.approx(noise ** 2 * (median_variance(3) + median_variance(1)))
    assert sessions.standardized({**made, "detail": {**made["detail"], "paired": True}}) is None  # head to head's
    alone = judge("e2e", "p20", [10.0], [10.5], asked=0.1).to_json()  # one baseline process: no noise stated
    assert sessions.standardized(alone) is None


def _line(run: str, change: float | None, variance: float | None = 1e-4, **changes: Any) -> dict[str, Any]:
    return {"kind": "check", "run": run, "time": f"2026-12-02T10:{run[-2:]}:00+00:00", "backend": "onnx-cuda",
            "scope": "iobinding", "change": change, "process_variance": variance, "case": "RFDETRMedium-onnx-cuda",
            "baseline": 7.0 + int(run[-2:]) % 2, **changes}


def test_what_is_learned_leaves_out_self_tests_recordings_memory_and_lines_without_the_figures() -> None:
    lines = [_line(f"r{i:02d}", 0.02 * (-1) ** i) for i in range(6)]
    lines += [_line("r90", 0.5, injected_pct=10.0), _line("r91", 0.5, kind="record"), _line("r92", 0.5, scope="memory"),
              _line("r93", None), _line("r94", 0.5, variance=None), _line("r95", 0.01, backend="torch-fp16")]
    found = sessions.learned(lines)
    assert set(found) == {("onnx-cuda", "iobinding"), ("torch-fp16", "iobinding")}
    spread = found[("onnx-cuda", "iobinding")]
    assert spread["comparisons"] == 6 and spread["checks"] == 6 and spread["recordings"] == 2
    assert spread["first"] < spread["last"]
    assert spread["value"] == pytest.approx(math.sqrt(0.02 ** 2 - 1e-4), rel=1e-4)  # 2 standard errors: within CAP


def test_a_learned_spread_replaces_the_built_in_one_only_past_the_minimum() -> None:
    spread = {"value": 0.031, "comparisons": sessions.MIN_COMPARISONS, "checks": sessions.MIN_CHECKS,
              "recordings": sessions.MIN_RECORDINGS}
    learned = {"session_spread": spread}
    assert session_noise("e2e", "onnx-cpu", True, learned) == 0.031
    for short in ("comparisons", "checks", "recordings"):  # each kind of evidence counts: one session is not enough
        thin = {"session_spread": {**spread, short: spread[short] - 1}}
        assert session_noise("e2e", "onnx-cpu", True, thin) == SESSION_NOISE_ON_CPU["e2e"]
    assert session_noise("e2e", "onnx-cpu", True) == SESSION_NOISE_ON_CPU["e2e"]
    stored = {"statistic": "p20", "value_ms": 10.0, "processes": [{"value_ms": v} for v in (9.9, 10.0, 10.1)],
              **learned}
    verdict = scope_verdict("e2e", "p20", stored, [10.2], [None], 0.15, None, lambda slope: (None, 0), 3.0, 3, False,
                            "default", session_noise("e2e", "onnx-cpu", True, stored))
    assert f"3.1% between sessions (learned from {sessions.MIN_COMPARISONS} comparisons of this runner's checks)" \
        in verdict.reason


SUITE = """
def test_latency(rfdetr_case):
    rfdetr_case.check()
"""
FAST = "--rfdetr-sampling=quick,min-blocks=4,max-seconds=1,warmup-seconds=0.5"


def test_a_recording_learns_the_spread_from_the_history_and_its_checks_use_it(
    pytester: pytest.Pytester, tmp_path: Path, fake_backend: Any
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    folder, baselines = tmp_path / "history", tmp_path / "baselines"
    args = ("--rfdetr-device=cpu", FAST, "--rfdetr-images=2", "-p", "no:randomly", "--rfdetr-models=RFDETRNano",
            "--rfdetr-backends=onnx-cpu", "--rfdetr-resolutions=320", "--rfdetr-no-parity", "--rfdetr-scopes=e2e",
            f"--rfdetr-cache-dir={tmp_path / 'cache'}", f"--rfdetr-baseline-dir={baselines}",
            f"--rfdetr-history={folder}")
    pytester.runpytest(*args, "--save-baseline", "--rfdetr-save-processes=3").assert_outcomes(passed=1)
    pytester.runpytest(*args, "--rfdetr-latency").assert_outcomes(passed=1)
    (path,) = folder.glob("*.jsonl")
    checked = [line for line in history.read(path) if line["kind"] == "check"]
    assert len(checked) == 1 and checked[0]["process_variance"] > 0 and math.isfinite(checked[0]["change"])
    # Twenty-four more checks, as if run over weeks, half against an earlier recording: each 3 standard errors of the
    # processes away, either way.
    variance = checked[0]["process_variance"]
    more = [{**checked[0], "run": f"synthetic{i:02d}", "change": 3 * math.sqrt(variance) * (-1) ** i,
             "baseline": checked[0]["baseline"] * (1.01 if i % 2 else 1.0)} for i in range(24)]
    history.append(folder, path.stem, more)
    rows = [(line["change"], line["process_variance"]) for line in [*checked, *more]]
    expected = sessions.unit_spread(rows, robust=True)
    recorded = pytester.runpytest(*args, "--save-baseline", "--rfdetr-save-processes=3")
    recorded.assert_outcomes(passed=1)
    recorded.stdout.fnmatch_lines(["history: the spread between sessions learned from this runner's checks, which its "
                                   "checks will use: onnx-cpu e2e * (25 comparisons, 25 checks, 2 recordings)"])
    (file,) = baselines.glob("*.json")
    (entry,) = json.loads(file.read_text())["entries"].values()
    spread = entry["scopes"]["e2e"]["session_spread"]
    assert spread["comparisons"] == 25 and spread["value"] == pytest.approx(expected, rel=1e-5) and expected > 0
    again = pytester.runpytest(*args, "--rfdetr-latency", "--rfdetr-report=report.json")
    (case,) = json.loads((pytester.path / "report.json").read_text())["cases"]
    assert "(learned from 25 comparisons of this runner's checks)" in case["verdicts"]["e2e"]["threshold_reason"], \
        again.stdout.str()
