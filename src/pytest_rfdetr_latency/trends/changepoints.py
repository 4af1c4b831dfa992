"""Persistent shifts in a series of run figures: where the level changed and stayed changed.

ruptures' PELT finds the segmentation of the log figures that minimizes the squared error plus a BIC penalty
(2 σ² ln n per change point), with σ the series' own noise estimated robustly from its first differences (so that
the steps themselves do not inflate it). Each change point is then kept only where Welch's t-test finds the
segments on either side different at ``max_pvalue``; the weakest is dropped and its neighbours tested again until
all that remain pass (the merge step of Hunter, Fleming et al. 2023). benchmarks/changepoints.py chose this over
apache-otava and signal-processing-algorithms on the H200's run-to-run noise (docs/history.md says why).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

MIN_SEGMENT = 2  # runs on each side of a change point: a shift is persistent when two runs show it
MAX_PVALUE = 0.001


@dataclass(frozen=True)
class ChangePoint:
    index: int  # the first run at the new level
    before: float  # median of the runs since the previous change point
    after: float  # median of the runs up to the next one
    pvalue: float  # Welch's t-test of the log figures on either side

    @property
    def change(self) -> float:
        return self.after / self.before - 1.0


def change_points(
    values: Sequence[float], *, max_pvalue: float = MAX_PVALUE, min_size: int = MIN_SEGMENT
) -> list[ChangePoint]:
    """The persistent shifts of ``values`` (positive figures in run order), oldest first."""
    import numpy as np
    import ruptures

    n = len(values)
    if n < 2 * min_size or min(values) <= 0:
        return []
    x = np.log(np.asarray(values, dtype=float))
    sigma = run_noise(values) or 1e-12
    penalty = 2 * sigma**2 * math.log(n)
    ends = ruptures.Pelt(model="l2", min_size=min_size, jump=1).fit(x.reshape(-1, 1)).predict(pen=penalty)
    indices = [int(i) for i in ends[:-1]]
    while indices:
        bounds = [0, *indices, n]
        pvalues = [_welch(x[bounds[i]:bounds[i + 1]], x[bounds[i + 1]:bounds[i + 2]]) for i in range(len(indices))]
        weakest = max(range(len(indices)), key=pvalues.__getitem__)
        if pvalues[weakest] < max_pvalue:
            return [ChangePoint(index, float(np.exp(np.median(x[bounds[i]:index]))),
                                float(np.exp(np.median(x[index:bounds[i + 2]]))), pvalues[i])
                    for i, index in enumerate(indices)]
        del indices[weakest]
    return []


def run_noise(values: Sequence[float]) -> float:
    """A series' run-to-run noise, as the standard deviation of its log figures, estimated robustly from its first
    differences (so that its steps do not inflate it): 1.4826 MAD / sqrt 2, or their standard deviation where more
    than half the differences are equal (an exact series: memory peaks that repeat to the MiB)."""
    import numpy as np

    if len(values) < 3 or min(values) <= 0:
        return 0.0
    diffs = np.diff(np.log(np.asarray(values, dtype=float)))
    sigma = 1.4826 * float(np.median(np.abs(diffs - np.median(diffs)))) / math.sqrt(2)
    return sigma if sigma > 0.0 else float(np.std(diffs)) / math.sqrt(2)


def _welch(left: Sequence[float], right: Sequence[float]) -> float:
    import numpy as np
    from scipy import stats

    a, b = np.asarray(left), np.asarray(right)
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # no spread on either side: any difference is certain
        return 1.0 if a[0] == b[0] else 0.0
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # near-identical figures: scipy warns, the p-value stands
        pvalue = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return pvalue if math.isfinite(pvalue) else 1.0
