"""Does adding pairs while a comparison is unresolved (headtohead.grow) keep head to head's false alarms nominal?

    python benchmarks/grow_rule_sim.py --runs 50000 --out benchmarks/results/grow-rule-simulation.json

Clean pairs only (normal log ratios of standard deviation SIGMA, no change): one comparison of one case, 4 pairs at
first, judged by the shipped paired.judge_pairs at the default forward tolerance (2.5 %), resolving 5 %. Modes: a
fixed 4 or 8 pairs at the verdict's z (DECIDE_Z); ``stepwise``: two more pairs while the line (paired.line) is
coarser than 5 %, up to 8, at DECIDE_Z (the naive rule); ``once``: what headtohead.grow does, 4 more pairs in one
go where the line at 4 is coarser than 5 %, stopping and judging at paired.GROWING_Z. Counts false alarms (a
regression verdict) per comparison. Offline, no GPU.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pytest_rfdetr_latency.verdict import paired
from pytest_rfdetr_latency.verdict.judge import DECIDE_Z

ASKED, RESOLVE, START, MOST = 0.025, 0.05, 4, 8


def _pooled(ratios: list[float]) -> tuple[float | None, int]:
    return paired.pooled_noise([ratios])


def trial(rng: random.Random, sigma: float, mode: str) -> tuple[bool, int]:
    ratios = [rng.gauss(0.0, sigma) for _ in range(MOST)]
    z = paired.GROWING_Z if mode == "once" else DECIDE_Z
    n = {"fixed-4": START, "fixed-8": MOST}.get(mode, START)
    while mode in ("stepwise", "once") and n < MOST:
        noise, freedom = _pooled(ratios[:n])
        detectable = paired.line(noise, freedom, n, z)
        if detectable is not None and detectable <= RESOLVE:
            break
        n = n + 2 if mode == "stepwise" else MOST
    noise, freedom = _pooled(ratios[:n])
    this = [1.0] * n
    other = [float(2.718281828459045 ** r) for r in ratios[:n]]
    verdict = paired.judge_pairs("forward", "p20", this, other, ASKED, noise, freedom, RESOLVE, z=z)
    return verdict.kind == "regression", n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50000)
    parser.add_argument("--sigmas", default="0.01,0.02,0.03,0.05,0.08")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    start = time.time()
    rows = []
    for sigma in (float(s) for s in args.sigmas.split(",")):
        for mode in ("fixed-4", "fixed-8", "stepwise", "once"):
            rng = random.Random(f"{args.seed}-{sigma}")  # the same pairs for every mode
            outcomes = [trial(rng, sigma, mode) for _ in range(args.runs)]
            alarms = sum(a for a, _ in outcomes)
            rows.append({"sigma_pct": sigma * 100, "mode": mode, "runs": args.runs,
                         "false_alarm_pct": round(100 * alarms / args.runs, 4),
                         "grown_pct": round(100 * sum(n > START for _, n in outcomes) / args.runs, 2),
                         "mean_pairs": round(sum(n for _, n in outcomes) / args.runs, 3)})
            print(json.dumps(rows[-1]), flush=True)
    result = {"what": __doc__.strip().splitlines()[0], "nominal_false_alarm_pct": 0.135, "asked": ASKED,
              "resolve": RESOLVE, "start_pairs": START, "most_pairs": MOST, "decide_z": DECIDE_Z,
              "growing_z": paired.GROWING_Z, "seed": args.seed, "seconds": round(time.time() - start, 1), "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
