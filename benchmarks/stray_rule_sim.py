"""How the head-to-head rule that leaves a stray pair out (paired.strays) behaves on clean pairs: Gaussian log ratios,
two cases of four pairs, each decision made as headtohead.judge_scope makes it (Student's t on the pooled noise,
the stray pair left out of the mean and drawn in to paired.DRAW_K standard deviations in the noise), against no rule.

    python benchmarks/stray_rule_sim.py --out benchmarks/results/stray-rule-simulation.json

Per pair noise: the share of clean comparisons that fail (nominal 0.135 %, the verdict's z = 3) and the share of
runs with a pair left out; also the alternatives docs/pr-gate.md names (the pair drawn in to the line it crossed,
paired.DRAW_K = None here, and left out of the noise entirely, DRAW_K = 0)."""

from __future__ import annotations

import argparse
import math
import random
import statistics
from pathlib import Path

from head_to_head import emit  # benchmarks/ is this script's folder
from pytest_rfdetr_latency.verdict import paired


def false_alarms(noise: float, rule: bool, trials: int, seed: int, asked: float = 0.025) -> tuple[float, float]:
    rng = random.Random(seed)
    alarms = left_out = 0
    for _ in range(trials):
        groups = [[rng.gauss(0.0, noise) for _ in range(4)] for _ in range(2)]
        found = paired.strays(groups, "forward") if rule else [[] for _ in groups]
        kept = [[r for i, r in enumerate(g) if i not in {j for j, _, _ in f}] for g, f in zip(groups, found)]
        pooled, freedom = paired.pooled_noise([k + [d for _, _, d in f] for k, f in zip(kept, found)])
        line = paired.line(pooled, freedom, len(kept[0]))
        assert line is not None
        alarms += statistics.fmean(kept[0]) > math.log1p(max(asked, line))
        left_out += sum(len(f) for f in found)
    return round(alarms / trials, 5), round(left_out / trials, 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--trials", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    shipped = paired.DRAW_K
    rows = {}
    for noise in (0.02, 0.03, 0.05, 0.08):
        row = {"no rule": false_alarms(noise, False, args.trials, args.seed)}
        for name, draw in (("shipped (drawn in to DRAW_K)", shipped), ("left out of the noise", 0.0)):
            paired.DRAW_K = draw
            row[name] = false_alarms(noise, True, args.trials, args.seed)
        paired.DRAW_K = shipped
        rows[f"{noise:.0%}"] = {k: {"false_alarms": a, "runs_with_a_pair_left_out": d} for k, (a, d) in row.items()}
    emit({"what": __doc__.split("\n\n")[0], "trials": args.trials, "seed": args.seed, "draw_k": shipped,
          "stray_alpha": paired.STRAY_ALPHA, "by_pair_noise": rows}, args.out)


if __name__ == "__main__":
    main()
