"""What a run history says, per series: its persistent shifts (changepoints.py), the commits and environment changes
on either side of each, and whether the series sits on an open slowdown: a shift of a regression's sign that still
stands and that nobody accepted (a recording, a check against a re-recorded baseline, or ``rfdetr-latency accept``),
however long ago it began. Whether a slowdown is open is decided by a permutation test (one-sided, on the mean log
figure of the runs since the shift against those before it, back to the shift before), valid whatever the shape of
a host's noise, where a t-test on a few runs is not; across the series of a history, open slowdowns are kept at a
false-discovery rate (Benjamini-Hochberg over those p-values), so that many series do not fail a clean push by
chance."""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from pytest_rfdetr_latency.measure.environment import drift
from pytest_rfdetr_latency.store.history import Point, Series
from pytest_rfdetr_latency.trends.changepoints import MAX_PVALUE, ChangePoint, change_points, run_noise

SCREEN_PVALUE = 0.05  # Welch's test that keeps a change point to try as a slowdown (the permutation test decides)
FALSE_DISCOVERY = 0.01  # open slowdowns across a history's series: Benjamini-Hochberg (benchmarks/trend_alarms.py)
MIN_CHANGE = 0.007  # --fail-on-change fails on a new slowdown of at least this much (benchmarks/trend_alarms.py)
NOISE_MULTIPLE = 3.0  # ... and of at least this many times the series' own run-to-run noise


@dataclass(frozen=True)
class Shift:
    point: ChangePoint
    before: Point  # the last run at the old level
    after: Point  # the first run at the new level
    changed: tuple[str, ...]  # environment fields that differ between the two runs: "torch: 2.10.0 -> 2.11.0"
    accepted_by: Point | None  # the first recording, check against a re-recorded baseline, or accept line since

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
            by = self.accepted_by
            text += (f"; accepted by {by.time}: {by.note}" if by.kind == "accept"
                     else f"; accepted: the baseline was recorded again by {by.time}")
        return text


@dataclass(frozen=True)
class Trend:
    series: Series
    shifts: tuple[Shift, ...]
    open_slowdown: Shift | None  # a slowdown that still stands, not accepted, of at least min_change
    min_change: float = MIN_CHANGE  # the least slowdown that counts in this series (least_change)
    standing: float = 0.0  # how far the newest level sits above the level before the open slowdown
    pvalue: float = 1.0  # the open slowdown's permutation test: the runs since it against the runs before it

    @property
    def newest(self) -> str:
        return self.series.points[-1].time

    @property
    def age(self) -> int:
        """Runs of this series at the open slowdown's level, its first included (0 when none is open)."""
        return len(self.series.points) - self.open_slowdown.point.index if self.open_slowdown else 0


def _short(commit: str | None) -> str:
    return commit[:10] if commit else "(no commit)"


def _accepted(series: Series, index: int) -> Point | None:
    """The first run that shows the shift at ``index`` accepted: a recording, a check judged against another baseline
    figure than the first run at the new level was (recorded by the refresh workflow, which appends no history of
    its own), or an accept line (``rfdetr-latency accept``) written after that run."""
    points = series.points
    first = points[index]
    found = [point for point in points[index:] if point.kind == "record" or (
        point.baseline is not None and first.baseline is not None and point.baseline != first.baseline)]
    found += [line for line in series.accepts if line.seq > first.seq]
    return min(found, key=lambda point: point.seq, default=None)


def analyse(
    series: Series, *, min_change: float = MIN_CHANGE, max_pvalue: float = MAX_PVALUE,
) -> Trend:
    """``series``' persistent shifts and its open slowdown, if any: the newest unaccepted shift of a slowdown's sign
    whose rise still stands (the newest level at least ``least_change`` above the level before it), however many
    runs ago it began. Slowdowns are looked for among the change points that Welch's test keeps at SCREEN_PVALUE
    (a few noisy runs at the new level can leave a real shift above ``max_pvalue`` for a while) and decided by the
    permutation test; the shifts shown are those at ``max_pvalue``, and the open slowdown."""
    points = series.points
    # Self-test runs (--rfdetr-inject-slowdown) slowed themselves on purpose: they are shown, never detected on.
    kept = [i for i, p in enumerate(points) if not p.injected_pct]
    values = [points[i].value for i in kept]
    screened = change_points(values, max_pvalue=max(max_pvalue, SCREEN_PVALUE))
    least = least_change(series, values, min_change)
    shifts = []
    for cp in screened:
        index = kept[cp.index]
        before, after = points[max(i for i in kept if i < index)], points[index]  # the runs either side
        shifts.append(Shift(replace(cp, index=index), before, after, tuple(drift(before.fingerprint,
                                                                                 after.fingerprint)),
                            _accepted(series, index)))
    opened: Shift | None = None
    standing, pvalue = 0.0, 1.0
    starts = [0, *(cp.index for cp in screened), len(values)]  # each segment's first run among the kept values
    for n in range(len(shifts) - 1, -1, -1):
        shift = shifts[n]
        if shift.accepted_by is not None:
            break  # what a recording accepted, it accepted for every shift before it too
        standing = shifts[-1].point.after / shift.point.before - 1.0
        if shift.point.change > 0 and shift.point.change >= least and standing >= least:
            opened = shift
            # The runs before it reach back to the last shift shown (one Welch's test is sure of), not to a screened
            # one: a noisy split among clean runs would leave too few to test against.
            since = next((m for m in range(n - 1, -1, -1) if shifts[m].point.pvalue <= max_pvalue), -1)
            pvalue = permutation_pvalue(values[starts[since + 1]:starts[n + 1]], values[starts[n + 1]:])
            break
    shown = tuple(s for s in shifts if s.point.pvalue <= max_pvalue or s is opened)
    return Trend(series, shown, opened, least, standing if opened else 0.0, pvalue)


def permutation_pvalue(before: Sequence[float], since: Sequence[float], draws: int = 20_000) -> float:
    """One-sided permutation test: is the mean log figure of the runs ``since`` a shift higher than an equally many
    runs drawn from all of them would be? Valid whatever the noise's shape (heavy tails, ties, exact figures) as long
    as the runs are exchangeable without a change: every split enumerated where they are few, ``draws`` random ones
    (a fixed seed: the same history gives the same answer) where they are many."""
    import numpy as np

    if not before or not since:
        return 1.0
    x = np.log(np.asarray([*before, *since], dtype=float))
    k = len(since)
    observed = float(x[-k:].sum()) - 1e-12 * max(1.0, float(np.abs(x).max()))  # rounding: equal sums count as equal
    splits = _splits(len(x), k, draws)
    count = int(np.count_nonzero(x[splits].sum(axis=1) >= observed))
    return count / len(splits) if len(splits) < draws else (count + 1) / (len(splits) + 1)


@functools.lru_cache(maxsize=64)
def _splits(n: int, k: int, draws: int) -> Any:
    """Which ``k`` of ``n`` runs each split takes: all of them where there are fewer than ``draws``."""
    import numpy as np

    if math.comb(n, k) < draws:
        return np.asarray(list(itertools.combinations(range(n), k)), dtype=np.intp)
    return np.argsort(np.random.default_rng(20261201).random((draws, n)), axis=1)[:, :k]


def least_change(series: Series, values: Sequence[float], floor: float = MIN_CHANGE) -> float:
    """The least slowdown that counts in ``series``: ``floor``, NOISE_MULTIPLE times its own run-to-run noise, and for
    memory the verdict's allocator slack (a peak that moves a few MiB is no change the gate would fail)."""
    from pytest_rfdetr_latency.verdict.judge import MEMORY_SLACK_MIB, median

    least = max(floor, NOISE_MULTIPLE * run_noise(values))
    if series.scope == "memory" and values:
        least = max(least, MEMORY_SLACK_MIB / median(values))
    return least


def analyse_all(
    all_series: Sequence[Series], *, min_change: float = MIN_CHANGE, max_pvalue: float = MAX_PVALUE,
    false_discovery: float = FALSE_DISCOVERY,
) -> list[Trend]:
    """Every series' trend, open slowdowns first, then the most recently run. An open slowdown is kept only where
    Benjamini-Hochberg at ``false_discovery`` keeps it among the series analysed together (a history of 45 series
    tests 45 hypotheses: each alone at ``false_discovery`` would fail a clean push far more often than that)."""
    trends = [analyse(s, min_change=min_change, max_pvalue=max_pvalue) for s in all_series]
    candidates = sorted((t.pvalue, i) for i, t in enumerate(trends) if t.open_slowdown)
    count = len(trends)
    kept = 0
    for rank, (pvalue, _) in enumerate(candidates, start=1):
        if pvalue <= false_discovery * rank / count:
            kept = rank
    dropped = {i for _, i in candidates[kept:]}
    trends = [_closed(t, max_pvalue) if i in dropped else t for i, t in enumerate(trends)]
    trends.sort(key=lambda t: t.newest, reverse=True)
    trends.sort(key=lambda t: t.open_slowdown is None)
    return trends


def _closed(trend: Trend, max_pvalue: float) -> Trend:
    """``trend`` with its slowdown not open after all, and not shown where only the screen had kept it."""
    shifts = tuple(s for s in trend.shifts if s is not trend.open_slowdown or s.point.pvalue <= max_pvalue)
    return replace(trend, shifts=shifts, open_slowdown=None, standing=0.0, pvalue=1.0)


def markdown(trends: Sequence[Trend]) -> str:
    """The open slowdowns of a history, with their age, as Markdown: for a job summary and the pull-request
    comment, beside the gate's own table."""
    opened = [t for t in trends if t.open_slowdown is not None]
    lines = ["### Open slowdowns in the run history", ""]
    if not opened:
        lines.append(f"None in {len(trends)} series (a slowdown stays open until a recording or "
                     "`rfdetr-latency accept` accepts it).")
        return "\n".join(lines) + "\n"
    lines += [f"{len(opened)} of {len(trends)} series sit on a slowdown nobody accepted; it stays open until a "
              "recording or `rfdetr-latency accept` accepts it.", "",
              "| series | device | now above | since | runs open | commits | environment changed |",
              "|---|---|---|---|---|---|---|"]
    for trend in opened:
        shift = trend.open_slowdown
        assert shift is not None
        lines.append(f"| {trend.series.name} | {trend.series.device} | {trend.standing * 100:+.2f}% | "
                     f"{shift.after.time} | {trend.age} | {_short(shift.before.commit)} → "
                     f"{_short(shift.after.commit)} | {'; '.join(shift.changed) or '-'} |")
    return "\n".join(lines) + "\n"
