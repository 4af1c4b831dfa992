"""What one case produced in one process, as it travels: to the report, to the controller of an xdist run, from a
fresh process back to the one that asked for it, and into a baseline entry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pytest_rfdetr_latency.measure.cases import Case
from pytest_rfdetr_latency.verdict.judge import Verdict
from pytest_rfdetr_latency.verdict.stats import ScopeStats


class CaseError(RuntimeError):
    """A case could not be measured (export failed, outputs not finite...); the message gives the cause."""


@dataclass
class CaseResult:
    case: Case
    device: str
    outcome: str  # measured, saved, pass, regression, improvement, inconclusive, no-baseline, ...
    device_kind: str = "cpu"  # cuda or cpu
    node: str = ""  # the test node that measured it, as a fresh process is given it
    scopes: dict[str, ScopeStats] = field(default_factory=dict)  # this process's figures
    unavailable: dict[str, str] = field(default_factory=dict)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    drift: list[str] = field(default_factory=list)
    detections: float = 0.0
    score_threshold: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    baseline_file: str = ""
    baseline: dict[str, Any] | None = None  # the entry compared against, if any
    message: str = ""
    memory: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    budget_failures: list[str] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)  # kept samples per scope, ms (reports only)
    processes: list[dict[str, Any]] = field(default_factory=list)  # fresh processes' results of this case (JSON)
    workload: dict[str, Any] = field(default_factory=dict)  # what was measured: seed, weights, images, sampling...
    diagnosis: dict[str, Any] = field(default_factory=dict)  # per scope, profiled then and now (verdict/diagnosis.py)

    @classmethod
    def from_process(cls, case: Case, data: dict[str, Any], node: str, baseline_file: str) -> CaseResult:
        """Another process's result of ``case`` (its report's JSON), as this process's own would be."""
        return cls(
            case, data["device"], "measured", device_kind=data.get("device_kind", "cpu"), node=node,
            scopes={scope: ScopeStats.from_json(s) for scope, s in data["scopes"].items()},
            unavailable=dict(data.get("unavailable_scopes") or {}), fingerprint=dict(data.get("fingerprint") or {}),
            detections=float(data.get("detections", 0.0)), score_threshold=float(data.get("score_threshold", 0.0)),
            details=dict(data.get("details") or {}), baseline_file=baseline_file, memory=data.get("memory"),
            workload=dict(data.get("workload") or {}),
            samples={k: list(v) for k, v in (data.get("samples_ms") or {}).items()},
        )

    def process_values(self, scope: str) -> list[float]:
        """This case's figure of ``scope`` in every process measured for this check: this one, then fresh ones."""
        values = [self.scopes[scope].value] if scope in self.scopes else []
        for other in self.processes:
            data = other.get("scopes", {}).get(scope)
            if data is not None:
                values.append(float(data["value_ms"]))
        return values

    def process_hosts(self, scope: str) -> list[float | None]:
        """The host yardstick of every process measured for this check, in the order of ``process_values``."""
        hosts = [self.scopes[scope].host_ms] if scope in self.scopes else []
        for other in self.processes:
            data = other.get("scopes", {}).get(scope)
            if data is not None:
                hosts.append(data.get("host_ms"))
        return hosts

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.case.id,
            "model": self.case.model,
            "backend": self.case.backend,
            "batch": self.case.batch,
            "resolution": self.case.resolution,
            "device": self.device,
            "device_kind": self.device_kind,
            "node": self.node,
            "outcome": self.outcome,
            "scopes": {scope: s.to_json() for scope, s in self.scopes.items()},
            "unavailable_scopes": self.unavailable,
            "verdicts": {scope: v.to_json() for scope, v in self.verdicts.items()},
            "fingerprint": self.fingerprint,
            "drift": self.drift,
            "detections": round(self.detections, 3),
            "score_threshold": round(self.score_threshold, 6),
            "details": self.details,
            "baseline_file": self.baseline_file,
            "baseline": self.baseline,
            "message": self.message,
            "memory": self.memory,
            "parity": self.parity,
            "budget_failures": self.budget_failures,
            "samples_ms": {scope: [round(x, 5) for x in values] for scope, values in self.samples.items()},
            "processes": self.processes,
            "workload": self.workload,
            **({"diagnosis": self.diagnosis} if self.diagnosis else {}),
        }


def update_command(case_id: str | None = None, invocation: tuple[str, ...] = ()) -> str:
    """The command that records the baseline again: this run's own test paths and options, ``--save-baseline``, and
    the case's id (``invocation`` comes from the plugin: paths or ``--pyargs`` modules, ``-p``, RF-DETR options)."""
    target = f" -k '{case_id}'" if case_id else ""
    extra = "".join(f" {_quoted(arg)}" for arg in invocation)
    return f"pytest --save-baseline{extra}{target}"


def _quoted(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
