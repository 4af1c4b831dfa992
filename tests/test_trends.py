"""Trend alarms (trends/shifts.py) on made-up series: self-test runs kept out, a minimum change per series."""

from __future__ import annotations

import random

from pytest_rfdetr_latency.store.history import Point, Series
from pytest_rfdetr_latency.trends import shifts as trends


def series(values: list[float], *, scope: str = "device", injected: set[int] | None = None) -> Series:
    points = tuple(Point(run=f"r{i}", time=f"2026-12-01T00:{i:02d}:00", kind="check", commit=f"{i:040d}",
                         value=v, processes=(v,), verdict="pass", baseline=None, threshold=None, fingerprint={},
                         injected_pct=50.0 if i in (injected or set()) else None, seq=i)
                   for i, v in enumerate(values))
    return Series("NVIDIA H200", "RFDETRMedium-torch-fp16", scope, "median", "MiB" if scope == "memory" else "ms",
                  "w", points)


def test_self_test_runs_are_kept_out_of_detection_and_a_real_step_keeps_its_place() -> None:
    flat = [5.0, 5.01, 4.99, 5.0, 5.01, 4.99, 5.0]
    tested = series([*flat, 7.5, 7.5, 7.5], injected={7, 8, 9})
    assert trends.analyse(tested).shifts == ()
    # Self-tests between the old and the new level: the step is found at the first real run of the new level.
    stepped = series([*flat, 9.0, 9.0, 5.5, 5.51, 5.49], injected={7, 8})
    trend = trends.analyse(stepped)
    assert [s.point.index for s in trend.shifts] == [9] and trend.shifts[0].before.run == "r6"
    assert trend.open_slowdown is trend.shifts[0]


def test_an_exact_memory_series_moving_inside_the_slack_is_no_new_slowdown() -> None:
    # NVML peaks repeat to the MiB; a move of 4 MiB (+1.2 %) is inside the verdict's 16 MiB slack.
    moved = series([340.0] * 8 + [344.0] * 4, scope="memory")
    trend = trends.analyse(moved)
    assert trend.shifts and trend.shifts[-1].point.change > 0.01  # certain, and above the 1 % floor
    assert trend.open_slowdown is None and trend.min_change > 0.04
    grown = trends.analyse(series([340.0] * 8 + [400.0] * 4, scope="memory"))
    assert grown.open_slowdown is not None


def test_the_least_change_is_three_times_the_series_own_noise() -> None:
    rng = random.Random(7)
    noisy = [10.0 * (1 + rng.gauss(0, 0.05)) for _ in range(30)]
    least = trends.least_change(series(noisy, scope="e2e"), noisy)
    assert 0.08 < least < 0.3  # about 3 x 5 %, far above the 1 % floor
    calm = [1.5 * (1 + rng.gauss(0, 0.001)) for _ in range(30)]
    assert trends.least_change(series(calm), calm) == trends.MIN_CHANGE


def test_a_slowdown_undone_by_a_later_speedup_is_not_open_and_one_still_standing_is() -> None:
    flat = [5.0, 5.01, 4.99, 5.0, 5.01, 4.99, 5.0, 5.0]
    undone = trends.analyse(series([*flat, 6.0, 6.01, 5.99, 6.0, *flat]))
    assert len(undone.shifts) == 2 and undone.open_slowdown is None
    partly = trends.analyse(series([*flat, 6.0, 6.01, 5.99, 6.0, 5.8, 5.81, 5.79, 5.8]))
    assert partly.open_slowdown is partly.shifts[0] and 0.15 < partly.standing < 0.17 and partly.age == 8


def test_many_clean_series_are_kept_at_the_false_discovery_rate_but_a_certain_step_is_not() -> None:
    rng = random.Random(11)
    clean = [series([10.0 * (1 + rng.gauss(0, 0.02)) for _ in range(30)], scope="e2e") for _ in range(40)]
    stepped = series([10.0 * (1 + rng.gauss(0, 0.002)) for _ in range(20)] + [11.0] * 4, scope="e2e")
    alone = [trends.analyse(s) for s in clean]
    together = trends.analyse_all([*clean, stepped])
    assert sum(t.open_slowdown is not None for t in together) <= sum(t.open_slowdown is not None for t in alone) + 1
    (found,) = [t for t in together if t.series is stepped]
    assert found.open_slowdown is not None and found is together[0]
