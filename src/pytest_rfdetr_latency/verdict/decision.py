"""The one decision of a check against a stored baseline: screen the first process, measure the scopes that moved
again in fresh processes, decide over all of them. Pure: judging is the caller's function of the processes measured
so far, and measuring more is a callback, so that the runner, the statistical tests and the benchmarks' re-decisions
run this same rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pytest_rfdetr_latency.verdict.judge import DECIDE_Z, SCREEN_Z, Verdict, settled

# Judges every scope over the processes measured so far: (z, processes the threshold is stated for, None: as many
# as measured) -> verdict per scope.
JudgeAll = Callable[[float, "int | None"], dict[str, Verdict]]


@dataclass
class Decision:
    verdicts: dict[str, Verdict]
    suspects: list[str] = field(default_factory=list)  # the scopes the screen sent to fresh processes
    measured: int = 0  # fresh processes that measured them
    failed: int = 0  # fresh processes that did not


def decide(judge_all: JudgeAll, planned: int, measure_more: Callable[[Sequence[str]], bool] | None = None,
           budget: int = 0, screen: bool = True) -> Decision:
    """Screen, confirm, decide. ``planned``: the processes the decision's threshold is stated for (the first and up
    to ``budget`` fresh ones). A scope is a suspect when the first process lies beyond the screening line (SCREEN_Z)
    or beyond the decision's (which many processes can put lower). ``measure_more(suspects)`` measures one fresh
    process and says whether it measured them; fresh processes stop once every suspect's median is settled
    (judge.settled) or ``budget`` processes were tried. The decision is over every process measured, against the
    line stated for ``planned``."""
    decided = judge_all(DECIDE_Z, planned)
    suspects: list[str] = []
    if screen and planned > 1:
        first = judge_all(SCREEN_Z, None)
        suspects = [s for s in first if "regression" in (first[s].kind, decided[s].kind)]
    outcome = Decision(decided, suspects)
    if suspects and measure_more is not None:
        while outcome.measured + outcome.failed < budget:
            if not measure_more(suspects):
                outcome.failed += 1
                continue
            outcome.measured += 1
            now = judge_all(DECIDE_Z, planned)
            if all(settled(now[s], planned) for s in suspects):
                break
    outcome.verdicts = judge_all(DECIDE_Z, planned)
    return outcome
