"""The spread between sessions, learned from a runner's own clean checks.

A stored verdict adds to its processes' noise a spread between sessions (scopes.session_noise): how much farther a
check lands from a recording made earlier than the recording's back-to-back processes disagree. Built in, it is what
the lent H200 showed. A runner that keeps a history (``--rfdetr-history``) holds its own evidence: every check's
change as the verdict judged it and the variance its threshold set aside for the processes. At recording, the spread
that makes those changes' standardized offsets of unit variance is learned per backend and scope and stored in the
baseline file beside each scope (``session_spread``); a check against that file uses it instead of the built-in one,
once it rests on at least MIN_COMPARISONS comparisons. benchmarks/session_noise.py estimated the built-in figures
with the same functions.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pytest_rfdetr_latency.verdict.judge import median_variance

# Fewer comparisons than this leave the built-in spread in place: with k comparisons the mean of the standardized
# squares is known to about sqrt(2 / k), a third of itself at 20.
MIN_COMPARISONS = 20
TIMING = ("device", "forward", "iobinding", "e2e")


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


def unit_spread(rows: Sequence[tuple[float, float]]) -> float:
    """The spread s with mean(x^2 / (v + s^2)) = 1 over ``rows`` of (x, v), by bisection; 0 where the offsets are
    already no wider than their processes allow (and where there are none)."""
    def excess(s: float) -> float:
        return statistics.fmean(x * x / (v + s * s) for x, v in rows) - 1.0

    if not rows or excess(0.0) <= 0:
        return 0.0
    low, high = 0.0, 1.0
    while excess(high) > 0 and high < 64:  # a change past e^8 is no measurement; stop widening there
        high *= 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if excess(middle) > 0 else (low, middle)
    return low


def learned(lines: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (backend, timing scope), from a device's history lines: the spread between sessions its clean checks show
    (unit_spread over each check line's ``change`` and ``process_variance``), with how many comparisons and checks
    it rests on and when they ran. A self-test's lines (an injected slowdown) are left out; every other check is in,
    real changes that landed on the branch included, which can only widen it."""
    rows: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    runs: dict[tuple[str, str], set[str]] = defaultdict(set)
    times: dict[tuple[str, str], list[str]] = defaultdict(list)
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
    return {key: {"value": float(f"{unit_spread(found):.6g}"), "comparisons": len(found), "checks": len(runs[key]),
                  "first": min(times[key]), "last": max(times[key])} for key, found in rows.items()}
