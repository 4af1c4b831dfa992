"""Exploratory, offline: how far apart the pairs of a head-to-head run land under other per-process figures than the
shipped one, on a run that kept every block's host yardstick (ScopeStats.host_blocks_ms).

    python benchmarks/host_state_rules.py benchmarks/results/pr-gate-h200/ab-host5-1.json.gz --out rules.json

For each rule and scope: the pooled noise of one pair's log ratio (each case about its own mean, so an injected
slowdown does not count as noise) and the line 4 pairs would give on that noise (Student's t at the verdict's tail,
on the pooled degrees of freedom). The shipped rule is ``value`` (the scope's statistic over every sample); the
others are candidates, not what the gate does.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from head_to_head import read_json  # benchmarks/ is this script's folder

Rule = Callable[[dict[str, Any], dict[str, float]], float]


def _quiet(factor: float) -> Rule:
    def rule(process: dict[str, Any], _: dict[str, float]) -> float:
        fastest = min(process["host_blocks_ms"])
        return statistics.median(v for v, h in zip(process["blocks_ms"], process["host_blocks_ms"])
                                 if h <= factor * fastest)
    return rule


def _low(q: float) -> Rule:
    def rule(process: dict[str, Any], _: dict[str, float]) -> float:
        blocks = sorted(process["blocks_ms"])
        return blocks[int(q * (len(blocks) - 1))]
    return rule


def _fast_state(factor: float) -> Rule:
    """Blocks in the run's fast host state, one floor for both sides (the case's tenth percentile of every block's
    yardstick): NaN, and the pair left out, where a process has fewer than two such blocks."""
    def rule(process: dict[str, Any], fit: dict[str, float]) -> float:
        kept = [v for v, h in zip(process["blocks_ms"], process["host_blocks_ms"]) if h <= factor * fit["floor"]]
        return statistics.median(kept) if len(kept) >= 2 else math.nan
    return rule


def _slow_share(process: dict[str, Any], fit: dict[str, float]) -> float:
    hosts = process["host_blocks_ms"]
    return sum(h > 1.15 * fit["floor"] for h in hosts) / len(hosts)


def _normalized(process: dict[str, Any], fit: dict[str, float]) -> float:
    return statistics.median(v * (fit["reference"] / h) ** fit["slope"]
                             for v, h in zip(process["blocks_ms"], process["host_blocks_ms"]))


RULES: dict[str, Rule] = {
    "value (shipped)": lambda process, _: float(process["value_ms"]),
    "blocks whose yardstick is within 1.15x of the process's fastest": _quiet(1.15),
    "blocks whose yardstick is within 1.05x of the process's fastest": _quiet(1.05),
    "the block at the 10th percentile": _low(0.10),
    "the block at the 25th percentile": _low(0.25),
    "the fastest block": _low(0.0),
    "blocks in the fast state, one floor for both sides (1.15x the case's 10th percentile)": _fast_state(1.15),
    "blocks in the fast state, one floor for both sides (1.25x the case's 10th percentile)": _fast_state(1.25),
    "each block normalized by its yardstick (slope fitted within the processes)": _normalized,
}


def _fit(processes: list[dict[str, Any]]) -> dict[str, float]:
    xs: list[float] = []
    ys: list[float] = []
    for process in processes:
        lv = [math.log(v) for v in process["blocks_ms"]]
        lh = [math.log(h) for h in process["host_blocks_ms"]]
        xs += [h - statistics.fmean(lh) for h in lh]
        ys += [v - statistics.fmean(lv) for v in lv]
    slope = sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs)
    every = sorted(h for p in processes for h in p["host_blocks_ms"])
    return {"slope": min(1.0, max(0.0, slope)), "reference": statistics.median(every),
            "floor": every[int(0.1 * (len(every) - 1))]}


def _sides(case: dict[str, Any], scope: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The reference side's processes and the judged side's, in pair order."""
    this = case["baseline"]["scopes"][scope]["processes"]
    other = [case["scopes"][scope], *(p["scopes"][scope] for p in case["processes"])]
    return this, other


def main() -> None:
    from pytest_rfdetr_latency.verdict.paired import line

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path)
    parser.add_argument("--scopes", default="device,forward,e2e")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    data = read_json(args.report)
    found: dict[str, dict[str, Any]] = {}
    for scope in args.scopes.split(","):
        for name, rule in RULES.items():
            squares, freedom, means, pairs, shares = 0.0, 0, [], [], []
            for case in data["cases"]:
                this, other = _sides(case, scope)
                fit = _fit(this + other)
                ratios = [math.log(rule(b, fit) / rule(a, fit)) for a, b in zip(this, other)]
                ratios = [r for r in ratios if not math.isnan(r)]
                pairs.append(f"{len(ratios)}/{len(this)}")
                shares.append([round(statistics.fmean(_slow_share(p, fit) for p in side), 2) for side in (this, other)])
                if len(ratios) < 2:
                    means.append(None)
                    continue
                mean = statistics.fmean(ratios)
                squares += sum((r - mean) ** 2 for r in ratios)
                freedom += len(ratios) - 1
                means.append(round(100 * math.expm1(mean), 2))
            noise = math.sqrt(squares / freedom) if freedom else math.nan
            detectable = line(noise, freedom, 4) if freedom else None
            found.setdefault(scope, {})[name] = {
                "pair_noise_pct": None if math.isnan(noise) else round(100 * noise, 2), "freedom": freedom,
                "detectable_pct_4_pairs": None if detectable is None else round(100 * detectable, 1),
                "change_pct_per_case": means, "pairs_kept_per_case": pairs,
                "slow_share_base_head_per_case": shares}
    text = json.dumps({"report": args.report.name, "rules": found}, indent=1) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
