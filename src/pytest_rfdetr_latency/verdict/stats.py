"""Summaries of one process's timed samples. Pure functions over plain data: no I/O, no torch, no pytest.

Samples are taken in blocks (sampling.py). A process's figure for a scope is its statistic over every kept sample;
the block statistics say how precisely this process knows that figure (the sampler stops once it is precise
enough). Whether a figure moved is judged across processes, not across blocks (judge.py): slow spells and memory
placement last whole processes, so blocks of one process are not independent evidence about the next process.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


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


def significant(value: float, digits: int = 6) -> float:
    """``value`` rounded to ``digits`` significant digits, for files people read."""
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
    block_size: int = 0  # calls per block (kept identical between a baseline and the runs checked against it)
    host_ms: float | None = None  # median of the host yardstick timed after each kept block (environment.py)
    host_blocks_ms: tuple[float, ...] = ()  # the host yardstick timed right after each kept block, in block order

    def to_json(self) -> dict[str, Any]:
        return {
            "statistic": self.statistic,
            "value_ms": significant(self.value),
            "blocks_ms": [significant(b) for b in self.blocks],
            "n": self.n,
            "median_ms": significant(self.median),
            "mean_ms": significant(self.mean),
            "std_ms": significant(self.std),
            "min_ms": significant(self.min),
            "p10_ms": significant(self.p10),
            "p90_ms": significant(self.p90),
            "rel_uncertainty": significant(self.rel_uncertainty, 4),
            "dropped_blocks": self.dropped_blocks,
            "block_size": self.block_size,
            "host_ms": None if self.host_ms is None else significant(self.host_ms, 4),
            "host_blocks_ms": [significant(h, 4) for h in self.host_blocks_ms],
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
            block_size=int(data.get("block_size") or 0),
            host_ms=None if data.get("host_ms") is None else float(data["host_ms"]),
            host_blocks_ms=tuple(float(h) for h in data.get("host_blocks_ms") or ()),
        )


def relative_uncertainty(blocks: Sequence[float], value: float) -> float:
    """Standard error of a median-like statistic from its block values (1.2533 σ/√k), relative to ``value``."""
    k = len(blocks)
    if k < 2 or value <= 0:
        return math.inf
    mean = sum(blocks) / k
    var = sum((b - mean) ** 2 for b in blocks) / (k - 1)
    return 1.2533 * math.sqrt(var / k) / value


def summarize(
    blocks: Sequence[Sequence[float]],
    statistic: str,
    dropped_blocks: int = 0,
    block_size: int = 0,
    host_ms: Sequence[float] = (),
) -> ScopeStats:
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
        block_size=block_size or max(len(block) for block in blocks),
        host_ms=quantile(host_ms, 0.5) if host_ms else None,
        host_blocks_ms=tuple(host_ms) if len(host_ms) == len(block_values) else (),
    )


def log_spread(groups: Sequence[Sequence[float]]) -> tuple[float | None, int]:
    """The pooled within-group sample standard deviation of ln(value), and its degrees of freedom.

    For a few processes' figures of one scope this is their relative spread: 0.01 means processes differ by about
    1 % (one standard deviation). Groups are the baseline's processes and a check's; each is centred on its own mean,
    so a real shift between them does not count as noise. None with no degree of freedom.
    """
    squares = 0.0
    freedom = 0
    for group in groups:
        logs = [math.log(v) for v in group if v > 0]
        if len(logs) < 2:
            continue
        mean = sum(logs) / len(logs)
        squares += sum((x - mean) ** 2 for x in logs)
        freedom += len(logs) - 1
    if freedom == 0:
        return None, 0
    return math.sqrt(squares / freedom), freedom
