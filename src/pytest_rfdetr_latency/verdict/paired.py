"""The head-to-head verdict: two sides measured in adjacent pairs of fresh processes, judged on the pairs' log ratios.
Pure functions, no I/O.

The k-th process of each side runs next to the other's k-th (this-other, other-this, ...: headtohead.order), so a
pair's log ratio ln(other / this) cancels whatever drifts over minutes (the host warming up, a neighbour starting);
the balanced order cancels a linear drift in the mean as well. What remains is each process's own offset (where its
threads ran, its memory layout), which no pairing cancels, so the noise of one pair's log ratio is measured, pooled
over every case of the same backend and scope in the run (the same kind of work meets the same host), on the pooled
degrees of freedom. The line a comparison must cross is Student's t at the verdict's tail probability (``DECIDE_Z``)
times the standard error of the mean log ratio: the smallest regression this comparison could detect, stated in
every verdict. A slowdown is a regression when it is beyond that line and beyond the tolerance asked; a comparison
whose line lies beyond what it must resolve (scopes.HEAD_TO_HEAD_RESOLVE, or twice a tolerance asked for, whichever
is larger) is ``inconclusive`` (unresolved), never a pass.

There is no host normalisation and no host excuse head to head: both sides share the host, so a difference of the
host yardstick between them is the change's doing, not the runner's.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pytest_rfdetr_latency.verdict.judge import DECIDE_Z, Kind, Verdict, median, student_quantile
from pytest_rfdetr_latency.verdict.stats import log_spread

# A tolerance asked for is resolved by a comparison whose line is within this factor of it (docs/pr-gate.md).
RESOLVE_FACTOR = 2.0
# A process stands apart when its offset from its side's other processes, over all its launch-bound figures, exceeds
# both this many robust standard deviations of theirs and APART_FLOOR.
APART_SIGMAS = 5.0
APART_FLOOR = 0.05
# Taking turns, a pair whose log ratio lies beyond Student's t at STRAY_ALPHA (two-sided) from the mean of its case's
# other pairs, in the standard deviation of every other pair of the run's cases of that backend and scope (each about
# its own case's mean), and beyond the scope's floor, is left out: at most one pair in four of a case, never leaving
# fewer than three (docs/pr-gate.md, third session). A clean pair is flagged about once in 1/STRAY_ALPHA.
STRAY_ALPHA = 0.001
# A head to head that adds pairs while a comparison cannot resolve what it must (headtohead.grow) stops when the pairs'
# spread turns small, and a spread that happens to be small understates the noise: simulated with clean normal pairs
# (benchmarks/grow_rule_sim.py: 4 pairs growing two at a time to 8, asked 2.5 %, resolve 5 %, pair noise 3-8 %), false
# alarms rose to 0.15-0.23 % a comparison against 0.08-0.15 % with a fixed 4 or 8 pairs. So a run that may grow decides
# to stop, and judges, at half the verdict's tail probability, and grow adds pairs once, straight to its most: a
# comparison is judged after one of two numbers of pairs, and Bonferroni over the two holds whatever the stopping rule
# (0.08-0.10 % in the same simulation).
GROWING_Z = 3.2051549205989334  # norm.isf(norm.sf(DECIDE_Z) / 2); tests/test_pr_gate.py holds it to that
DRAW_K = 3.0  # a pair left out enters the pooled noise this many standard deviations out, not at its own distance
STRAY_FLOOR = {"device": 0.02}  # other scopes: APART_FLOOR


# Taking turns one call a block, a pair's log ratio is taken call by call when both sides took at least this many calls.
MIN_CALLS = 20


def call_ratio(this: Sequence[float], other: Sequence[float]) -> float | None:
    """One pair's log ratio, call by call: the median of ln(other_i / this_i) over the calls both processes took,
    each in the order taken, the i-th of one side against the i-th of the other. Taking turns one call a block, those
    two calls ran a turn apart and met the same moment of the host, which a ratio of the two processes' figures
    does not use (docs/pr-gate.md, seventh session: the pair noise of forward and e2e about halved). None with fewer
    than MIN_CALLS calls a side."""
    logs = [math.log(b / a) for a, b in zip(this, other) if a > 0 and b > 0]
    return median(logs) if len(logs) >= MIN_CALLS else None


def log_ratios(this: Sequence[float], other: Sequence[float]) -> list[float]:
    """ln(other_k / this_k) of each pair: the k-th process of each side (a process missing on one side: no pair)."""
    return [math.log(b / a) for a, b in zip(this, other) if a > 0 and b > 0]


def pooled_noise(groups: Iterable[Sequence[float]]) -> tuple[float | None, int]:
    """The standard deviation of one pair's log ratio, pooled over cases (each group one case's log ratios, centred
    on its own mean, so a real change of a case is not noise), and its degrees of freedom."""
    return log_spread([[math.exp(d) for d in group] for group in groups])


def line(noise: float | None, freedom: int, pairs: int, z: float = DECIDE_Z) -> float | None:
    """The smallest slowdown (a fraction) whose mean log ratio over ``pairs`` pairs is significant; None where the
    noise is unknown."""
    if noise is None or freedom < 1 or pairs < 1:
        return None
    return math.exp(student_quantile(z, freedom) * noise / math.sqrt(pairs)) - 1.0


def judge_pairs(
    scope: str,
    statistic: str,
    this: Sequence[float],
    other: Sequence[float],
    asked: float,
    noise: float | None,
    freedom: int,
    resolve: float,
    z: float = DECIDE_Z,
    notes: tuple[str, ...] = (),
    source: str = "asked",
    ratios: Sequence[float] | None = None,
    by_calls: bool = False,
) -> Verdict:
    """The other side's processes against this side's, pair by pair. ``baseline`` is the median of this side's
    figures and ``current`` that times the mean pair ratio, so ``delta`` is the paired estimate of the change.
    ``resolve``: the coarsest line that still gates (a fraction); ``source``: "asked" or "default", as the reason
    names the tolerance; ``ratios``: the pairs' log ratios where the caller took them (``by_calls``: every one call by
    call, call_ratio, which estimates the change of the median call rather than of the figures' statistic), else
    those of the figures."""
    ratios = list(ratios) if ratios is not None else log_ratios(this, other)
    if not ratios:
        raise ValueError(f"{scope}: a paired verdict needs at least one pair of processes")
    mean = sum(ratios) / len(ratios)
    reference = median(this)
    detectable = line(noise, freedom, len(ratios), z)
    threshold = asked if detectable is None else max(asked, detectable)
    kind: Kind = "pass"
    reasons: list[str] = []
    if detectable is None:
        kind = "inconclusive"
        reasons.append("the noise between pairs is unknown (one pair, and no other case of this backend and scope "
                       "to pool with): run more processes per side")
    elif mean > math.log1p(threshold):
        kind = "regression"
    elif mean < -math.log1p(threshold):
        kind = "improvement"
    elif detectable > resolve:
        kind = "inconclusive"
        reasons.append(f"unresolved: this comparison can detect {_pct(detectable)} and no less, coarser than the "
                       f"{_pct(resolve)} it must resolve; more processes per side, or a quieter runner, would "
                       "resolve it")
    reason = _reason(asked, detectable, noise, freedom, len(ratios), z, source, by_calls)
    detail: dict[str, Any] = {
        "asked": asked,
        "resolve": resolve,
        "detectable": None if detectable is None else round(detectable, 6),
        "pair_noise": None if noise is None else round(noise, 6),
        "freedom": freedom,
        "pairs": len(ratios),
        "log_ratios": [round(d, 6) for d in ratios],
        "z": z,
        "paired": True,
        "by_calls": by_calls,
        "unresolved": kind == "inconclusive" and detectable is not None and detectable > resolve,
    }
    return Verdict(kind, scope, statistic, reference, reference * math.exp(mean), threshold, reason, tuple(this),
                   tuple(other), notes=(*notes, *reasons), detail=detail)


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.3g}%"


def _reason(asked: float, detectable: float | None, noise: float | None, freedom: int, pairs: int, z: float,
            source: str, by_calls: bool = False) -> str:
    if detectable is None or noise is None:
        return f"{_pct(asked)}: {source}; noise between pairs unknown"
    said = (f"{pairs} pairs{', call by call' if by_calls else ''}, noise of a pair {_pct(noise)} pooled on {freedom} "
            f"degrees of freedom, detectable {_pct(detectable)}")
    if detectable > asked:
        return f"{_pct(detectable)}: the smallest detectable ({said}); {source} {_pct(asked)}"
    return f"{_pct(asked)}: {source} ({said})"


def strays(groups: Sequence[Sequence[float]], scope: str) -> list[list[tuple[int, str, float]]]:
    """Per case (each group one case's log ratios, in pair order), the pairs that stand apart, with why. Each pair is
    judged against the others: its distance from its case's other pairs' mean, over the pooled standard deviation of
    every other pair (its own case's others and every other case's pairs) times sqrt(1 + 1/others), on those pairs'
    degrees of freedom. Each is given as (index, why, its ratio drawn in to DRAW_K standard deviations): the noise is
    pooled with it drawn in, not without it, so that leaving the farthest pair out does not narrow the line as much
    (benchmarks/stray_rule_sim.py: false alarms 0.185-0.215 % per comparison against 0.145-0.15 % with no pair left
    out, at a pair noise of 3-8 %; drawn in to the line itself the rule gains nothing on the H200's runs)."""
    floor = math.log1p(STRAY_FLOOR.get(scope, APART_FLOOR))
    found: list[list[tuple[int, str, float]]] = []
    for at, group in enumerate(groups):
        allowed = min(len(group) // 4, len(group) - 3)
        apart_here = []
        for index, ratio in enumerate(group if allowed > 0 else ()):
            others = [r for i, r in enumerate(group) if i != index]
            rest = [others, *(g for j, g in enumerate(groups) if j != at)]
            squares = sum(sum((r - sum(g) / len(g)) ** 2 for r in g) for g in rest if len(g) >= 2)
            freedom = sum(len(g) - 1 for g in rest if len(g) >= 2)
            if freedom < 1:
                continue
            centre = sum(others) / len(others)
            spread = math.sqrt(squares / freedom) * math.sqrt(1 + 1 / len(others))
            away, line = abs(ratio - centre), _two_sided_t(freedom) * spread
            if away > floor and away > line:
                drawn = centre + math.copysign(DRAW_K * spread, ratio - centre)
                apart_here.append((away / spread if spread else math.inf, index, ratio, centre, spread, drawn))
        found.append(sorted((index, _stray_reason(ratio, centre, spread), drawn)
                            for _, index, ratio, centre, spread, drawn in sorted(apart_here, reverse=True)[:allowed]))
    return found


@functools.lru_cache(maxsize=256)
def _two_sided_t(freedom: int) -> float:
    """Student's t on ``freedom`` degrees of freedom at 1 - STRAY_ALPHA / 2 (cached: asked once per pair)."""
    from scipy.stats import t

    return float(t.ppf(1 - STRAY_ALPHA / 2, freedom))


def _stray_reason(ratio: float, centre: float, spread: float) -> str:
    sigmas = f"{abs(ratio - centre) / spread:.3g}" if spread else "infinitely many"
    return (f"its change {math.expm1(ratio) * 100:+.3g}% lies {sigmas} standard deviations ({_pct(spread)}, from the "
            f"run's other pairs) from its case's other pairs (mean {math.expm1(centre) * 100:+.3g}%), beyond "
            f"Student's t at 1 in {1 / STRAY_ALPHA:.0f}; one pair in four may stand apart")


def offsets(figures: Mapping[str, Sequence[float]]) -> list[float]:
    """Each process's offset from its side: the median, over the given figure series (one per case and scope, every
    series one value per process of this side, in process order), of ln(its figure / the series' median)."""
    count = min((len(v) for v in figures.values()), default=0)
    found: list[float] = []
    for index in range(count):
        logs = [math.log(values[index] / median(values)) for values in figures.values() if median(values) > 0]
        found.append(median(logs) if logs else 0.0)
    return found


def apart(process_offsets: Sequence[float]) -> list[int]:
    """The processes that stand apart from their side: each judged against the others' median and robust spread
    (1.4826 x their median absolute deviation), needing at least 3 others."""
    out: list[int] = []
    for index, own in enumerate(process_offsets):
        others = [o for i, o in enumerate(process_offsets) if i != index]
        if len(others) < 3:
            continue
        centre = median(others)
        scale = 1.4826 * median([abs(o - centre) for o in others])
        if abs(own - centre) > max(APART_SIGMAS * scale, APART_FLOOR):
            out.append(index)
    return out
