"""What a run history says, per series: its persistent shifts (changepoints.py), the commits and environment changes
on either side of each, and whether the newest runs sit on a new, unaccepted shift of a regression's sign."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from pytest_rfdetr_latency.measure.environment import drift
from pytest_rfdetr_latency.store.history import Point, Series
from pytest_rfdetr_latency.trends.changepoints import MAX_PVALUE, ChangePoint, change_points, run_noise

RECENT = 5  # a shift is new while it began in one of its device's last RECENT runs
MIN_CHANGE = 0.007  # --fail-on-change fails on a new slowdown of at least this much (benchmarks/trend_alarms.py)
NOISE_MULTIPLE = 3.0  # ... and of at least this many times the series' own run-to-run noise


@dataclass(frozen=True)
class Shift:
    point: ChangePoint
    before: Point  # the last run at the old level
    after: Point  # the first run at the new level
    changed: tuple[str, ...]  # environment fields that differ between the two runs: "torch: 2.10.0 -> 2.11.0"
    accepted_by: Point | None  # the first run judged against (or recording) a baseline recorded since the shift

    def describe(self, series: Series) -> str:
        cp = self.point
        text = (f"run {cp.index + 1} of {len(series.points)} ({self.after.time}): {cp.change * 100:+.2f}% "
                f"({cp.before:.4g} -> {cp.after:.4g} {series.unit}, p={cp.pvalue:.2g}), between "
                f"{_short(self.before.commit)} and {_short(self.after.commit)}")
        if self.changed:
            text += "; changed: " + "; ".join(self.changed)
        if self.after.injected_pct:
            text += f"; that run was a self-test with --rfdetr-inject-slowdown={self.after.injected_pct:g}%"
        if self.accepted_by is not None:
            text += f"; accepted: the baseline was recorded again by {self.accepted_by.time}"
        return text


@dataclass(frozen=True)
class Trend:
    series: Series
    shifts: tuple[Shift, ...]
    new_regression: Shift | None  # a slowdown among the last RECENT runs, not accepted, of at least min_change
    min_change: float = MIN_CHANGE  # the least slowdown that counts in this series (least_change)

    @property
    def newest(self) -> str:
        return self.series.points[-1].time


def _short(commit: str | None) -> str:
    return commit[:10] if commit else "(no commit)"


def _accepted(points: Sequence[Point], index: int) -> Point | None:
    """The first run that shows a baseline recorded since the shift at ``index``: a recording, or a check judged
    against another baseline figure than the first run at the new level was (recorded by the refresh workflow,
    which appends no history of its own)."""
    first = points[index]
    for point in points[index:]:
        if point.kind == "record" or (point.baseline is not None and first.baseline is not None
                                      and point.baseline != first.baseline):
            return point
    return None


def analyse(
    series: Series, *, recent_runs: Sequence[str] | None = None, min_change: float = MIN_CHANGE,
    max_pvalue: float = MAX_PVALUE,
) -> Trend:
    """``recent_runs``: the ids of the device's last runs, where a new shift must begin (default: the series' own
    last RECENT points)."""
    points = series.points
    # Self-test runs (--rfdetr-inject-slowdown) slowed themselves on purpose: they are shown, never detected on.
    kept = [i for i, p in enumerate(points) if not p.injected_pct]
    values = [points[i].value for i in kept]
    found = [replace(cp, index=kept[cp.index]) for cp in change_points(values, max_pvalue=max_pvalue)]
    least = least_change(series, values, min_change)
    shifts = []
    for cp in found:
        before, after = points[max(i for i in kept if i < cp.index)], points[cp.index]  # the runs either side
        shifts.append(Shift(cp, before, after, tuple(drift(before.fingerprint, after.fingerprint)),
                            _accepted(points, cp.index)))
    recent = set(recent_runs if recent_runs is not None else (p.run for p in points[-RECENT:]))
    new = None
    if shifts:
        last = shifts[-1]
        if last.after.run in recent and last.point.change >= least and last.accepted_by is None:
            new = last
    return Trend(series, tuple(shifts), new, least)


def least_change(series: Series, values: Sequence[float], floor: float = MIN_CHANGE) -> float:
    """The least slowdown that counts in ``series``: ``floor``, NOISE_MULTIPLE times its own run-to-run noise, and for
    memory the verdict's allocator slack (a peak that moves a few MiB is no change the gate would fail)."""
    from pytest_rfdetr_latency.verdict.judge import MEMORY_SLACK_MIB, median

    least = max(floor, NOISE_MULTIPLE * run_noise(values))
    if series.scope == "memory" and values:
        least = max(least, MEMORY_SLACK_MIB / median(values))
    return least


def device_runs(all_series: Sequence[Series]) -> dict[str, list[str]]:
    """Each device's run ids, oldest first: a series that stopped (its case renamed, its workload changed) does not
    keep an old shift "new" while the device goes on running."""
    seen: dict[str, dict[str, int]] = {}
    for series in all_series:
        runs = seen.setdefault(series.device, {})
        for point in series.points:
            runs[point.run] = min(runs.get(point.run, point.seq), point.seq)
    return {device: sorted(runs, key=runs.__getitem__) for device, runs in seen.items()}


def analyse_all(
    all_series: Sequence[Series], *, recent: int = RECENT, min_change: float = MIN_CHANGE,
    max_pvalue: float = MAX_PVALUE,
) -> list[Trend]:
    """Every series' trend: those ending on a new slowdown first, then the most recently run. A shift is new when it
    begins in one of its device's last ``recent`` runs."""
    runs = device_runs(all_series)
    trends = [analyse(s, recent_runs=runs[s.device][-recent:], min_change=min_change, max_pvalue=max_pvalue)
              for s in all_series]
    trends.sort(key=lambda t: t.newest, reverse=True)
    trends.sort(key=lambda t: t.new_regression is None)
    return trends
