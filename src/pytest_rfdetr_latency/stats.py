"""Summaries of timed samples and the verdict. Pure functions over plain data: no I/O, no torch, no pytest.

The verdict is asv's rule, fitted to latency on shared machines: a case regressed when its statistic moved past
the scope's threshold (an effect size) *and* a one-sided Mann–Whitney test on block statistics says the shift is
no accident. Blocks, not single calls, are the observations, because consecutive calls share clocks, caches and
allocator state and are not independent. An effect past the threshold that the test cannot confirm is
*inconclusive*: the case measures again (a bounded number of rounds) before deciding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

# Thresholds per scope, as fractions, from A/A trials on NVIDIA H200s (docs/gate-power.md). The CUDA-graph replay
# moved at most +0.3 % between clean processes, so 0.5 % holds and still sees a 1 % slowdown. The host-bound scopes
# have slow spells lasting whole processes (+40-80 % in about one process in eight); their thresholds hold only
# together with the confirmation in fresh processes (--rfdetr-processes), and are what that data supports.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "device": 0.005,
    "iobinding": 0.10,
    "forward": 0.10,
    "e2e": 0.15,
}
# The statistic compared, per scope. Host-bound scopes use a low quantile: interference only ever adds time, so
# the faster calls of a process describe the code, the slower ones the neighbours.
DEFAULT_STATISTICS: dict[str, str] = {
    "device": "median",
    "iobinding": "median",
    "forward": "p20",
    "e2e": "p20",
}
DEFAULT_ALPHA = 0.002  # asv's; reachable with six or more blocks a side (the smallest p of 6 vs 6 is 0.0011)

Kind = Literal["pass", "regression", "improvement", "inconclusive"]


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), q in [0, 1]."""
    if not values:
        raise ValueError("quantile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def statistic_of(values: Sequence[float], statistic: str) -> float:
    if statistic == "median":
        return quantile(values, 0.5)
    if statistic == "mean":
        return sum(values) / len(values)
    if statistic == "min":
        return min(values)
    if statistic.startswith("p") and statistic[1:].isdigit():
        return quantile(values, int(statistic[1:]) / 100.0)
    raise ValueError(f"unknown statistic {statistic!r}: use median, mean, min or pNN")


def _sig(value: float, digits: int = 6) -> float:
    return float(f"{value:.{digits}g}")


@dataclass(frozen=True)
class ScopeStats:
    """One scope's measurement: enough to compare against later (block statistics), and to read (quantiles)."""

    statistic: str
    value: float  # the statistic over all kept samples, ms
    blocks: tuple[float, ...]  # the statistic of each kept block, ms
    n: int  # samples kept
    median: float
    mean: float
    std: float
    min: float
    p10: float
    p90: float
    rel_uncertainty: float  # standard error of `value` from the spread of the block statistics, relative
    dropped_blocks: int = 0  # blocks left out because the GPU throttled during them

    def to_json(self) -> dict[str, Any]:
        return {
            "statistic": self.statistic,
            "value_ms": _sig(self.value),
            "blocks_ms": [_sig(b) for b in self.blocks],
            "n": self.n,
            "median_ms": _sig(self.median),
            "mean_ms": _sig(self.mean),
            "std_ms": _sig(self.std),
            "min_ms": _sig(self.min),
            "p10_ms": _sig(self.p10),
            "p90_ms": _sig(self.p90),
            "rel_uncertainty": _sig(self.rel_uncertainty, 4),
            "dropped_blocks": self.dropped_blocks,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScopeStats:
        return cls(
            statistic=str(data["statistic"]),
            value=float(data["value_ms"]),
            blocks=tuple(float(b) for b in data["blocks_ms"]),
            n=int(data["n"]),
            median=float(data["median_ms"]),
            mean=float(data["mean_ms"]),
            std=float(data["std_ms"]),
            min=float(data["min_ms"]),
            p10=float(data["p10_ms"]),
            p90=float(data["p90_ms"]),
            rel_uncertainty=float(data["rel_uncertainty"]),
            dropped_blocks=int(data.get("dropped_blocks", 0)),
        )


def relative_uncertainty(blocks: Sequence[float], value: float) -> float:
    """Standard error of a median-like statistic from its block values (1.2533 σ/√k), relative to ``value``."""
    k = len(blocks)
    if k < 2 or value <= 0:
        return math.inf
    mean = sum(blocks) / k
    var = sum((b - mean) ** 2 for b in blocks) / (k - 1)
    return 1.2533 * math.sqrt(var / k) / value


def summarize(blocks: Sequence[Sequence[float]], statistic: str, dropped_blocks: int = 0) -> ScopeStats:
    """Summarize the kept blocks of one scope. Raises ValueError on empty or non-finite data."""
    samples = [x for block in blocks for x in block]
    if not samples:
        raise ValueError("no samples to summarize")
    bad = [x for x in samples if not math.isfinite(x) or x < 0]
    if bad:
        raise ValueError(f"{len(bad)} timing sample(s) are not finite non-negative numbers (first: {bad[0]!r})")
    block_values = tuple(statistic_of(block, statistic) for block in blocks if block)
    value = statistic_of(samples, statistic)
    mean = sum(samples) / len(samples)
    std = math.sqrt(sum((x - mean) ** 2 for x in samples) / max(1, len(samples) - 1))
    return ScopeStats(
        statistic=statistic,
        value=value,
        blocks=block_values,
        n=len(samples),
        median=quantile(samples, 0.5),
        mean=mean,
        std=std,
        min=min(samples),
        p10=quantile(samples, 0.1),
        p90=quantile(samples, 0.9),
        rel_uncertainty=relative_uncertainty(block_values, value),
        dropped_blocks=dropped_blocks,
    )


# ---------------------------------------------------------------------------------------------------------------
# Mann–Whitney U, one-sided.


@cache
def _u_counts(m: int, n: int) -> tuple[int, ...]:
    """How many orderings of m + n distinct values give each U = 0..m*n (U counts pairs with x above y)."""
    if m == 0 or n == 0:
        return (1,)
    out = [0] * (m * n + 1)
    # The largest value belongs to x (and beats all n values of y) or to y (and adds nothing).
    for u, count in enumerate(_u_counts(m - 1, n)):
        out[u + n] += count
    for u, count in enumerate(_u_counts(m, n - 1)):
        out[u] += count
    return tuple(out)


def mann_whitney_greater(x: Sequence[float], y: Sequence[float]) -> float:
    """One-sided p-value for "values of ``x`` tend to exceed those of ``y``".

    Exact for small samples without ties; normal approximation with tie and continuity corrections otherwise.
    """
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return 1.0
    u = 0.0
    for a in x:
        for b in y:
            u += 1.0 if a > b else 0.5 if a == b else 0.0
    has_ties = len(set(x) | set(y)) < n1 + n2
    if not has_ties and n1 * n2 <= 400:
        counts = _u_counts(n1, n2)
        total = sum(counts)
        return sum(counts[math.ceil(u):]) / total
    pooled = sorted([*x, *y])
    tie_term = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j < len(pooled) and pooled[j] == pooled[i]:
            j += 1
        t = j - i
        tie_term += t**3 - t
        i = j
    n = n1 + n2
    mu = n1 * n2 / 2.0
    sigma = math.sqrt(n1 * n2 / 12.0 * ((n + 1) - tie_term / (n * (n - 1))))
    if sigma == 0:
        return 1.0 if u <= mu else 0.0
    z = (u - mu - 0.5) / sigma
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def min_p_value(n1: int, n2: int) -> float:
    """The smallest one-sided p-value that blocks of these sizes can reach: below alpha, or the test is blind."""
    return 1.0 / math.comb(n1 + n2, n1)


# ---------------------------------------------------------------------------------------------------------------
# The verdict.


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    scope: str  # a timing scope, or "memory"
    statistic: str
    baseline: float
    current: float
    threshold: float
    p_value: float
    alpha: float
    notes: tuple[str, ...] = field(default_factory=tuple)
    unit: str = "ms"

    @property
    def ratio(self) -> float:
        return self.current / self.baseline

    @property
    def delta(self) -> float:
        return self.ratio - 1.0

    def describe(self) -> str:
        sign = "+" if self.delta >= 0 else ""
        test = f", p={self.p_value:.2g}, alpha={self.alpha:g}" if self.unit == "ms" else ""
        text = (
            f"{self.scope} {self.statistic}: baseline {self.baseline:.4g} {self.unit}, now {self.current:.4g} "
            f"{self.unit}, {sign}{self.delta * 100:.2f}% (threshold {self.threshold * 100:.3g}%{test}) -> {self.kind}"
        )
        return text + "".join(f"; {note}" for note in self.notes)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "scope": self.scope,
            "statistic": self.statistic,
            "unit": self.unit,
            "baseline": _sig(self.baseline),
            "current": _sig(self.current),
            "delta": _sig(self.delta, 4),
            "threshold": self.threshold,
            "p_value": _sig(self.p_value, 4),
            "alpha": self.alpha,
            "notes": list(self.notes),
        }


def decide(
    scope: str,
    baseline: ScopeStats,
    current: ScopeStats,
    threshold: float,
    alpha: float = DEFAULT_ALPHA,
) -> Verdict:
    """Compare one scope's current measurement with its baseline.

    - ``regression``: the statistic rose by more than ``threshold`` and the block test confirms it (p < alpha);
    - ``improvement``: it fell by more than ``threshold``, confirmed likewise;
    - ``inconclusive``: it rose past the threshold but the test cannot confirm it (too few or too noisy blocks);
    - ``pass``: everything else, including an unconfirmed fall.
    """
    if baseline.statistic != current.statistic:
        raise ValueError(
            f"{scope}: the baseline holds the {baseline.statistic} and this run the {current.statistic}; "
            "record the baseline again with --save-baseline"
        )
    if baseline.value <= 0 or not math.isfinite(baseline.value):
        raise ValueError(f"{scope}: baseline value {baseline.value!r} ms is not a positive number")
    delta = current.value / baseline.value - 1.0
    notes: list[str] = []
    if delta > 0:
        p = mann_whitney_greater(current.blocks, baseline.blocks)
    else:
        p = mann_whitney_greater(baseline.blocks, current.blocks)
    reachable = min_p_value(len(current.blocks), len(baseline.blocks))
    if reachable >= alpha:
        notes.append(
            f"{len(current.blocks)} vs {len(baseline.blocks)} blocks cannot reach p < {alpha:g}; "
            "raise min-blocks in --rfdetr-sampling"
        )
    kind: Kind
    if delta > threshold:
        kind = "regression" if p < alpha else "inconclusive"
    elif delta < -threshold and p < alpha:
        kind = "improvement"
    else:
        kind = "pass"
    if current.dropped_blocks:
        notes.append(f"{current.dropped_blocks} block(s) dropped while the GPU throttled")
    return Verdict(kind, scope, current.statistic, baseline.value, current.value, threshold, p, alpha, tuple(notes))


MEMORY_SLACK_MIB = 16.0  # allocator rounding: a few MiB either way is not a change in what the case needs


def decide_memory(baseline_mib: float, current_mib: float, threshold: float) -> Verdict:
    """Peak device memory is deterministic enough to compare directly: over ``threshold`` (and the slack) fails."""
    limit = baseline_mib * (1.0 + threshold) + MEMORY_SLACK_MIB
    floor = baseline_mib * (1.0 - threshold) - MEMORY_SLACK_MIB
    kind: Kind = "regression" if current_mib > limit else "improvement" if current_mib < floor else "pass"
    return Verdict(kind, "memory", "peak", max(baseline_mib, 1e-9), current_mib, threshold, 0.0, 0.0, unit="MiB")


def worst(verdicts: Sequence[Verdict]) -> Kind:
    """The case's overall verdict: any regression, else any inconclusive, else any improvement, else pass."""
    kinds = {v.kind for v in verdicts}
    order: tuple[Kind, ...] = ("regression", "inconclusive", "improvement")
    for kind in order:
        if kind in kinds:
            return kind
    return "pass"
