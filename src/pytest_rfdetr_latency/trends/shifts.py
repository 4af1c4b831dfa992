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

DRAWS = 20_000  # the permutation test's random splits, at least (analyse_all asks more for many series)
STALE_AFTER = 20  # a series that did not run in its device's last this many runs neither counts nor alarms
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
        """Runs of this series since the open slowdown began, its first included and self-test runs not counted (0
        when none is open)."""
        if self.open_slowdown is None:
            return 0
        return sum(1 for p in self.series.points[self.open_slowdown.point.index:] if not p.injected_pct)


def _short(commit: str | None) -> str:
    return commit[:10] if commit else "(no commit)"


def _accepted(series: Series, index: int) -> Point | None:
    """The first run that shows the shift at ``index`` accepted: a recording, a check judged against another baseline
    figure than the first run at the new level was (recorded by the refresh workflow, which appends no history of
    its own), or an accept line (``rfdetr-latency accept``) written after that run that names it or a later one."""
    points = series.points
    first = points[index]
    found = [point for point in points[index:] if point.kind == "record" or (
        point.baseline is not None and first.baseline is not None and point.baseline != first.baseline)]
    seqs = {point.run: point.seq for point in points}
    # An accept line accepts the slowdown it names (the run it began at) and every shift before it, no later one.
    found += [line for line in series.accepts
              if line.seq > first.seq and first.seq <= seqs.get(line.accepts or "", line.seq)]
    return min(found, key=lambda point: point.seq, default=None)


def analyse(
    series: Series, *, min_change: float = MIN_CHANGE, max_pvalue: float = MAX_PVALUE, draws: int = DRAWS,
) -> Trend:
    """``series``' persistent shifts and its open slowdown, if any: an unaccepted shift of a slowdown's sign whose
    rise still stands (the newest level at least ``least_change`` above the level before it), however many runs ago
    it began. Slowdowns are looked for among the change points that Welch's test keeps at SCREEN_PVALUE (a few noisy
    runs at the new level can leave a real shift above ``max_pvalue`` for a while), each tested by the permutation
    test, and the surest is the open one (its p-value times the number tried); the shifts shown are those at
    ``max_pvalue``, and the open one."""
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
    if not shifts:
        return Trend(series, (), None, least)
    starts = [0, *(cp.index for cp in screened), len(values)]  # each segment's first run among the kept values
    newest = shifts[-1].point.after
    accepted = max((n for n, s in enumerate(shifts) if s.accepted_by is not None), default=-1)
    tried = [n for n in range(accepted + 1, len(shifts)) if shifts[n].point.change > 0
             and min(shifts[n].point.change, newest / shifts[n].point.before - 1.0) >= least]
    best: tuple[float, int] | None = None
    for n in tried:
        # The runs before it reach back to the last shift shown (one Welch's test is sure of) that is not tried
        # itself, never past what was accepted: a noisy split among clean runs would leave too few to test against,
        # and an earlier slowdown still open belongs to the runs since, not before.
        back = max((m for m in range(accepted + 1, n) if m not in tried and shifts[m].point.pvalue <= max_pvalue),
                   default=accepted)
        pvalue = permutation_pvalue(values[starts[back + 1]:starts[n + 1]], values[starts[n + 1]:], draws)
        best = min(best or (pvalue, n), (pvalue, n))
    opened = shifts[best[1]] if best else None
    shown = tuple(s for s in shifts if s.point.pvalue <= max_pvalue or s is opened)
    if best is None or opened is None:
        return Trend(series, shown, None, least)
    return Trend(series, shown, opened, least, newest / opened.point.before - 1.0,
                 min(1.0, best[0] * len(tried)))


def permutation_pvalue(before: Sequence[float], since: Sequence[float], draws: int = DRAWS) -> float:
    """One-sided permutation test: is the mean log figure of the runs ``since`` a shift higher than an equally many
    runs drawn from all of them would be? Exact for a split fixed in advance whatever the noise's shape (heavy tails,
    ties, exact figures), as long as the runs are exchangeable without a change; here the split is the change point
    found in the same runs, which makes it optimistic, so what it costs in false alarms is measured
    (benchmarks/trend_alarms.py). Every split is enumerated where they are fewer than ``draws``, ``draws`` random
    ones (a fixed seed: the same history gives the same answer) otherwise."""
    import numpy as np

    if not before or not since:
        return 1.0
    x = np.log(np.asarray([*before, *since], dtype=float))
    n, k = len(x), len(since)
    observed = float(x[-k:].sum()) - 1e-12 * max(1.0, float(np.abs(x).max()))  # rounding: equal sums count as equal
    if math.comb(n, k) < draws:
        splits = _every_split(n, k)
        return int(np.count_nonzero(x[splits].sum(axis=1) >= observed)) / len(splits)
    rng = np.random.default_rng(20261201)
    count, chunk = 0, max(1, 2_000_000 // n)  # rows of n random keys at a time: memory bounded whatever the history
    for start in range(0, draws, chunk):
        rows = min(chunk, draws - start)
        picked = np.argpartition(rng.random((rows, n)), k - 1, axis=1)[:, :k] if k < n else np.arange(n)[None, :]
        count += int(np.count_nonzero(x[picked].sum(axis=1) >= observed))
    return (count + 1) / (draws + 1)


@functools.lru_cache(maxsize=16)
def _every_split(n: int, k: int) -> Any:
    """Every choice of ``k`` of ``n`` runs (fewer than DRAWS-many rows, so the cache stays small)."""
    import numpy as np

    return np.asarray(list(itertools.combinations(range(n), k)), dtype=np.intp)


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
    Benjamini-Hochberg at ``false_discovery`` keeps it among the series that still run (a history of 45 series tests
    45 hypotheses: each alone at ``false_discovery`` would fail a clean push far more often than that). A series
    that did not run in its device's last STALE_AFTER runs (a renamed case, another workload) neither counts nor
    alarms."""
    active = _still_running(all_series)
    count = max(1, sum(active))
    draws = max(DRAWS, math.ceil(20 * count / false_discovery))  # the permutation test's floor well under q / count
    trends = [analyse(s, min_change=min_change, max_pvalue=max_pvalue, draws=draws) if running
              else _closed(analyse(s, min_change=min_change, max_pvalue=max_pvalue), max_pvalue)
              for s, running in zip(all_series, active)]
    candidates = sorted((t.pvalue, i) for i, t in enumerate(trends) if t.open_slowdown)
    kept = 0
    for rank, (pvalue, _) in enumerate(candidates, start=1):
        if pvalue <= false_discovery * rank / count:
            kept = rank
    dropped = {i for _, i in candidates[kept:]}
    trends = [_closed(t, max_pvalue) if i in dropped else t for i, t in enumerate(trends)]
    trends.sort(key=lambda t: t.newest, reverse=True)
    trends.sort(key=lambda t: t.open_slowdown is None)
    return trends


def _still_running(all_series: Sequence[Series]) -> list[bool]:
    """Whether each series ran in one of its device's last STALE_AFTER runs."""
    seen: dict[str, dict[str, int]] = {}
    for series in all_series:
        runs = seen.setdefault(series.device, {})
        for point in series.points:
            runs[point.run] = min(runs.get(point.run, point.seq), point.seq)
    recent = {device: set(sorted(runs, key=runs.__getitem__)[-STALE_AFTER:]) for device, runs in seen.items()}
    return [bool(s.points) and s.points[-1].run in recent[s.device] for s in all_series]


def _closed(trend: Trend, max_pvalue: float) -> Trend:
    """``trend`` with its slowdown not open after all, and not shown where only the screen had kept it."""
    shifts = tuple(s for s in trend.shifts if s is not trend.open_slowdown or s.point.pvalue <= max_pvalue)
    return replace(trend, shifts=shifts, open_slowdown=None, standing=0.0, pvalue=1.0)


def markdown(trends: Sequence[Trend]) -> str:
    """The open slowdowns of a history, with their age, as Markdown: for a job summary and the pull-request
    comment, beside the gate's own table."""
    opened = [t for t in trends if t.open_slowdown is not None]
    devices = sorted({t.series.device for t in trends})
    lines = [f"### Open slowdowns in the run history{' of ' + ', '.join(devices) if devices else ''}", ""]
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
