"""What gates: which stored-baseline verdicts can fail a run, and which only say what this runner cannot resolve.

A comparison whose threshold is wider than its scope's limit (scopes.STORED_RESOLVE, or twice a tolerance asked)
is unresolved rather than passed (judge.unresolved). Under ``--rfdetr-strict`` every inconclusive verdict fails the
run, except an unresolved one of a scope nobody asked for by name: the default gating set is what the baseline can
resolve, and the summary lists the rest as not gating on this runner.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pytest_rfdetr_latency.judge import Verdict, unresolved
from pytest_rfdetr_latency.paired import RESOLVE_FACTOR
from pytest_rfdetr_latency.scopes import STORED_RESOLVE


def resolve_limit(scope: str, asked: float | None) -> float:
    """The coarsest threshold a comparison of ``scope`` may have and still gate: the scope's limit, or twice a
    tolerance ``asked`` for by name where that is wider (None: the default tolerance)."""
    return max(STORED_RESOLVE[scope], RESOLVE_FACTOR * (asked or 0.0))


def capped(verdict: Verdict, scope: str, asked: float | None) -> Verdict:
    """``verdict``, unresolved where its threshold is coarser than the scope's limit."""
    return unresolved(verdict, resolve_limit(scope, asked))


def blind(verdict: Verdict, why: str) -> Verdict:
    """``verdict`` as unresolved whatever its figures: this run cannot see the scope, for the reason ``why``."""
    from dataclasses import replace

    return replace(verdict.with_kind("inconclusive", f"unresolved: {why}"),
                   detail={**verdict.detail, "unresolved": True, "resolve": 0.0, "detectable": None})


def is_unresolved(verdict: Verdict) -> bool:
    return verdict.kind == "inconclusive" and bool(verdict.detail.get("unresolved"))


def strict_failures(verdicts: Iterable[Verdict], asked_by_name: Callable[[str], bool]) -> list[Verdict]:
    """The verdicts ``--rfdetr-strict`` fails: every inconclusive one, but an unresolved one only where its scope or
    its tolerance was asked for by name (``asked_by_name``)."""
    return [v for v in verdicts if v.kind == "inconclusive" and (not is_unresolved(v) or asked_by_name(v.scope))]


def detectable(entries: Mapping[str, Mapping[str, Any]], asked: Callable[[str], float],
               planned: int) -> dict[str, dict[str, float]]:
    """What a check against these freshly recorded entries could catch, per case and scope: the threshold it would
    face with ``planned`` processes (judge.Threshold at the decision's z), each case's own spread floored by the
    typical one of its backend pooled over ``entries``. Where it is above the scope's limit, that scope of that
    case will be unresolved on this runner."""
    from pytest_rfdetr_latency.judge import DECIDE_Z, Threshold, typical_noise
    from pytest_rfdetr_latency.stats import log_spread

    found: dict[str, dict[str, float]] = {}
    for case_id, entry in entries.items():
        for scope, stored in entry.get("scopes", {}).items():
            values = [float(p["value_ms"]) for p in stored.get("processes", [])]
            own, own_freedom = log_spread([values])
            typical, typical_freedom = typical_noise(entries.values(), scope, str(entry.get("backend")))
            threshold = Threshold(asked(scope), own, typical, len(values), planned, DECIDE_Z,
                                  own_freedom=own_freedom, typical_freedom=typical_freedom if typical else 0)
            found.setdefault(case_id, {})[scope] = round(threshold.value, 6)
    return found


def detectable_lines(found: Mapping[str, Mapping[str, float]], asked: Callable[[str], float | None]) -> list[str]:
    """The recording's summary of ``detectable``: one line per case, the scopes that will not gate marked
    (``asked``: a tolerance asked for by name, or None)."""
    lines = []
    for case_id, scopes in found.items():
        parts = []
        for scope, value in scopes.items():
            limit = resolve_limit(scope, asked(scope))
            parts.append(f"{scope} {value * 100:.3g}%" + (f" (not gating: must resolve {limit * 100:.3g}%)"
                                                          if value > limit else ""))
        lines.append(f"can catch on this runner: {case_id}: {', '.join(parts)}")
    return lines
