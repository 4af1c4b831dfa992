"""The verdict, judged on processes: did a case's scope get slower than its baseline? Pure functions, no I/O.

A process is the unit of measurement. Within one process the sampler pins a scope's figure down to a fraction of a
percent, yet the next process lands elsewhere: its memory placement, its clocks, its host's slow spells all last as
long as the process. So the baseline is several processes, each giving one figure per scope, and a check is judged
by its processes' figures against the baseline's:

- the baseline's figure is the median of its processes', the check's the median of its own;
- the effective threshold is the larger of the tolerance asked for and what the processes' own disagreement allows:
  ``z`` standard errors of the difference of the two medians, where the relative noise of one process is this
  case's spread (baseline and check processes, each group about its own centre) but never below the typical spread
  of the scope on the same backend on this device (pooled over the baseline file's cases), so that three
  processes that happened to agree do not make a hair trigger; ``z`` is taken as Student's t at the same tail
  probability on the degrees of freedom behind that noise;
- the first process is a screen: beyond a lower line (``SCREEN_Z``), the case is measured again in fresh processes
  and the verdict is made over all of them at ``DECIDE_Z``.
"""

from __future__ import annotations

# Over 350 lines on purpose: the stored verdict's statistics (threshold, typical noise, screen and decision lines) are
# read and changed together; stored.py applies them, decision.py loops over them.
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pytest_rfdetr_latency.verdict.stats import log_spread, quantile, significant

# Standard errors a first process must be beyond for fresh processes to be measured, and that the median of all
# processes must be beyond for a regression. docs/gate-power.md derives both from H200 A/A and injected trials.
SCREEN_Z = 2.0
DECIDE_Z = 3.0
MEMORY_SLACK_MIB = 16.0  # allocator rounding: a few MiB either way is not a change in what the case needs
# An allocator's peak that repeats (gating.EXACT_MEMORY): on the H200 a check's first process landed within 3.9 MiB of
# PyTorch's smallest recorded peak (ten checks, two sessions), ONNX Runtime's counted through it within 2.2 MiB
# (docs/gate-power.md, session 8).
EXACT_SLACK_MIB = 4.0
# Degrees of freedom behind a typical spread for it to anchor the noise (two other cases of three processes each).
FLOOR_FREEDOM = 4

Kind = Literal["pass", "regression", "improvement", "inconclusive"]

# Variance of the median of k standard normal draws (simulated; pi / 2k beyond the table).
_MEDIAN_VARIANCE = {1: 1.0, 2: 0.5, 3: 0.449, 4: 0.298, 5: 0.287, 6: 0.215, 7: 0.210, 8: 0.169, 9: 0.166}


def median(values: Sequence[float]) -> float:
    return quantile(values, 0.5)


def median_variance(k: int) -> float:
    """Variance of the median of ``k`` draws, in units of one draw's variance."""
    return _MEDIAN_VARIANCE.get(k, math.pi / (2 * k))


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.3g}%"


@functools.lru_cache(maxsize=256)
def student_quantile(z: float, freedom: int) -> float:
    """Student's t on ``freedom`` degrees of freedom at the normal tail probability of ``z`` (cached: a verdict asks
    for it on every judgement, and a handful of (z, freedom) pairs recur)."""
    from scipy.stats import norm, t

    return float(t.ppf(norm.cdf(z), freedom))


@functools.lru_cache(maxsize=64)
def _chi2_median(freedom: int) -> float:
    from scipy.stats import chi2

    return float(chi2.median(freedom))


@dataclass(frozen=True)
class Threshold:
    """The effective threshold of one comparison, and why it is what it is."""

    asked: float  # the tolerance asked for (marker, option) or the scope's default
    own_noise: float | None  # this case's relative process-to-process spread
    typical_noise: float | None  # the scope's typical spread on this device
    baseline_processes: int
    check_processes: int  # the processes the threshold is stated for
    z: float
    measured: int = 0  # the check's processes measured so far (0: as many as stated)
    own_freedom: int = 0  # degrees of freedom of own_noise
    typical_freedom: int = 0  # degrees of freedom behind typical_noise (summed over the file's entries)
    source: str = "asked"  # where the tolerance came from, as the reason says it: "asked" (by name) or "default"
    session_noise: float = 0.0  # the spread between sessions beyond the processes' (scopes.session_noise)
    session_from: str = ""  # where that spread was learned, as the reason says it ("": the built-in figure)

    @property
    def noise(self) -> float | None:
        known = [n for n in (self.own_noise, self.typical_noise) if n is not None]
        return max(known) if known else None

    @property
    def quantile(self) -> float:
        """Student's t at the tail probability of ``z`` on the degrees of freedom the noise was estimated with: the
        typical spread's pooled ones and this case's own where the typical spread anchors it (at least
        FLOOR_FREEDOM), else this case's own few (a backend with a single case in the baseline file), so that a few
        processes that happened to agree cannot set the threshold; ``z`` itself where nothing was estimated.
        Simulated with the runner's decision (tests/test_stats.py: three cases of three processes, 2000 clean and
        2000 slowed checks at 0.2 % and at 0.4 % process noise), false alarms stay at or below the nominal rate of
        ``z`` and a slowdown of ten times the noise is all but always caught."""
        freedom = self.own_freedom + (self.typical_freedom if self.typical_freedom >= FLOOR_FREEDOM else 0)
        return self.z if freedom == 0 else student_quantile(self.z, freedom)

    @property
    def bound(self) -> float | None:
        """What the processes' disagreement allows: z standard errors of the difference of the two medians."""
        if self.noise is None:
            return None
        both = median_variance(self.baseline_processes) + median_variance(self.check_processes)
        # Each term at its own tail: the processes' noise at Student's t on its few degrees of freedom, the spread
        # between sessions (measured over many checks, benchmarks/session_noise.py) at z.
        return math.exp(math.hypot(self.quantile * self.noise * math.sqrt(both), self.z * self.session_noise)) - 1.0

    @property
    def value(self) -> float:
        bound = self.bound
        return self.asked if bound is None else max(self.asked, bound)

    @property
    def widened(self) -> bool:
        return self.value > self.asked

    def reason(self) -> str:
        counted = f"{self.baseline_processes}+{self.check_processes} processes"
        if self.measured and self.measured < self.check_processes:
            counted = (f"{self.baseline_processes} baseline processes; stated for a check confirmed in "
                       f"{self.check_processes}")
        if self.noise is None:
            return (f"{_pct(self.value)}: {self.source}; process-to-process noise unknown ({counted}: record the "
                    "baseline with --rfdetr-save-processes=3 or more)")
        own = self.own_noise is not None and self.noise == self.own_noise
        whose = "this case's" if own else "the typical (this scope and backend on this device)"
        noise = f"{whose} process-to-process noise {_pct(self.noise)} ({counted})"
        if self.session_noise or self.session_from:
            noise += f" and {_pct(self.session_noise)} between sessions"
            noise += f" ({self.session_from})" if self.session_from else ""
        if self.widened:
            return f"{_pct(self.value)}: {noise}; {self.source} {_pct(self.asked)}"
        return f"{_pct(self.value)}: {self.source}; {noise} would allow {_pct(self.bound or 0.0)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "value": round(self.value, 6),
            "asked": self.asked,
            "bound": None if self.bound is None else round(self.bound, 6),
            "own_noise": None if self.own_noise is None else round(self.own_noise, 6),
            "typical_noise": None if self.typical_noise is None else round(self.typical_noise, 6),
            "processes": [self.baseline_processes, self.check_processes],
            "z": self.z,
            "quantile": round(self.quantile, 4),
            "freedom": [self.own_freedom, self.typical_freedom],
            "session_noise": self.session_noise,
            "session_from": self.session_from or None,
            "reason": self.reason(),
        }


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    scope: str  # a timing scope, or "memory"
    statistic: str
    baseline: float  # the median of the baseline's processes
    current: float  # the median of this check's processes
    threshold: float  # effective, as a fraction
    reason: str  # why the threshold is what it is
    baseline_processes: tuple[float, ...] = ()
    processes: tuple[float, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    unit: str = "ms"
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def delta(self) -> float:
        return self.current / self.baseline - 1.0

    def describe(self) -> str:
        def side(value: float, values: Sequence[float]) -> str:
            if len(values) < 2:
                return f"{value:.4g} {self.unit}"
            listed = ", ".join(f"{v:.4g}" for v in values)
            return f"{value:.4g} {self.unit} ({len(values)} processes: {listed})"

        sign = "+" if self.delta >= 0 else ""
        text = (
            f"{self.scope} {self.statistic}: baseline {side(self.baseline, self.baseline_processes)}, now "
            f"{side(self.current, self.processes)}, {sign}{self.delta * 100:.2f}% (threshold {self.reason}) -> "
            f"{self.kind}"
        )
        return text + "".join(f"; {note}" for note in self.notes)

    def with_kind(self, kind: Kind, note: str) -> Verdict:
        """The verdict of another kind, for the reason ``note``; no longer unresolved, whatever it was."""
        detail = {key: value for key, value in self.detail.items() if key != "unresolved"}
        return replace(self, kind=kind, notes=(*self.notes, note), detail=detail)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "scope": self.scope,
            "statistic": self.statistic,
            "unit": self.unit,
            "baseline": significant(self.baseline),
            "current": significant(self.current),
            "delta": significant(self.delta, 6),  # printed to 0.01 % in the table as in the message
            "threshold": round(self.threshold, 6),
            "threshold_reason": self.reason,
            "baseline_processes": [significant(v) for v in self.baseline_processes],
            "processes": [significant(v) for v in self.processes],
            "notes": list(self.notes),
            "detail": dict(self.detail),
        }


def judge(
    scope: str,
    statistic: str,
    baseline: Sequence[float],
    check: Sequence[float],
    asked: float,
    typical_noise: float | None = None,
    z: float = DECIDE_Z,
    planned: int | None = None,
    notes: tuple[str, ...] = (),
    typical_freedom: int = FLOOR_FREEDOM,
    source: str = "asked",
    session_noise: float = 0.0,
    session_from: str = "",
) -> Verdict:
    """Compare the check's processes' figures of one scope with the baseline's. ``source``: how the reason names the
    tolerance's origin, "asked" (by name) or "default"; ``session_noise``: the spread between sessions added to the
    processes' (scopes.session_noise), ``session_from`` where it was learned.

    ``regression`` when the median of the check's processes lies beyond the baseline's median by more than the
    effective threshold; ``improvement`` when below by as much (it passes, and says so); ``pass`` otherwise.
    ``planned`` is how many processes the threshold is stated for (default: those given): a first process that
    stayed below the screen is shown against the threshold that confirmed processes would have faced.
    """
    if not baseline or not check:
        raise ValueError(f"{scope}: a verdict needs at least one baseline and one checked process")
    bad = [v for v in (*baseline, *check) if not math.isfinite(v) or v <= 0]
    if bad:
        raise ValueError(f"{scope}: process figure {bad[0]!r} ms is not a positive number")
    reference, current = median(baseline), median(check)
    own, freedom = log_spread([baseline, check])
    threshold = Threshold(asked, own, typical_noise, len(baseline), planned or len(check), z, len(check), freedom,
                          typical_freedom if typical_noise is not None else 0, source, session_noise, session_from)
    delta = current / reference - 1.0
    kind: Kind = "pass"
    if delta > threshold.value:
        kind = "regression"
    elif delta < -threshold.value:
        kind = "improvement"
    return Verdict(
        kind, scope, statistic, reference, current, threshold.value, threshold.reason(), tuple(baseline),
        tuple(check), notes=notes, detail=threshold.to_json(),
    )


def unresolved(verdict: Verdict, resolve: float) -> Verdict:
    """A pass whose threshold is wider than ``resolve``, the coarsest that still gates: unresolved (inconclusive),
    with the finest change it could have caught. A regression or an improvement beyond even that threshold stands."""
    if verdict.kind != "pass" or verdict.threshold <= resolve:
        return verdict
    return replace(
        verdict.with_kind("inconclusive", (
            f"unresolved: this comparison can detect {_pct(verdict.threshold)} and no less, coarser than the "
            f"{_pct(resolve)} it must resolve; more baseline and confirming processes, or a quieter runner, would "
            "resolve it")),
        detail={**verdict.detail, "detectable": round(verdict.threshold, 6), "resolve": resolve, "unresolved": True},
    )


def host_normalized(values: Sequence[float], hosts: Sequence[float], reference: float, slope: float) -> list[float]:
    """Each process's figure as if its host had run at the ``reference`` speed: figure × (reference / its own host
    yardstick) ** slope. The slope is how strongly this scope and backend follow the host (host_slope): 1 for work
    that is all host, less where part of the time is the GPU's."""
    return [v * (reference / h) ** slope for v, h in zip(values, hosts)]


def host_slope(entries: Iterable[Mapping[str, Any]], scope: str, backend: str) -> float | None:
    """How a scope's figures follow the host yardstick on this device: the slope of log figure on log yardstick,
    pooled within the baseline file's entries of this scope and backend (each about its own mean), in [0, 1]. None
    (no normalising) without enough processes, or where the figures do not follow the host (correlation < 0.5).
    On the H200 hosts the launch-bound scopes followed it with correlations of 0.76-0.95 and slopes of 0.5-0.85;
    the device scope and onnx-cpu did not (docs/gate-power.md)."""
    pairs: list[tuple[float, float]] = []
    groups = 0
    for entry in entries:
        stored = entry.get("scopes", {}).get(scope) if entry.get("backend") == backend else None
        points = [(float(p["value_ms"]), p.get("host_ms")) for p in (stored or {}).get("processes", [])]
        if len(points) < 2 or any(h is None or h <= 0 for _, h in points):
            continue
        logs = [(math.log(v), math.log(float(h))) for v, h in points]
        mean_v = sum(v for v, _ in logs) / len(logs)
        mean_h = sum(h for _, h in logs) / len(logs)
        pairs += [(v - mean_v, h - mean_h) for v, h in logs]
        groups += 1
    if len(pairs) - groups < 4:
        return None
    sxx = sum(h * h for _, h in pairs)
    syy = sum(v * v for v, _ in pairs)
    sxy = sum(v * h for v, h in pairs)
    if sxx <= 0 or syy <= 0 or sxy / math.sqrt(sxx * syy) < 0.5:
        return None
    return min(1.0, max(0.0, sxy / sxx))


def host_slowdown(baseline_hosts: Sequence[float], check_hosts: Sequence[float]) -> float | None:
    """How much slower the check's host ran than the baseline's, as the ratio of their median yardsticks, when the
    yardsticks differ beyond their own process-to-process noise (judged like a scope, nothing asked); else None."""
    if not baseline_hosts or not check_hosts:
        return None
    verdict = judge("host yardstick", "median", baseline_hosts, check_hosts, 0.0)
    return verdict.current / verdict.baseline if verdict.kind == "regression" else None


def host_explained(verdict: Verdict, fair: Verdict, slowdown: float) -> Verdict:
    """A launch-bound scope judged slower while its host ran ``slowdown`` times slower than at recording. Such a
    scope takes at most as long as its host work, which scales with the host: ``fair`` is the same comparison of the
    check's figures divided by the whole host slowdown (slope 1, the most a slower host can explain). Where that
    passes, the slowdown may be the host's as far as this run can tell: inconclusive, never a pass (the yardstick
    runs in the measured process, so a change that slows its host work slows the yardstick too), saying what it
    could not tell apart. Where it still fails, the regression stands."""
    if verdict.kind != "regression" or fair.kind == "regression":
        return verdict
    return verdict.with_kind("inconclusive", (
        f"explained by the host: its yardstick ran {_pct(slowdown - 1.0)} slower than at recording, and the figure "
        f"divided by that is {fair.delta * 100:+.2f}%; a slowdown of this scope up to that much cannot be told apart "
        "from the host's in this run (the device scope is unaffected)"))


def settled(verdict: Verdict, planned: int) -> bool:
    """Whether more fresh processes could still change a confirmation's outcome: the median of ``planned``
    processes lies beyond the line once more than half of them do, and cannot once half of them do not."""
    line = verdict.baseline * (1.0 + verdict.threshold)
    beyond = sum(1 for v in verdict.processes if v > line)
    within = len(verdict.processes) - beyond
    return beyond > planned / 2 or within >= planned / 2 or len(verdict.processes) >= planned


def recorded_figures(stored: Mapping[str, Any], slope: float | None) -> tuple[list[float], float | None]:
    """A scope's baseline processes' figures, host-normalized with ``slope`` to their median yardstick when a slope
    is given and every process has a yardstick; and that reference yardstick (None: not normalized)."""
    processes = stored.get("processes", [])
    values = [float(p["value_ms"]) for p in processes]
    hosts = [p.get("host_ms") for p in processes]
    if not slope or not hosts or any(h is None or h <= 0 for h in hosts):
        return values, None
    reference = median([float(h) for h in hosts])
    return host_normalized(values, [float(h) for h in hosts], reference, slope), reference


def typical_noise(
    entries: Iterable[Mapping[str, Any]], scope: str, backend: str, slope: float | None = None
) -> tuple[float | None, int]:
    """The process-to-process spread of ``scope`` on ``backend`` typical of the baseline entries recorded with
    several processes (what this kind of measurement does on this device, whatever the model), and the degrees of
    freedom behind it: the median of the entries' variances, each about its own centre, divided by the median of
    chi-square over its degrees of freedom, so that it estimates the common variance without bias (a plain median
    of spreads on two degrees of freedom each lies about 0.83 of it) and one case with a wild process cannot widen
    every other case's threshold (a variance-weighted pool would: one 10 % process among ten cases of 0.2 % made it
    1.75 %)."""
    variances: list[float] = []
    degrees: list[int] = []
    for entry in entries:
        stored = entry.get("scopes", {}).get(scope) if entry.get("backend") == backend else None
        if not stored:
            continue
        values, _ = recorded_figures(stored, slope)
        spread, df = log_spread([values])
        if spread is not None and df:
            variances.append(spread * spread)
            degrees.append(df)
    if not variances:
        return None, 0
    typical_df = int(median([float(d) for d in degrees]))
    return math.sqrt(median(variances) * typical_df / _chi2_median(typical_df)), sum(degrees)


def judge_memory(baseline_mib: Sequence[float], checked_mib: Sequence[float], tolerance: float,
                 exact: bool = True, source: str = "asked") -> Verdict:
    """Peak device memory against the baseline processes' peaks, at the tolerance asked plus the allocator's slack.

    ``exact``: the PyTorch allocator's peak, which is not noisy: it repeats to the tenth of a MiB in the same order of
    cases. Where the baseline's processes disagree, it is because of what ran before in each (on the H200 the first
    case of a model in a fresh process kept one more FP32 copy of the model, +130 MiB), and what lingers only ever
    adds: the reference is the smallest peak, the case's own need. Widening the threshold by that disagreement, as a
    timing scope's is, would pass any growth (826 % on the H200). Otherwise (NVML's used memory of the whole device,
    which also counts what the driver loads lazily and what other processes hold) it is judged like a timing scope
    against the median, its threshold widened by the processes' disagreement, and the summary shows how wide."""
    reference = min(baseline_mib) if exact else median(baseline_mib)
    current = median(checked_mib)
    slack = EXACT_SLACK_MIB if exact else MEMORY_SLACK_MIB
    asked = tolerance + slack / max(reference, 1.0)
    if not exact and min(*baseline_mib, *checked_mib) > 0:
        verdict = judge("memory", "peak", baseline_mib, checked_mib, asked, source=source)
        return replace(verdict, unit="MiB", reason=f"{verdict.reason} (the tolerance includes {slack:g} "
                                                   "MiB of allocator slack)")
    kind: Kind = "pass"
    if current > reference * (1.0 + tolerance) + slack:
        kind = "regression"
    elif current < reference * (1.0 - tolerance) - slack:
        kind = "improvement"
    reason = f"{_pct(asked)}: {source}, with {slack:g} MiB of allocator slack"
    if max(baseline_mib) - min(baseline_mib) > slack:
        reason += (f"; the baseline's processes peaked at {min(baseline_mib):.1f}-{max(baseline_mib):.1f} MiB (what "
                   "ran before in each), judged against the smallest")
    return Verdict(kind, "memory", "peak", max(reference, 1e-9), current, asked, reason, tuple(baseline_mib),
                   tuple(checked_mib), unit="MiB", detail={"asked": tolerance, "slack_mib": slack})


# How much a verdict matters, most first: a case is as bad as its worst scope (the report orders cases so too).
SEVERITY: dict[str, int] = {"regression": 0, "inconclusive": 1, "improvement": 3, "pass": 4}


def worst(verdicts: Sequence[Verdict]) -> Kind:
    """The case's overall verdict: any regression, else any inconclusive, else any improvement, else pass."""
    return min((v.kind for v in verdicts), key=SEVERITY.__getitem__, default="pass")
