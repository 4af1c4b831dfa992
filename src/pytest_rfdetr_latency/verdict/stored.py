"""One scope of a check judged against its stored baseline entry: the launch-bound scopes of a GPU backend scaled by
the host yardstick as far as the baseline file shows they follow it, the backend's typical noise, and the host excuse
(a regression the host's own slowdown explains is inconclusive, and measured again, never a pass)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pytest_rfdetr_latency.verdict import judge
from pytest_rfdetr_latency.verdict.sessions import enough

# The typical noise of the scope's backend for figures normalized by a slope (None: as measured), and its freedom.
TypicalNoise = Callable[[float | None], tuple[float | None, int]]


def scope_verdict(scope: str, statistic: str, stored: Mapping[str, Any], values: Sequence[float],
                  hosts: Sequence[float | None], asked: float, slope: float | None, typical_noise: TypicalNoise,
                  z: float, planned: int | None, normalizes: bool, source: str = "asked",
                  session_noise: float = 0.0) -> judge.Verdict:
    """``values``: each process's figure of the check, first process first; ``hosts``: each one's host yardstick
    (ms); ``slope``: how far the scope follows the yardstick (judge.host_slope; None: not normalized); ``source``:
    "asked" or "default", as the reason names the tolerance; ``session_noise``: the spread between sessions added to
    the processes' (scopes.session_noise). Raises ValueError where the figures cannot be judged."""
    checked = list(values)
    if not all(hosts):
        slope = None  # a process without a yardstick: compare the figures as measured
    recorded, reference = judge.recorded_figures(stored, slope)
    measured_hosts = [float(h) for h in hosts if h]
    notes: tuple[str, ...] = ()
    if reference is not None and slope:
        checked = judge.host_normalized(checked, measured_hosts, reference, slope)
        notes = (f"figures host-normalized: each × ({reference:.3g} ms, the baseline's host yardstick / its own: "
                 f"{', '.join(f'{h:.3g}' for h in measured_hosts)} ms) ** {slope:.2g}",)
    else:
        slope = None
    typical, freedom = typical_noise(slope)
    learned = stored.get("session_spread") or {}  # where scopes.session_noise took it from (sessions.py)
    learned_from = (f"learned from {learned['comparisons']} comparisons of this runner's checks"
                    if enough(learned) else "")
    verdict = judge.judge(scope, statistic, recorded, checked, asked, typical, z=z, planned=planned, notes=notes,
                          typical_freedom=freedom, source=source, session_noise=session_noise,
                          session_from=learned_from)
    # Only the decision over fresh processes may be excused: a first process on a slow host is measured again.
    excusable = z == judge.DECIDE_Z and len(hosts) >= 2 and all(hosts) and normalizes
    if verdict.kind != "regression" or not excusable:
        return verdict
    baseline_hosts = [p.get("host_ms") for p in stored.get("processes", [])]
    if not all(baseline_hosts):
        return verdict
    slowdown = judge.host_slowdown([float(h) for h in baseline_hosts if h], measured_hosts)
    if slowdown is None:
        return verdict
    raw_typical, raw_freedom = typical_noise(None)
    fair = judge.judge(scope, statistic, judge.recorded_figures(stored, None)[0], [v / slowdown for v in values],
                       asked, raw_typical, z=z, planned=planned, typical_freedom=raw_freedom, source=source,
                       session_noise=session_noise, session_from=learned_from)
    return judge.host_explained(verdict, fair, slowdown)
