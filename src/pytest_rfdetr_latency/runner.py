"""One case, start to end: measure it in this process, then record it, or judge it against the baseline's processes,
measuring it again in fresh processes when it moved past its threshold, and pass, fail or skip the test.

Nothing here imports pytest: the plugin hands in ``skip``, ``fail``, ``publish`` and ``spawn`` (the case's test in a
fresh pytest process: what that process measured)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from pytest_rfdetr_latency.measure.case import CaseMeasurement
from pytest_rfdetr_latency.measure.cases import Case, works_on_cpu
from pytest_rfdetr_latency.measure.environment import drift
from pytest_rfdetr_latency.measure.processes import ChildOutcome
from pytest_rfdetr_latency.measure.results import CaseError, CaseResult, update_command
from pytest_rfdetr_latency.measure.session import LatencySession
from pytest_rfdetr_latency.report import failures
from pytest_rfdetr_latency.store import baselines
from pytest_rfdetr_latency.verdict import budgets, decision, diagnosis, gating, judge
from pytest_rfdetr_latency.verdict import stored as stored_scope
from pytest_rfdetr_latency.verdict.scopes import DEFAULT_THRESHOLDS, HEAD_TO_HEAD_THRESHOLDS, HOST_BOUND, session_noise

if TYPE_CHECKING:
    from pytest_rfdetr_latency.measure.headtohead import HeadToHead

# (injected slowdown, block size per scope, profile it) -> what the fresh process measured
Spawn = Callable[[float | None, Mapping[str, int], bool], ChildOutcome]


class LatencyCase:
    """One model × backend case: ``check()`` measures it and passes, fails or skips the test accordingly."""

    def __init__(
        self,
        session: LatencySession,
        case: Case,
        *,
        skip: Callable[[str], NoReturn],
        fail: Callable[[str], NoReturn],
        publish: Callable[[CaseResult], None],
        scopes: tuple[str, ...] | None = None,
        thresholds: Mapping[str, float] | None = None,
        budgets: tuple[budgets.Budget, ...] = (),
        spawn: Spawn | None = None,
        node: str = "",
        versus: HeadToHead | None = None,
    ) -> None:
        self.session = session
        self.case = case
        self.id = case.id
        self.scopes = scopes or session.settings.scopes
        self._scopes_given = scopes is not None
        self._skip, self._fail, self._publish = skip, fail, publish
        self._thresholds = dict(thresholds or {})
        self._budgets = budgets
        self._spawn, self._node, self._versus = spawn, node, versus

    def __repr__(self) -> str:
        return f"<LatencyCase {self.id} on {self.session.device.spec}>"

    def threshold(self, scope: str) -> float:
        """The tolerance asked for ``scope``: the marker's, then --rfdetr-tolerance, then the scope's default (head
        to head: scopes.HEAD_TO_HEAD_THRESHOLDS). The verdict widens it where the processes disagree by more."""
        if scope in self._thresholds:
            return self._thresholds[scope]
        defaults = HEAD_TO_HEAD_THRESHOLDS if self._versus is not None else DEFAULT_THRESHOLDS
        return self.session.settings.tolerance.for_scope(scope, defaults[scope])

    def check(self, inject: float | None = None) -> CaseResult:
        """Measure, then record (--save-baseline) or compare with the baseline; fail or skip the test as needed. In a
        head-to-head run both sides were measured before the first case (headtohead.py): this judges them, and
        ``inject`` has no say (--rfdetr-inject-slowdown slows the other side's processes)."""
        __tracebackhide__ = True
        if self._versus is not None:
            return self._check_head_to_head(self._versus)
        settings = self.session.settings
        inject = settings.inject if inject is None else inject
        measurement = CaseMeasurement(self.session, self.case, self.scopes, skip=self._skip, fail=self._fail,
                                      publish=self._publish, node=self._node)
        result = measurement.run(inject)
        if settings.child_report is not None:
            # A fresh process of a recording or a confirmation: hand the measurement back, judge nothing.
            self._publish(result)
            return result
        if settings.save_baseline:
            self._check_budgets(result)
            result.outcome = "saved"
            result.message = f"recorded for {self.session.device.name} (saved to {self.session.baseline_path})"
            self._publish(result)
            return result
        entry = self.session.baseline_entry(self.id)
        if entry is None:
            result.outcome = "no-baseline"
            result.message = self._no_baseline_reason()
            self._publish(result)
            if settings.strict:
                self._fail(result.message + " (--rfdetr-strict makes this a failure)")
            self._skip(result.message)
        self._refuse_another_workload(result, entry)
        self._judge(result, entry, inject)
        self.session.progress(failures.decided(self.id, result.verdicts))
        self._profile(result, entry, inject)
        if result.details.get("profile") and entry.get("profile"):  # profiled at recording, and now
            result.diagnosis = diagnosis.for_result(result.verdicts, result.details["profile"], entry["profile"])
        return self._conclude(result)

    def _profile(self, result: CaseResult, entry: dict[str, Any], inject: float | None) -> None:
        """After the verdict, one fresh process profiles (diagnosis.to_profile says which scopes); it judges nothing."""
        scopes = diagnosis.to_profile({s: v for s, v in result.verdicts.items() if s in result.scopes},
                                      entry.get("profile") or {}, *self.session.settings.profiling)
        if scopes and self._spawn is not None:
            outcome = self._spawn(inject, {s: v.block_size for s, v in result.scopes.items()}, True)
            diagnosis.take_profiled(result.details, scopes, [r for r in outcome.results if r.get("id") == self.id],
                                    outcome.error, outcome.seconds)

    def _conclude(self, result: CaseResult) -> CaseResult:
        """Budgets, then publish the judged result, then fail the test on what failed."""
        __tracebackhide__ = True
        self._check_budgets(result)
        self._publish(result)
        failures = self._failures(result)
        if failures:
            self._fail(failures)
        return result

    # Head to head -------------------------------------------------------------------------------------------

    def _check_head_to_head(self, versus: HeadToHead) -> CaseResult:
        """Judge the other environment's processes of this case against this environment's (headtohead.py)."""
        __tracebackhide__ = True
        from pytest_rfdetr_latency.measure.headtohead import OTHER, THIS, diagnose, judge_scope

        mine, theirs = versus.of(THIS, self.id), versus.of(OTHER, self.id)
        if (not mine or not theirs) and versus.stopped and not versus.errors[THIS if not mine else OTHER]:
            self._skip(f"{self.id}: head to head: not measured on both sides: the run was stopped ({versus.why})")
        if not mine or not theirs:
            side, errors = (THIS, versus.errors[THIS]) if not mine else (OTHER, versus.errors[OTHER])
            where = "this environment" if side == THIS else str(versus.python)
            why = f": {errors[-1]}" if errors else " (it reported the case unavailable or skipped it)"
            message = f"{self.id}: head to head: no process of {where} measured it{why}"
            if self.session.settings.strict:
                self._fail(message + " (--rfdetr-strict makes this a failure)")
            self._skip(message)
        result = CaseResult.from_process(self.case, theirs[0], self._node, str(self.session.baseline_path))
        result.processes = [_process_record(r) for r in theirs[1:]]
        entry = self.session.baseline_entry(self.id)
        assert entry is not None
        self._refuse_another_workload(result, entry)
        result.baseline = entry
        result.drift = drift(entry.get("fingerprint", {}), result.fingerprint, tuple(self.session.extra_fingerprint),
                             self.case.backend)
        try:
            verdicts = {scope: judge_scope(versus, self.id, self.case.backend, scope, stats.statistic,
                                           self.threshold(scope), self._source(scope))
                        for scope, stats in result.scopes.items() if scope in entry["scopes"]}
        except ValueError as exc:
            raise CaseError(f"{self.id}: {exc}") from exc
        for scope in self.scopes:
            if scope in entry["scopes"] and scope not in result.scopes:
                verdicts[scope] = self._unmeasured(scope, entry["scopes"][scope], result)
        memory = self._memory_verdict(result, entry)
        if memory is not None:
            verdicts["memory"] = memory
        result.verdicts = verdicts
        result.outcome = judge.worst(list(verdicts.values())) if verdicts else "no-baseline"
        result.details["head_to_head"] = versus.details(len(mine), len(theirs))
        self.session.progress(failures.decided(self.id, verdicts))
        diagnose(versus, self._node, result, *self.session.settings.profiling)  # both sides profiled, once decided
        return self._conclude(result)

    # Judging ------------------------------------------------------------------------------------------------

    def _refuse_another_workload(self, result: CaseResult, entry: dict[str, Any]) -> None:
        """A baseline of other weights, images, seed or sampling measured other work: never compared. Only what both
        sides recorded is held against each other (an entry from before a field existed is not refused for it)."""
        __tracebackhide__ = True
        recorded = entry.get("workload") or {}
        differing = [f"{key}={recorded[key]!r} there, {value!r} here" for key, value in result.workload.items()
                     if key in recorded and recorded[key] != value]
        if not differing:
            return
        result.outcome = "refused"
        result.baseline = entry
        result.message = (
            f"{self.id}: the baseline measured another workload ({'; '.join(differing)}), so it is not compared. "
            f"Record a baseline of this workload: {self._update_command(self.id)}"
        )
        self._publish(result)
        self._fail(result.message)

    def normalizes(self, scope: str) -> bool:
        """Whether ``scope``'s figures may be scaled by the host yardstick: the launch-bound scopes of a GPU backend,
        by as much as the baseline file shows they follow it (judge.host_slope)."""
        return scope in HOST_BOUND and not self._on_cpu

    @property
    def _on_cpu(self) -> bool:
        return works_on_cpu(self.case.backend, self.session.device.is_cuda)

    def _source(self, scope: str) -> str:
        """How a reason names the tolerance of ``scope``: asked for by name, or the default."""
        return "asked" if self.tolerance_given(scope) else "default"

    def _verdict(
        self, result: CaseResult, scope: str, stored: dict[str, Any], z: float, planned: int | None
    ) -> judge.Verdict:
        if stored["statistic"] != result.scopes[scope].statistic:
            raise CaseError(
                f"{self.id}: {scope}: the baseline holds the {stored['statistic']} and this run the "
                f"{result.scopes[scope].statistic}; record the baseline again: {self._update_command()}"
            )
        normalizes = self.normalizes(scope)
        try:
            return stored_scope.scope_verdict(
                scope, result.scopes[scope].statistic, stored, result.process_values(scope),
                result.process_hosts(scope), self.threshold(scope),
                self.session.host_slope(scope, self.case.backend) if normalizes else None,
                lambda slope: self.session.typical_noise(scope, self.case.backend, slope), z, planned, normalizes,
                self._source(scope), session_noise(scope, self.case.backend, self._on_cpu, stored))
        except ValueError as exc:
            raise CaseError(f"{self.id}: {exc}") from exc

    def _verdicts(self, result: CaseResult, entry: dict[str, Any], z: float, planned: int | None) -> dict[str, Any]:
        return {scope: gating.capped(self._verdict(result, scope, entry["scopes"][scope], z, planned), scope,
                                     self.threshold(scope) if self.tolerance_given(scope) else None)
                for scope in result.scopes if scope in entry["scopes"]}

    def tolerance_given(self, scope: str) -> bool:
        """Whether a tolerance was asked for ``scope``: by the case's marker or an option."""
        settings = self.session.settings
        if scope == "memory":
            return settings.memory_tolerance_given
        return scope in self._thresholds or settings.tolerance.given_for(scope)

    def asked_by_name(self, scope: str) -> bool:
        """Whether ``scope`` or its tolerance was asked for: by the case's marker, --rfdetr-scopes or a tolerance."""
        return self.tolerance_given(scope) or (scope != "memory" and (
            self._scopes_given or self.session.settings.scopes_explicit))

    def _judge(
        self, result: CaseResult, entry: dict[str, Any], inject: float | None, measured: int | None = None
    ) -> None:
        """Screen this process's figures; measure a case that moved past its threshold again in fresh processes;
        judge every scope over all of them. With ``measured``, every process is already there (head to head)."""
        session = self.session
        result.baseline = entry
        result.drift = drift(entry.get("fingerprint", {}), result.fingerprint, tuple(session.extra_fingerprint),
                             self.case.backend)
        planned = measured or (1 + session.confirm if self._spawn is not None else 1)
        failed: list[str] = []
        spent = 0.0

        def measure_more(suspects: Sequence[str]) -> bool:
            nonlocal spent
            assert self._spawn is not None
            outcome = self._spawn(inject, {s: v.block_size for s, v in result.scopes.items()}, False)
            spent += outcome.seconds
            found = [r for r in outcome.results
                     if r.get("id") == self.id and all(s in r.get("scopes", {}) for s in suspects)]
            if not found:
                failed.append(outcome.error or "it reported no measurement of the scopes to confirm")
                return False
            result.processes.append(_process_record(found[0]))
            return True

        decided = decision.decide(lambda z, stated: self._verdicts(result, entry, z, stated), planned,
                                  measure_more if self._spawn is not None else None, session.confirm,
                                  screen=measured is None)
        verdicts, suspects = decided.verdicts, decided.suspects
        for scope in suspects:
            if len(result.process_values(scope)) < 2:
                note = ("the fresh processes that were to confirm it failed: " + failed[-1]) if failed else (
                    "no fresh process could be started to confirm it")
                verdicts[scope] = verdicts[scope].with_kind("inconclusive", note)
        for scope in self.scopes:
            if scope in entry["scopes"] and scope not in result.scopes:
                verdicts[scope] = self._unmeasured(scope, entry["scopes"][scope], result)
        result.details["processes"] = {"planned": planned, "measured": 1 + len(result.processes),
                                       "failed": len(failed), "suspects": suspects}
        if spent:
            result.details["processes"]["seconds"] = round(spent, 1)
        if failed:
            result.details["processes"]["errors"] = failed
        memory = self._memory_verdict(result, entry)
        if memory is not None:
            verdicts["memory"] = memory
        result.verdicts = verdicts
        missing = [s for s in result.scopes if s not in entry["scopes"]]
        if missing:
            result.details["scopes_without_baseline"] = missing
        result.outcome = judge.worst(list(verdicts.values())) if verdicts else "no-baseline"
        if result.outcome == "no-baseline":
            result.message = (
                f"the baseline of {self.id} holds none of the measured scopes ({', '.join(result.scopes)}): "
                f"record it again with {self._update_command()}"
            )

    def _unmeasured(self, scope: str, stored: dict[str, Any], result: CaseResult) -> judge.Verdict:
        return gating.unmeasured(scope, stored, result.unavailable.get(scope, "not measured in this run"))

    def _memory_verdict(self, result: CaseResult, entry: dict[str, Any]) -> judge.Verdict | None:
        blind = self._versus is not None and self._versus.in_turns
        return gating.memory_verdict(entry.get("memory") or {}, result.memory, result.processes,
                                     self.session.settings.memory_tolerance, self.tolerance_given("memory"),
                                     gating.NVML_TAKING_TURNS if blind else None)

    def _check_budgets(self, result: CaseResult) -> None:
        __tracebackhide__ = True
        result.budget_failures = budgets.violations(
            (*self.session.settings.budgets, *self._budgets), self.id, self.session.device.slug,
            {scope: s.to_json() for scope, s in result.scopes.items()},
        )
        if result.budget_failures:
            result.outcome = "over-budget"
            result.message = "; ".join(result.budget_failures)
            self._publish(result)
            self._fail(f"{self.id} on {result.device} is over budget:\n  " + "\n  ".join(result.budget_failures)
                       + "\n  (a budget is absolute: no --save-baseline makes this pass; raise the budget if intended)")

    # Messages -----------------------------------------------------------------------------------------------

    def _update_command(self, case_id: str | None = None) -> str:
        return update_command(case_id, self.session.invocation)

    def _failures(self, result: CaseResult) -> str:
        return failures.message(self.id, result, self.session.settings,
                                None if self._versus is None else self._versus.python,
                                self._update_command(self.id), self.asked_by_name)

    def _no_baseline_reason(self) -> str:
        session = self.session
        others = baselines.other_devices(session.settings.baseline_dir, session.device.slug)
        text = (
            f"no baseline for {self.id} on {session.device.name} in {session.baseline_path}: record one with "
            f"{self._update_command()}"
        )
        if others:
            text += f" (baselines exist for other devices: {', '.join(p.name for p in others)}; never compared)"
        return text


def _process_record(result: Mapping[str, Any]) -> dict[str, Any]:
    """What a fresh process's result contributes to a check: its figures, memory and where it ran."""
    return {
        "scopes": result.get("scopes", {}),
        "memory": result.get("memory"),
        "details": {k: result.get("details", {}).get(k) for k in ("pinned_core", "placement", "host_probe_ms",
                                                                  "measure_seconds")},
    }
