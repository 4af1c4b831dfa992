"""Trend alarms measured the way they are used: `rfdetr-latency history --fail-on-change` on a device's history.

    python benchmarks/trend_alarms.py --out benchmarks/results/trend-alarms.json

Histories are resampled from the H200's run-to-run noise (benchmarks/changepoints.py's pools: every clean run of a
session of stored-baseline checks, deviations from each case's centre, pooled by kind of scope), from two sessions:
``gate-matrix-h200-2`` (the default matrix, 2026-11) and ``stored-gate-h200`` (three backends, 2026-12-01, the newest
code), leaving out each case's centre itself (its deviation of exactly 0). A device's history holds, like the
default matrix, 9 device, 24 launch-bound and 6 host-bound series.

- **a clean push**: a clean history of ``--length`` runs of all 39 series, analysed as --fail-on-change does
  (trends.analyse_all: Benjamini-Hochberg across the series). A slowdown stays open until accepted, so what a push
  costs is the alarm it *raises*: a push fails, per kind, when a series of that kind is open after it and was not
  before it (every earlier alarm accepted when raised). Also given: how many clean histories end with any open
  alarm when nobody accepts anything (``clean_history_open_at_end``);
- **a step**: one series with a step of +s % from run ``k`` = 15 on (device +1 %, launch-bound and host-bound
  +10 %, as the issue asks of device and e2e): flagged within 5 runs when the history cut after run ``k+j``
  (j = 1..4, two to five runs at the new level) has it open, beginning within one run of ``k``, among the 39 series
  (counted only where Benjamini-Hochberg keeps it as the only candidate: p <= q / 39, the least it can be); still
  open 20 runs later when the history cut after ``k+20`` has it so;
- **an exact memory series**: 340 MiB in every run, then 344 MiB (+1.2 %, inside the verdict's 16 MiB slack).

Also written, per kind and session: the pool's noise (standard deviation, and the MAD's sigma, which leaves the tails
out), and how often the best test for *normal* noise of each size would flag the step after 5 runs against 15, its
place known, at q / 39 (``normal_noise_bound_at_sd``, ``..._at_mad``): what the noise allows at all, and how much
of that its heavy tails (a bad process, a bad session) take away.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from changepoints import noise_pools  # benchmarks/ is this script's folder
from pytest_rfdetr_latency.store.history import Point, Series
from pytest_rfdetr_latency.trends import shifts as trends

RESULTS = Path(__file__).resolve().parent / "results"
SESSIONS = ("gate-matrix-h200-2", "stored-gate-h200")
STEPS = {"device": 0.01, "launch-bound": 0.10, "host-bound": 0.10}
COUNTS = {"device": 9, "launch-bound": 24, "host-bound": 6}
AT, LATER = 15, 20


def _series(name: str, values: list[float], scope: str = "e2e", unit: str = "ms") -> Series:
    points = tuple(Point(run=f"run{i}", time=f"{i:06d}", kind="check", commit=f"{i:040x}", value=v, processes=(v,),
                         verdict="pass", baseline=None, threshold=None, fingerprint={}, seq=i)
                   for i, v in enumerate(values))
    return Series("NVIDIA H200", name, scope, "median", unit, "w", points)


def _draw(pool: list[float], rng: random.Random, length: int, step: float = 0.0, at: int = 0) -> list[float]:
    return [10.0 * (1.0 + rng.choice(pool)) * (1.0 + (step if i >= at else 0.0)) for i in range(length)]


def clean_push(job: tuple[dict[str, list[float]], int, int]) -> dict[str, Any]:
    pools, length, seed = job
    rng = random.Random(seed)
    history = {(kind, j): _draw(pools[kind], rng, length) for kind in COUNTS for j in range(COUNTS[kind])}

    def opened(cut: int) -> set[tuple[str, int]]:
        found = trends.analyse_all([_series(f"{kind}|{j}", values[:cut]) for (kind, j), values in history.items()])
        return {(t.series.case.split("|")[0], int(t.series.case.split("|")[1])) for t in found if t.open_slowdown}

    now, before = opened(length), opened(length - 1)
    return {"raised": sorted({kind for kind, _ in now - before}), "open": bool(now)}


def step(job: tuple[list[float], float, int]) -> tuple[bool, bool]:
    pool, size, seed = job
    rng = random.Random(seed)
    values = _draw(pool, rng, AT + LATER + 1, size, AT)
    alone = trends.FALSE_DISCOVERY / sum(COUNTS.values())

    def open_at(end: int) -> bool:
        trend = trends.analyse(_series("stepped", values[:end + 1]))
        found = trend.open_slowdown
        return found is not None and abs(found.point.index - AT) <= 1 and trend.pvalue <= alone

    return any(open_at(AT + j) for j in range(1, 5)), open_at(AT + LATER)


def normal_bound(sigma: float, size: float, after: int = 5) -> float:
    """How often the best test there is for normal noise of standard deviation ``sigma`` (the step's place known,
    the mean of ``after`` runs against the AT before, one-sided at q / 39) would flag a step of ``size``."""
    from scipy.stats import norm

    alpha = trends.FALSE_DISCOVERY / sum(COUNTS.values())
    se = sigma * (1 / after + 1 / AT) ** 0.5
    return float(norm.cdf(math.log1p(size) / se - norm.ppf(1 - alpha)))


def _noise(pool: list[float]) -> dict[str, float]:
    centre = statistics.median(pool)
    return {"sd_pct": round(statistics.pstdev(pool) * 100, 3),
            "mad_sigma_pct": round(1.4826 * statistics.median(abs(x - centre) for x in pool) * 100, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--length", type=int, default=30, help="runs in a clean history")
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    sessions: dict[str, Any] = {}
    with Pool(args.workers) as workers:
        for offset, session in enumerate(SESSIONS):
            # A case's centre is one of its own few figures: its deviation of exactly 0 is no draw of noise, and
            # resampled it would tie figures to the last digit, which real run figures never do.
            pools = {kind: [d for d in pool if d != 0.0] for kind, pool in noise_pools(RESULTS / session).items()}
            seed = args.seed + 1_000_000 * offset
            pushes = workers.map(clean_push, [(pools, args.length, seed + i) for i in range(args.trials)])
            rows: dict[str, Any] = {}
            for k, kind in enumerate(sorted(COUNTS)):
                stepped = workers.map(step, [(pools[kind], STEPS[kind], seed + 10_000 * (k + 1) + i)
                                             for i in range(args.trials)])
                rows[kind] = {
                    "series_per_push": COUNTS[kind], "noise_deviations": len(pools[kind]), **_noise(pools[kind]),
                    "clean_push_failing": round(sum(kind in p["raised"] for p in pushes) / args.trials, 4),
                    "step_pct": STEPS[kind] * 100,
                    "step_flagged_within_5_runs": round(sum(f for f, _ in stepped) / args.trials, 4),
                    "step_still_open_20_runs_later": round(sum(o for _, o in stepped) / args.trials, 4),
                    "normal_noise_bound_at_sd": round(normal_bound(statistics.pstdev(pools[kind]), STEPS[kind]), 4),
                    "normal_noise_bound_at_mad": round(normal_bound(_noise(pools[kind])["mad_sigma_pct"] / 100,
                                                                    STEPS[kind]), 4),
                }
                print(session, kind, rows[kind], flush=True)
            sessions[session] = {
                "kinds": rows,
                "clean_push_failing_any": round(sum(bool(p["raised"]) for p in pushes) / args.trials, 4),
                "clean_history_open_at_end": round(sum(p["open"] for p in pushes) / args.trials, 4),
            }
    exact = trends.analyse(_series("memory", [340.0] * 12 + [344.0] * 4, scope="memory", unit="MiB"))
    out = {
        "what": "trend alarms of `rfdetr-latency history --fail-on-change` (trends.analyse_all, shipped defaults: "
                f"open until accepted, Benjamini-Hochberg at {trends.FALSE_DISCOVERY} across the series, least change "
                f"max({trends.MIN_CHANGE}, {trends.NOISE_MULTIPLE:g} x the series' noise)) on histories resampled "
                "from the H200's run-to-run noise",
        "trials": args.trials, "length": args.length, "step_at_run": AT, "seed": args.seed,
        "targets": {"clean_push_failing": "<= 0.01", "step_flagged_within_5_runs": ">= 0.95",
                    "step_still_open_20_runs_later": ">= 0.95"},
        "sessions": sessions,
        "exact_memory_4_mib_alarms": exact.open_slowdown is not None,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(json.dumps({k: out[k] for k in ("sessions", "exact_memory_4_mib_alarms", "seconds")}, indent=1))


if __name__ == "__main__":
    main()
