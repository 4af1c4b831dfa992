"""What gates: which stored-baseline verdicts can fail a run, and which only say what this runner cannot resolve.

A comparison whose threshold is wider than its scope's limit (scopes.STORED_RESOLVE, or twice a tolerance asked)
is unresolved rather than passed (judge.unresolved). Under ``--rfdetr-strict`` every inconclusive verdict fails the
run, except an unresolved one of a scope nobody asked for by name: the default gating set is what the baseline can
resolve, and the summary lists the rest as not gating on this runner. Here too: the verdicts of what a run could
not see (a scope or a memory peak the baseline has and this run lost), and the memory verdict's choice of rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pytest_rfdetr_latency.verdict.judge import Verdict, unresolved
from pytest_rfdetr_latency.verdict.paired import RESOLVE_FACTOR
from pytest_rfdetr_latency.verdict.scopes import STORED_RESOLVE


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
               planned: int, on_cpu: Callable[[str], bool] = lambda case_id: False) -> dict[str, dict[str, float]]:
    """What a check against these freshly recorded entries could catch, per case and scope: the threshold it would
    face with ``planned`` processes (judge.Threshold at the decision's z), each case's own spread floored by the
    typical one of its backend pooled over ``entries``, and the spread between sessions of its scope and backend
    (``on_cpu`` of a case id: whether its work is the CPU's; scopes.session_noise). Where it is above the scope's
    limit, that scope of that case will be unresolved on this runner."""
    from pytest_rfdetr_latency.verdict.judge import DECIDE_Z, Threshold, typical_noise
    from pytest_rfdetr_latency.verdict.scopes import session_noise
    from pytest_rfdetr_latency.verdict.stats import log_spread

    found: dict[str, dict[str, float]] = {}
    typicals: dict[tuple[str, str], tuple[float | None, int]] = {}  # one per scope and backend, not per case
    for case_id, entry in entries.items():
        for scope, stored in entry.get("scopes", {}).items():
            values = [float(p["value_ms"]) for p in stored.get("processes", [])]
            own, own_freedom = log_spread([values])
            key = (scope, str(entry.get("backend")))
            if key not in typicals:
                typicals[key] = typical_noise(entries.values(), *key)
            typical, typical_freedom = typicals[key]
            threshold = Threshold(asked(scope), own, typical, len(values), planned, DECIDE_Z,
                                  own_freedom=own_freedom, typical_freedom=typical_freedom if typical else 0,
                                  session_noise=session_noise(scope, key[1], on_cpu(case_id), stored))
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


NVML_TAKING_TURNS = ("NVML's used memory is the whole device's, and with both sides' processes live at once it counts "
                     "the other's too (--rfdetr-against-sequential judges it)")


def unmeasured(scope: str, stored: Mapping[str, Any], why: str) -> Verdict:
    """A scope the baseline holds and this run could not measure (a forward that no longer captures as a CUDA graph,
    say): the gate's finest measurement gone is not a pass."""
    reference = float(stored["value_ms"])
    return Verdict("inconclusive", scope, str(stored["statistic"]), reference, reference, 0.0, "not measured",
                   notes=(f"the baseline has it; this run could not measure it: {why}",))


# Memory figures shown to repeat on the H200: PyTorch's allocator, and ONNX Runtime's counted through it in a session
# of its own (ort-allocator: within 2.2 MiB over a recording of 3 processes and a clean check; docs/gate-power.md,
# session 8), judged against the baseline's smallest peak plus a slack. NVML's device-wide figure is judged like a
# timing scope, capped; only it sees the other side's process head to head.
EXACT_MEMORY = ("torch-allocator", "ort-allocator")


def memory_verdict(stored: Mapping[str, Any], memory: Mapping[str, Any] | None,
                   processes: Sequence[Mapping[str, Any]], tolerance: float, by_name: bool,
                   blind_because: str | None = None) -> Verdict | None:
    """The memory verdict of a case: a repeatable allocator's peak (EXACT_MEMORY) of the first process, which runs the
    cases in the recording's first order, against the baseline's processes (fresh processes re-measure timings: their
    first case of a model peaks higher); other figures over every process measured, judged like a scope and capped
    like one (unresolved where too wide, or, NVML's, where ``blind_because`` says this run cannot see it). None where
    the baseline has no peak; inconclusive where it has one and this run measured none, or another kind."""
    from pytest_rfdetr_latency.verdict.judge import judge_memory

    if not stored.get("processes"):
        return None
    if not memory or stored.get("kind") != memory["kind"]:
        reference = float(stored.get("peak_mib") or max(stored["processes"]))
        now = (memory or {}).get("kind")
        why = f"this run measured {now} memory, the baseline {stored.get('kind')}" if now else "this run measured none"
        return Verdict("inconclusive", "memory", "peak", reference, reference, 0.0, "not measured",
                       notes=(f"the baseline has a peak; {why}",), unit="MiB")
    exact = memory["kind"] in EXACT_MEMORY
    checked = [float(memory["peak_mib"])] + ([] if exact else [
        float(p["memory"]["peak_mib"]) for p in processes if (p.get("memory") or {}).get("kind") == memory["kind"]])
    verdict = judge_memory([float(v) for v in stored["processes"]], checked, tolerance, exact=exact,
                           source="asked" if by_name else "default")
    if exact:
        return verdict
    if blind_because and memory["kind"] == "nvml-device-used":
        return blind(verdict, blind_because)
    return capped(verdict, "memory", tolerance if by_name else None)
