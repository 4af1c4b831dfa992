"""Which change-point detector `rfdetr-latency history` uses, chosen on data: the H200's run-to-run noise.

A history holds one figure per run and per case × scope: the median over the run's processes. How much that figure
moves from run to run without any change is measured, not assumed: every clean check and recording of the H200
gate-matrix sessions (benchmarks/results/gate-matrix-h200-2) gives, per case and scope, a few figures of the same
code; their deviations from the case's own centre, pooled by kind of scope, are the noise this benchmark resamples.

Series of ``--length`` runs are drawn from a pool with a step of +s % from run ``k`` on (s = 0 for clean series),
and each candidate is asked for its change points:

- apache-otava's ``compute_change_points`` (E-divisive split, Student's t merge; Hunter, Fleming et al. 2023);
- signal-processing-algorithms' ``e_divisive`` (MongoDB's E-divisive with a permutation test);
- ruptures' PELT on the log figures with a BIC penalty from the series' own robust noise, each change point kept
  only where Welch's t-test on the segments either side finds it (what the plugin ships: changepoints.py).

A step is found when a change point of its sign lies within one run of ``k``; any other change point is a false one.

Run it in an environment that has all three (apache-otava pins numpy 2.2.0 and pulls in BigQuery, Postgres and
Slack clients, so install it with ``--no-deps``; signal-processing-algorithms wants Python 3.11 and numpy < 2)::

    python3.11 -m venv /tmp/cpd && /tmp/cpd/bin/pip install 'numpy<2' scipy ruptures structlog more-itertools \\
        typing-extensions && /tmp/cpd/bin/pip install --no-deps apache-otava signal-processing-algorithms
    PYTHONPATH=src /tmp/cpd/bin/python benchmarks/changepoints.py --out benchmarks/results/changepoints.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

SESSION = Path(__file__).parent / "results" / "gate-matrix-h200-2"


def noise_pools(session: Path) -> dict[str, list[float]]:
    """Relative deviations of a run's figure from its case's centre, pooled by kind of scope (device; launch-bound
    forward/e2e/iobinding of a GPU backend; host-bound, the CPU backend's), over every clean run of ``session``."""
    runs = [json.loads(line) for line in (session / "runs.jsonl").read_text().splitlines() if line.strip()]
    figures: dict[tuple[int, str, str], list[float]] = defaultdict(list)
    for run in runs:
        if run.get("inject_pct") or not run.get("report"):
            continue
        path = session / (run["report"] + ".gz")
        if not path.exists():
            continue
        with gzip.open(path, "rt") as handle:
            report = json.load(handle)
        for case in report["cases"]:
            for scope, verdict in (case.get("verdicts") or {}).items():
                if scope != "memory" and verdict.get("processes"):
                    figures[(run["stream"], case["id"], scope)].append(statistics.median(verdict["processes"]))
            if run["phase"] == "save" and case.get("baseline_entry"):
                for scope, stored in case["baseline_entry"]["scopes"].items():
                    figures[(run["stream"], case["id"], scope)].append(float(stored["value_ms"]))
    pools: dict[str, list[float]] = defaultdict(list)
    for (_, case_id, scope), values in figures.items():
        if len(values) < 3:
            continue
        kind = "device" if scope == "device" else ("host-bound" if "onnx-cpu" in case_id else "launch-bound")
        centre = statistics.median(values)
        pools[kind] += [v / centre - 1.0 for v in values]
    return dict(pools)


def otava_points(series: np.ndarray) -> list[int]:
    from otava.analysis import compute_change_points

    return [int(c.index) for c in compute_change_points(series, window_len=50, max_pvalue=0.001)[0]]


def spa_points(series: np.ndarray) -> list[int]:
    from signal_processing_algorithms.energy_statistics.energy_statistics import e_divisive

    return [int(i) for i in e_divisive(series, pvalue=0.05, permutations=100)]


def ruptures_points(series: np.ndarray) -> list[int]:
    from pytest_rfdetr_latency.trends.changepoints import change_points

    return [c.index for c in change_points([float(v) for v in series])]


CANDIDATES: dict[str, Callable[[np.ndarray], list[int]]] = {
    "apache-otava": otava_points,
    "signal-processing-algorithms": spa_points,
    "ruptures+welch": ruptures_points,
}


def trial(pool: Sequence[float], length: int, at: int, step: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.choice(np.asarray(pool), size=length, replace=True)
    level = np.where(np.arange(length) >= at, 1.0 + step, 1.0)
    return 10.0 * level * (1.0 + noise)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--session", type=Path, default=SESSION)
    parser.add_argument("--length", type=int, default=24)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--steps", default="0,1,2,5,10", help="step sizes, percent")
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    pools = noise_pools(args.session)
    steps = [float(s) / 100 for s in args.steps.split(",")]
    positions = {"middle": args.length // 2, "last-4": args.length - 4}
    rows: list[dict[str, Any]] = []
    for kind, pool in sorted(pools.items()):
        spread = float(np.std(pool))
        print(f"{kind}: {len(pool)} deviations, sd {spread * 100:.3g}%")
        for where, at in positions.items():
            for step in steps:
                rng = np.random.default_rng([args.seed, len(rows)])
                series = [trial(pool, args.length, at, step, rng) for _ in range(args.trials)]
                for name, find in CANDIDATES.items():
                    found = false = 0
                    spent = 0.0
                    for values in series:
                        start = time.perf_counter()
                        points = find(values)
                        spent += time.perf_counter() - start
                        hits = [p for p in points if step and abs(p - at) <= 1
                                and np.sign(np.median(values[p:]) - np.median(values[:p])) == np.sign(step)]
                        found += bool(hits)
                        false += len(points) - len(hits[:1])
                    rows.append({"noise": kind, "noise_sd_pct": round(spread * 100, 3), "position": where,
                                 "at": at, "step_pct": step * 100, "candidate": name,
                                 "detected": round(found / args.trials, 3) if step else None,
                                 "false_per_series": round(false / args.trials, 3),
                                 "ms_per_series": round(1000 * spent / args.trials, 2)})
                    row = rows[-1]
                    print(f"  {where:7} step {step * 100:4.0f}%  {name:30} detected {row['detected']!s:6} "
                          f"false/series {row['false_per_series']:<6} {row['ms_per_series']} ms")
    versions = {}
    for dist in ("apache-otava", "signal-processing-algorithms", "ruptures", "numpy", "scipy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    if args.out:
        args.out.write_text(json.dumps({
            "what": "change-point detectors on series resampled from the H200 run-to-run noise",
            "session": str(args.session), "length": args.length, "trials": args.trials, "seed": args.seed,
            "pools": {k: {"deviations": len(v), "sd_pct": round(float(np.std(v)) * 100, 3),
                          "mad_pct": round(float(np.median(np.abs(v))) * 100, 3)} for k, v in pools.items()},
            "python": platform.python_version(), "versions": versions, "rows": rows,
        }, indent=1) + "\n")
        print(f"written to {args.out}")
    if not math.isfinite(sum(r["false_per_series"] for r in rows)):
        raise SystemExit("a candidate returned nonsense")


if __name__ == "__main__":
    main()
