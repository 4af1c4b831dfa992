"""Absolute latency budgets: a limit that no accepted baseline can move.

A baseline refreshed after each accepted slowdown lets latency creep up 4 % at a time, forever. A budget is a fixed
ceiling per case, scope and statistic (optionally per device model); a case over budget fails whatever its
baseline says. Written as ``CASE:SCOPE:STATISTIC<=LIMITms[@DEVICE]``, globs allowed in CASE and DEVICE:

    RFDETRMedium-torch-fp16:e2e:median<=12ms@nvidia-h200
    *-onnx-cuda:forward:p90<=8ms
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_rfdetr_latency.verdict.scopes import ALL_SCOPES

STATISTICS = ("median", "mean", "min", "p10", "p90")
FORMS = "CASE:SCOPE:STATISTIC<=LIMITms[@DEVICE], e.g. 'RFDETRMedium-torch-fp16:e2e:median<=12ms@nvidia-h200'"
_SPEC = re.compile(
    r"^\s*(?P<case>[^:\s]+)\s*:\s*(?P<scope>[a-z0-9]+)\s*:\s*(?P<statistic>[a-z0-9]+)\s*<=\s*"
    r"(?P<limit>\d+(\.\d+)?)\s*ms\s*(@\s*(?P<device>\S+))?\s*$"
)


@dataclass(frozen=True)
class Budget:
    case: str  # a glob over case ids
    scope: str
    statistic: str
    limit_ms: float
    device: str = "*"  # a glob over device slugs

    def applies(self, case_id: str, device_slug: str) -> bool:
        return fnmatch.fnmatchcase(case_id, self.case) and fnmatch.fnmatchcase(device_slug, self.device)

    def describe(self) -> str:
        where = "" if self.device == "*" else f"@{self.device}"
        return f"{self.case}:{self.scope}:{self.statistic}<={self.limit_ms:g}ms{where}"


def parse(text: str, case: str | None = None) -> Budget:
    """One budget; with ``case`` given (a marker's budget), the spec may leave the case out: ``e2e:median<=12ms``."""
    spec = text.strip()
    if case is not None and spec.count(":") == 1:
        spec = f"{case}:{spec}"
    match = _SPEC.match(spec)
    if not match:
        raise ValueError(f"invalid budget {text!r}: expected {FORMS}")
    scope, statistic = match["scope"], match["statistic"]
    if scope not in ALL_SCOPES:
        raise ValueError(f"invalid budget {text!r}: unknown scope {scope!r} (scopes: {', '.join(ALL_SCOPES)})")
    if statistic not in STATISTICS:
        raise ValueError(f"invalid budget {text!r}: statistic must be one of {', '.join(STATISTICS)}")
    limit = float(match["limit"])
    if limit <= 0:
        raise ValueError(f"invalid budget {text!r}: the limit must be above 0 ms")
    return Budget(match["case"], scope, statistic, limit, match["device"] or "*")


def parse_many(text: str) -> tuple[Budget, ...]:
    """Budgets separated by semicolons or new lines (the ini key takes one per line)."""
    return tuple(parse(part) for part in re.split(r"[;\n]", text) if part.strip())


def violations(
    budgets: Iterable[Budget], case_id: str, device_slug: str, scopes: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Lines for every applicable budget that the measured ``scopes`` (ScopeStats JSON) exceed."""
    lines = []
    for budget in budgets:
        if not budget.applies(case_id, device_slug):
            continue
        stats = scopes.get(budget.scope)
        if stats is None:
            lines.append(f"budget {budget.describe()}: scope {budget.scope} was not measured")
            continue
        value = float(stats[f"{budget.statistic}_ms"])
        if value > budget.limit_ms:
            lines.append(
                f"budget {budget.describe()}: {budget.scope} {budget.statistic} is {value:.4g} ms, "
                f"{(value / budget.limit_ms - 1) * 100:+.1f}% over the {budget.limit_ms:g} ms limit"
            )
    return lines
