"""The message a failing case raises: what regressed (head to head: which environment is slower), what was
inconclusive under --rfdetr-strict, how the environment changed, the baseline file, and the command that accepts a
real slowdown (a self-test's has nothing to accept)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from pytest_rfdetr_latency.measure.results import CaseResult
from pytest_rfdetr_latency.measure.settings import Settings
from pytest_rfdetr_latency.report import why
from pytest_rfdetr_latency.verdict import diagnosis, gating
from pytest_rfdetr_latency.verdict.judge import Verdict


def message(case_id: str, result: CaseResult, settings: Settings, against: Path | None, update: str,
            asked_by_name: Callable[[str], bool]) -> str:
    """Empty where nothing failed. ``against``: the other side's interpreter, head to head; ``update``: the command
    that records this case's baseline again."""
    lines: list[str] = []
    regressions = [v for v in result.verdicts.values() if v.kind == "regression"]
    inconclusive = gating.strict_failures(result.verdicts.values(), asked_by_name)
    if regressions and against is not None:
        lines.append(f"{case_id} on {result.device} is slower in {against}'s environment than in "
                     "this one (\"baseline\": this environment's processes; \"now\": the other's):")
        lines += [f"  {v.describe()}" for v in regressions]
    elif regressions:
        lines.append(f"{case_id} on {result.device} regressed:")
        lines += [f"  {v.describe()}" for v in regressions]
    profiled = settings.profile or "profile_process" in result.details  # asked, or a regression was profiled
    for verdict in regressions:
        found = result.diagnosis.get(verdict.scope)
        if found:
            lines += [f"  {line}" for line in why.lines(verdict.scope, found)]
        elif profiled and verdict.scope != "memory":
            lines.append(f"  {verdict.scope}: {why.missing(verdict.scope, result.details, result.baseline)}")
    if settings.no_profile and not result.diagnosis and _would_profile(regressions, result, against):
        lines.append("  not profiled (--rfdetr-no-profile): run without it to see which operators or kernels changed")
    if inconclusive and settings.strict:
        lines.append(f"{case_id}: verdict inconclusive (--rfdetr-strict makes this a failure):")
        lines += [f"  {v.describe()}" for v in inconclusive]
    if against is not None:
        if lines:
            lines.append("  the environments differ: " + "; ".join(result.drift) if result.drift else
                         "  the versions both sides' fingerprints record are the same")
        return "\n".join(lines)
    if result.drift and settings.fail_on_drift:
        lines.append(f"{case_id}: the environment changed since the baseline (--rfdetr-fail-on-drift):")
        lines += [f"  {line}" for line in result.drift]
    if result.outcome == "no-baseline" and settings.strict:
        lines.append(result.message)
    if not lines:
        return ""
    if result.drift and not settings.fail_on_drift:
        lines.append("  note: the environment changed since the baseline: " + "; ".join(result.drift))
    lines.append(f"  baseline file: {result.baseline_file}")
    if settings.inject:
        did = "grew this run's memory" if settings.inject_on == "memory" else "slowed this run"
        lines.append(f"  a self-test: --rfdetr-inject-slowdown={settings.inject:g}% {did} on purpose, so there is "
                     f"nothing to accept (a real slowdown is accepted with: {update})")
    else:
        lines.append(f"  if this slowdown is accepted, update the baseline: {update}")
    return "\n".join(lines)


def _would_profile(regressions: list[Verdict], result: CaseResult, against: Path | None) -> bool:
    """Whether, without --rfdetr-no-profile, a regression here would have been profiled: a timing one, head to head
    (both sides profile it), or one whose recording holds its profile (a stored baseline's)."""
    recorded = result.scopes if against is not None else (result.baseline or {}).get("profile") or {}
    return bool(diagnosis.to_profile({v.scope: v for v in regressions}, recorded))


def decided(case_id: str, verdicts: Mapping[str, Verdict]) -> str:
    """One case's verdicts on one line, shown live (-v) as soon as they are decided, before any profiling: a run
    stopped later (a runner's time limit) has said them already."""
    said = [f"{scope} {v.kind} {v.delta * 100:+.2f}% (threshold {v.threshold * 100:.3g}%)" for scope, v in
            verdicts.items()]
    return f"{case_id}: decided: {'; '.join(said) or 'nothing compared'}"
