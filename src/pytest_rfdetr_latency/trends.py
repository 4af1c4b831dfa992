"""What a run history says, per series: its persistent shifts (changepoints.py), the commits and environment changes
on either side of each, and whether the newest runs sit on a new, unaccepted shift of a regression's sign."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pytest_rfdetr_latency.changepoints import MAX_PVALUE, ChangePoint, change_points
from pytest_rfdetr_latency.environment import drift
from pytest_rfdetr_latency.history import Point, Series

RECENT = 5  # a shift is new while it is among a series' last RECENT runs
MIN_CHANGE = 0.01  # --fail-on-change fails on a new slowdown of at least this much


@dataclass(frozen=True)
class Shift:
    point: ChangePoint
    before: Point  # the last run at the old level
    after: Point  # the first run at the new level
    changed: tuple[str, ...]  # environment fields that differ between the two runs: "torch: 2.10.0 -> 2.11.0"
    accepted_by: Point | None  # a recording of the baseline at or after the shift

    def describe(self, series: Series) -> str:
        cp = self.point
        text = (f"run {cp.index + 1} of {len(series.points)} ({self.after.time}): {cp.change * 100:+.2f}% "
                f"({cp.before:.4g} -> {cp.after:.4g} {series.unit}, p={cp.pvalue:.2g}), between "
                f"{_short(self.before.commit)} and {_short(self.after.commit)}")
        if self.changed:
            text += "; changed: " + "; ".join(self.changed)
        if self.accepted_by is not None:
            text += f"; accepted: the baseline was recorded again at {self.accepted_by.time}"
        return text


@dataclass(frozen=True)
class Trend:
    series: Series
    shifts: tuple[Shift, ...]
    new_regression: Shift | None  # a slowdown among the last RECENT runs, not accepted, of at least MIN_CHANGE

    @property
    def newest(self) -> str:
        return self.series.points[-1].time


def _short(commit: str | None) -> str:
    return commit[:10] if commit else "(no commit)"


def analyse(
    series: Series, *, recent: int = RECENT, min_change: float = MIN_CHANGE, max_pvalue: float = MAX_PVALUE
) -> Trend:
    points = series.points
    found = change_points([p.value for p in points], max_pvalue=max_pvalue)
    shifts = []
    for cp in found:
        before, after = points[cp.index - 1], points[cp.index]
        accepted = next((p for p in points[cp.index:] if p.kind == "record"), None)
        shifts.append(Shift(cp, before, after, tuple(drift(before.fingerprint, after.fingerprint)), accepted))
    new = None
    if shifts:
        last = shifts[-1]
        if (last.point.index >= len(points) - recent and last.point.change >= min_change
                and last.accepted_by is None):
            new = last
    return Trend(series, tuple(shifts), new)


def analyse_all(
    all_series: Sequence[Series], *, recent: int = RECENT, min_change: float = MIN_CHANGE,
    max_pvalue: float = MAX_PVALUE,
) -> list[Trend]:
    """Every series' trend: those ending on a new slowdown first, then the most recently run."""
    trends = [analyse(s, recent=recent, min_change=min_change, max_pvalue=max_pvalue) for s in all_series]
    trends.sort(key=lambda t: t.newest, reverse=True)
    trends.sort(key=lambda t: t.new_regression is None)
    return trends
