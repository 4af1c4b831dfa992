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
    clean = [series([10.0 * (1 + rng.gauss(0, 0.02)) for _ in range(30)], scope="e2e") for _ in range(60)]
    stepped = series([10.0 * (1 + rng.gauss(0, 0.002)) for _ in range(20)] + [11.0] * 5, scope="e2e")
    alone = sum(trends.analyse(s).open_slowdown is not None for s in clean)
    together = trends.analyse_all([*clean, stepped])
    assert alone >= 1  # each series alone opens some of its noise as slowdowns ...
    assert [t.series for t in together if t.open_slowdown] == [stepped]  # ... which the control across them drops


def test_a_second_small_step_does_not_close_the_first_slowdown() -> None:
    rng = random.Random(5)
    noise = [1 + rng.gauss(0, 0.0012) for _ in range(40)]
    values = [1.5 * n for n in noise[:15]] + [1.515 * n for n in noise[15:25]] + [1.53 * n for n in noise[25:31]]
    trend = trends.analyse(series(values))
    assert trend.open_slowdown is not None and trend.open_slowdown.point.index == 15
    assert 0.017 < trend.standing < 0.023 and trend.age == 16


def test_an_accept_line_accepts_the_slowdown_it_names_and_none_after_it() -> None:
    flat = [5.0, 5.01, 4.99, 5.0, 5.01, 4.99, 5.0, 5.0, 5.01, 4.99]
    values = [*flat, *(6.0 * v / 5 for v in flat), *(7.2 * v / 5 for v in flat)]
    plain = series(values)
    first, second = (s.point.index for s in trends.analyse(plain).shifts)
    assert (first, second) == (10, 20)

    def accepted(names: int) -> Series:
        line = Point(run="accept-1", time="2026-12-02T00:00:00", kind="accept", commit=None, value=values[-1],
                     processes=(), verdict="accepted", baseline=None, threshold=None, fingerprint={},
                     seq=len(values), note="expected", accepts=f"r{names}")
        return Series(plain.device, plain.case, plain.scope, plain.statistic, plain.unit, plain.workload,
                      plain.points, accepts=(line,))

    assert trends.analyse(accepted(20)).open_slowdown is None  # the newest and every shift before it
    only_first = trends.analyse(accepted(10))
    assert only_first.open_slowdown is not None and only_first.open_slowdown.point.index == 20


def test_a_series_that_stopped_running_neither_alarms_nor_counts() -> None:
    stopped = series([5.0, 5.01, 4.99, 5.0, 5.01, 4.99, 5.0, 5.0, 6.0, 6.01, 5.99, 6.0, 6.0])
    assert trends.analyse(stopped).open_slowdown is not None
    later = [Point(run=f"n{i}", time=f"2026-12-02T00:{i:02d}:00", kind="check", commit=None, value=3.0,
                   processes=(3.0,), verdict="pass", baseline=None, threshold=None, fingerprint={}, seq=100 + i)
             for i in range(trends.STALE_AFTER)]
    running = Series("NVIDIA H200", "RFDETRNano-torch-fp16", "device", "median", "ms", "w", tuple(later))
    assert all(t.open_slowdown is None for t in trends.analyse_all([stopped, running]))
