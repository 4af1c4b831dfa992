"""The spread between sessions, learned from a runner's own checks.

A stored verdict adds to its processes' noise a spread between sessions (scopes.session_noise): how much farther a
check lands from a recording made earlier than the recording's back-to-back processes disagree. Built in, it is what
the lent H200 showed. A runner that keeps a history (``--rfdetr-history``) holds its own evidence: every check's
change as the verdict judged it and the variance its threshold set aside for the processes. At recording, the spread
that makes those changes' standardized offsets of unit variance (each held within CAP standard errors, so that a
real change among them cannot set it alone) is learned per backend and scope and stored in the baseline file beside
each scope (``session_spread``); a check against that file uses it instead of the built-in one once it rests on enough
evidence (``enough``). benchmarks/session_noise.py estimated the built-in figures with the same functions, uncapped.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pytest_rfdetr_latency.verdict.judge import median_variance

# Less evidence than this leaves the built-in spread in place. Comparisons of one check share its session and those
# against one recording share its offset, so the evidence is counted three ways: comparisons, checks (distinct runs)
# and recordings (distinct baseline figures of one case).
MIN_COMPARISONS = 20
MIN_CHECKS = 10
MIN_RECORDINGS = 2
TIMING = ("device", "forward", "iobinding", "e2e")
# Learning, a change is counted at most this many of its processes' standard errors away: the H200's clean checks
# drift up to about 5 (docs/gate-power.md, session 10: +5.0 and -3.9 on IO binding), which the spread must keep, while
# one real regression among them (a 10 % slowdown is 30 standard errors of a device figure) must not set it alone.
CAP = 5.0


def enough(spread: Mapping[str, Any] | None) -> bool:
    """Whether a learned ``session_spread`` rests on enough evidence to replace the built-in one."""
    spread = spread or {}
    return bool(spread.get("comparisons", 0) >= MIN_COMPARISONS and spread.get("checks", 0) >= MIN_CHECKS
                and spread.get("recordings", 0) >= MIN_RECORDINGS)


def standardized(verdict: Mapping[str, Any]) -> tuple[float, float] | None:
    """One judged timing comparison as (x, v): its log change as printed, ln(1 + delta), and the variance its
    threshold set aside for the processes, noise^2 * (median_variance(baseline's) + median_variance(measured)).
    None where the verdict states no noise (a baseline of one process) or is not a stored one."""
    detail = verdict.get("detail") or {}
    noises = [n for n in (detail.get("own_noise"), detail.get("typical_noise")) if n is not None]
    counts = detail.get("processes")
    if "delta" not in verdict or not noises or not counts or detail.get("paired"):
        return None
    measured = len(verdict.get("processes") or ()) or int(counts[1])
    variance = max(noises) ** 2 * (median_variance(int(counts[0])) + median_variance(measured))
    return (math.log1p(float(verdict["delta"])), variance) if variance > 0 else None


def unit_spread(rows: Sequence[tuple[float, float]], robust: bool = False) -> float:
    """The spread s with mean(x^2 / (v + s^2)) = 1 over ``rows`` of (x, v), by bisection; 0 where the offsets are
    already no wider than their processes allow (and where there are none). ``robust``: each x first brought within
    CAP standard errors of its processes (x^2 at most CAP^2 v), so that a few real changes among clean checks cannot
    set it alone; a mean still, since the drift's tail is what makes false alarms (a median would learn none)."""
    if robust:
        rows = [(math.copysign(min(abs(x), CAP * math.sqrt(v)), x), v) for x, v in rows]

    def excess(s: float) -> float:
        return statistics.fmean(x * x / (v + s * s) for x, v in rows) - 1.0

    if not rows or excess(0.0) <= 0:
        return 0.0
    low, high = 0.0, 1.0
    while excess(high) > 0 and high < 64:  # a spread of e^64 is no measurement; stop widening there
        high *= 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if excess(middle) > 0 else (low, middle)
    return low


def learned(lines: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (backend, timing scope), from a device's history lines: the spread between sessions its checks show
    (unit_spread, robust, over each check line's ``change`` and ``process_variance``), with how many comparisons,
    checks and recordings it rests on and when they ran. A self-test's lines (an injected slowdown) are left out;
    every other check is in, real changes that landed on the branch included, each held within CAP."""
    rows: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    runs: dict[tuple[str, str], set[str]] = defaultdict(set)
    times: dict[tuple[str, str], list[str]] = defaultdict(list)
    recorded: dict[tuple[str, str], dict[str, set[float]]] = defaultdict(lambda: defaultdict(set))
    for line in lines:
        if line.get("kind") != "check" or line.get("injected_pct") or line.get("scope") not in TIMING:
            continue
        change, variance = line.get("change"), line.get("process_variance")
        if change is None or not variance:
            continue
        key = (str(line["backend"]), str(line["scope"]))
        rows[key].append((float(change), float(variance)))
        runs[key].add(str(line.get("run")))
        times[key].append(str(line.get("time")))
        recorded[key][str(line.get("case"))].add(float(line.get("baseline") or 0.0))
    return {key: {"value": float(f"{unit_spread(found, robust=True):.6g}"), "comparisons": len(found),
                  "checks": len(runs[key]), "recordings": max(len(figures) for figures in recorded[key].values()),
                  "first": min(times[key]), "last": max(times[key])} for key, found in rows.items()}
