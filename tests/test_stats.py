from __future__ import annotations

import math
import random

import pytest

from pytest_rfdetr_latency.stats import (
    ScopeStats,
    decide,
    mann_whitney_greater,
    min_p_value,
    quantile,
    relative_uncertainty,
    statistic_of,
    summarize,
    worst,
)


def blocks(center: float, spread: float, count: int = 12, size: int = 10, seed: int = 0) -> list[list[float]]:
    rng = random.Random(seed)
    return [[rng.gauss(center, spread) for _ in range(size)] for _ in range(count)]


def test_quantiles_match_numpy_linear_interpolation() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert quantile(values, 0.5) == 3.0
    assert quantile(values, 0.2) == pytest.approx(1.8)
    assert statistic_of(values, "p20") == pytest.approx(1.8)
    assert statistic_of(values, "min") == 1.0
    with pytest.raises(ValueError, match="unknown statistic"):
        statistic_of(values, "mode")


def test_mann_whitney_exact_values() -> None:
    # Complete separation of 3 vs 3: one ordering in C(6, 3) = 20.
    assert mann_whitney_greater([4, 5, 6], [1, 2, 3]) == pytest.approx(1 / 20)
    assert mann_whitney_greater([1, 2, 3], [4, 5, 6]) == pytest.approx(1.0)
    # Reference value from scipy.stats.mannwhitneyu(x, y, alternative="greater", method="exact").
    x = [1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30]
    y = [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.07, 3.14, 1.28]
    assert mann_whitney_greater(x, y) == pytest.approx(0.06796, abs=1e-5)


def test_mann_whitney_with_ties_uses_the_normal_approximation() -> None:
    p = mann_whitney_greater([2.0] * 10 + [3.0] * 10, [1.0] * 10 + [2.0] * 10)
    assert 0 < p < 0.01


def test_min_p_value_says_when_the_test_is_blind() -> None:
    assert min_p_value(3, 3) == pytest.approx(0.05)
    assert min_p_value(6, 6) < 0.002 < min_p_value(5, 5)


def test_summarize_rejects_non_finite_samples() -> None:
    with pytest.raises(ValueError, match="not finite"):
        summarize([[1.0, math.nan], [1.0, 1.0]], "median")
    with pytest.raises(ValueError, match="not finite"):
        summarize([[1.0, math.inf], [1.0, 1.0]], "median")
    with pytest.raises(ValueError, match="no samples"):
        summarize([], "median")


def test_summary_round_trips_through_json() -> None:
    stats = summarize(blocks(10.0, 0.2), "p20", dropped_blocks=1)
    again = ScopeStats.from_json(stats.to_json())
    assert again.value == pytest.approx(stats.value, rel=1e-5)
    assert len(again.blocks) == 12 and again.dropped_blocks == 1
    assert relative_uncertainty(stats.blocks, stats.value) < 0.01


def test_identical_distributions_pass() -> None:
    base = summarize(blocks(10.0, 0.3, seed=1), "median")
    now = summarize(blocks(10.0, 0.3, seed=2), "median")
    verdict = decide("forward", base, now, threshold=0.03)
    assert verdict.kind == "pass"


def test_clear_slowdown_past_threshold_is_a_regression() -> None:
    base = summarize(blocks(10.0, 0.1, seed=1), "median")
    now = summarize(blocks(10.5, 0.1, seed=2), "median")
    verdict = decide("device", base, now, threshold=0.01)
    assert verdict.kind == "regression"
    assert verdict.delta == pytest.approx(0.05, abs=0.01)
    text = verdict.describe()
    assert "device median: baseline 9.99" in text and "now 10.4" in text and "threshold 1%" in text


def test_slowdown_within_threshold_passes() -> None:
    base = summarize(blocks(10.0, 0.1, seed=1), "median")
    now = summarize(blocks(10.2, 0.1, seed=2), "median")
    assert decide("forward", base, now, threshold=0.05).kind == "pass"


def test_speed_up_past_threshold_is_an_improvement() -> None:
    base = summarize(blocks(10.0, 0.1, seed=1), "median")
    now = summarize(blocks(8.0, 0.1, seed=2), "median")
    assert decide("e2e", base, now, threshold=0.1).kind == "improvement"


def test_unconfirmed_slowdown_is_inconclusive() -> None:
    # Two blocks a side cannot reach p < 0.002, whatever the effect.
    base = summarize(blocks(10.0, 0.1, count=2), "median")
    now = summarize(blocks(12.0, 0.1, count=2, seed=3), "median")
    verdict = decide("forward", base, now, threshold=0.05)
    assert verdict.kind == "inconclusive"
    assert any("cannot reach" in note for note in verdict.notes)


def test_statistic_mismatch_asks_for_a_new_baseline() -> None:
    base = summarize(blocks(10.0, 0.1), "median")
    now = summarize(blocks(10.0, 0.1), "p20")
    with pytest.raises(ValueError, match="record the baseline again"):
        decide("e2e", base, now, threshold=0.1)


def test_worst_orders_verdicts() -> None:
    base = summarize(blocks(10.0, 0.1, seed=1), "median")
    fine = decide("device", base, summarize(blocks(10.0, 0.1, seed=2), "median"), 0.01)
    bad = decide("forward", base, summarize(blocks(12.0, 0.1, seed=2), "median"), 0.01)
    assert worst([fine, bad]) == "regression"
    assert worst([fine]) == "pass"
