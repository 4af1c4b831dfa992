"""What people read: the terminal summary, the FPS table, the JSON report and the Markdown job summary.

Every function here is pure: it takes result dictionaries (``CaseResult.to_json()``, as they travel from xdist
workers too) and returns lines or documents, so tests can call them without a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pytest_rfdetr_latency.report import why
from pytest_rfdetr_latency.verdict.judge import SEVERITY

REPORT_SCHEMA_VERSION = 2
_ORDER = {**SEVERITY, "over-budget": 0, "parity-failure": 0, "refused": 0, "not-saved": 0, "no-baseline": 2,
          "unavailable": 2, "saved": 5}
_UNCOMPARED = {
    "saved": "saved as baseline",
    "not-saved": "NOT SAVED",
    "no-baseline": "no baseline",
    "over-budget": "OVER BUDGET",
    "parity-failure": "OUTPUTS DIVERGE",
    "refused": "REFUSED: another workload",
}
NOT_COMPARED = ("no-baseline", "unavailable", "refused")
_VERDICT_WORDS = {"pass": "pass", "regression": "REGRESSION", "improvement": "improvement (passes)",
                  "inconclusive": "inconclusive (passes)"}


def _pct(value: float) -> str:
    return f"{value * 100:+.2f}%"


def _resolvable(fraction: float) -> str:
    """The least change a comparison could detect: past 1000 % the figure says only that it sees nothing (one
    process in three on a loaded CPU can put Student's t on one degree of freedom at 10^100 %)."""
    return "more than 1000%" if fraction > 10 else f"{fraction * 100:.3g}%"


def _value(value: float | None, unit: str = "ms") -> str:
    return "-" if value is None else f"{value:.4g} {unit}"


def _processes(verdict: Mapping[str, Any]) -> str:
    before, now = verdict.get("baseline_processes") or [], verdict.get("processes") or []
    return f"{len(before)}+{len(now)}" if before else "-"


def rows(results: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """One row per case and scope: case, scope, statistic, baseline, now, delta, threshold, processes, verdict."""
    out: list[dict[str, str]] = []
    for result in sorted(results, key=lambda r: (_ORDER.get(r["outcome"], 9), r["id"])):
        verdicts = result.get("verdicts", {})
        recorded = (result.get("baseline_entry") or {}).get("scopes", {})
        for scope, current in result.get("scopes", {}).items():
            verdict = verdicts.get(scope) if scope != "memory" else None
            if verdict is not None:
                out.append({
                    "case": result["id"],
                    "scope": scope,
                    "statistic": verdict["statistic"] + ("*" if verdict.get("detail", {}).get("by_calls") else ""),
                    "baseline": _value(verdict["baseline"], verdict["unit"]),
                    "now": _value(verdict["current"], verdict["unit"]),
                    "delta": _pct(verdict["delta"]),
                    "threshold": f"{verdict['threshold'] * 100:.3g}%",
                    "processes": _processes(verdict),
                    "verdict": _VERDICT_WORDS[verdict["kind"]],
                })
            else:
                word = _UNCOMPARED.get(result["outcome"], "not compared")
                stored = recorded.get(scope)
                now = current["value_ms"] if stored is None else stored["value_ms"]
                count = "-" if stored is None else f"{len(stored['processes'])}"
                if stored is not None and stored.get("spread") is not None:
                    word += f", spread {stored['spread'] * 100:.2g}%"
                out.append({
                    "case": result["id"],
                    "scope": scope,
                    "statistic": current["statistic"],
                    "baseline": "-",
                    "now": _value(now),
                    "delta": "-",
                    "threshold": "-",
                    "processes": count,
                    "verdict": word,
                })
        memory = verdicts.get("memory")
        if memory is not None:
            out.append({
                "case": result["id"],
                "scope": "memory",
                "statistic": "peak",
                "baseline": _value(memory["baseline"], "MiB"),
                "now": _value(memory["current"], "MiB"),
                "delta": _pct(memory["delta"]),
                "threshold": f"{memory['threshold'] * 100:.3g}%",
                "processes": _processes(memory),
                "verdict": _VERDICT_WORDS[memory["kind"]],
            })
    return out


def threshold_lines(results: Iterable[Mapping[str, Any]]) -> list[str]:
    """Why a threshold is wider than asked: the comparisons whose processes disagree by more than the tolerance."""
    lines = []
    for result in sorted(results, key=lambda r: r["id"]):
        for scope, verdict in result.get("verdicts", {}).items():
            detail = verdict.get("detail") or {}
            if scope != "memory" and detail.get("value", 0) > detail.get("asked", 1):
                lines.append(f"  {result['id']} {scope}: {verdict['threshold_reason']}")
    return lines


def confirmation_lines(results: Iterable[Mapping[str, Any]]) -> list[str]:
    """The cases measured again in fresh processes, with every process's figure of every suspect scope."""
    lines = []
    for result in sorted(results, key=lambda r: r["id"]):
        record = result.get("details", {}).get("processes") or {}
        for scope in record.get("suspects", []):
            verdict = result.get("verdicts", {}).get(scope)
            if verdict is None:
                continue
            values = ", ".join(f"{v:.4g}" for v in verdict["processes"])
            lines.append(f"  {result['id']} {scope}: {len(verdict['processes'])} process(es): {values} "
                         f"{verdict['unit']} -> {verdict['kind']}")
        for error in record.get("errors", []):
            lines.append(f"  {result['id']}: a fresh process failed: {error}")
    return lines


_COLUMNS = (
    ("case", "case"),
    ("scope", "scope"),
    ("statistic", "stat"),
    ("baseline", "baseline"),
    ("now", "now"),
    ("delta", "Δ"),
    ("threshold", "threshold"),
    ("processes", "processes"),
    ("verdict", "verdict"),
)


# A head-to-head row taken call by call (paired.call_ratio): its change is not that of the statistic's figures.
BY_CALLS = ("* head to head taking turns: Δ is the change of a typical call, each call of the other side against this "
            "side's a turn apart; now is the baseline times that change")


def table_lines(table: Sequence[Mapping[str, str]], columns: Sequence[tuple[str, str]]) -> list[str]:
    widths = [max([len(title), *(len(r[key]) for r in table)]) for key, title in columns]
    lines = ["  ".join(title.ljust(w) for (_, title), w in zip(columns, widths)).rstrip()]
    for row in table:
        lines.append("  ".join(row[key].ljust(w) for (key, _), w in zip(columns, widths)).rstrip())
    return lines


def fps_table(results: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[str], dict[str, dict[str, float]]]:
    """The notebook's table: end-to-end images per second (from the median), model × backend."""
    fps: dict[str, dict[str, float]] = {}
    backends: list[str] = []
    for result in results:
        e2e = result.get("scopes", {}).get("e2e")
        if not e2e or e2e["median_ms"] <= 0:
            continue
        label = result["id"].replace(f"-{result['backend']}", "", 1)
        fps.setdefault(label, {})[result["backend"]] = result.get("batch", 1) * 1000.0 / e2e["median_ms"]
        if result["backend"] not in backends:
            backends.append(result["backend"])
    return list(fps), backends, fps


def fps_lines(results: Iterable[Mapping[str, Any]]) -> list[str]:
    models, backends, fps = fps_table(list(results))
    if not models:
        return []
    table = [{"model": m, **{b: (f"{fps[m][b]:.1f}" if b in fps[m] else "-") for b in backends}} for m in models]
    columns = [("model", "images/s (end to end, median)"), *[(b, b) for b in backends]]
    return table_lines(table, columns)


def summary_lines(results: Sequence[Mapping[str, Any]], device: str | None) -> list[str]:
    """The terminal summary section: the verdict table, then environment drift, then the FPS table."""
    if not results:
        return []
    table = rows(results)
    lines = table_lines(table, _COLUMNS) + ([BY_CALLS] if any(r["statistic"].endswith("*") for r in table) else [])
    unmeasured = [r for r in results if r["outcome"] == "unavailable"]
    if unmeasured:  # a recording's as much as a check's: "not compared" would say a recording compares
        lines += ["", "not measured here:"]
        lines += [f"  {r['message'] or r['id']}" for r in sorted(unmeasured, key=lambda r: r["id"])]
    missing = [r for r in results if r["outcome"] in NOT_COMPARED and r["outcome"] != "unavailable"]
    if missing:
        lines += ["", "not compared:"]
        lines += [f"  {r['message'] or r['id']}" for r in sorted(missing, key=lambda r: r["id"])]
    widened = threshold_lines(results)
    if widened:
        lines += ["", "thresholds wider than asked, because these cases' processes disagree by more:", *widened]
    confirmed = confirmation_lines(results)
    if confirmed:
        lines += ["", "measured again in fresh processes:", *confirmed]
    reasons: dict[tuple[str, str], list[str]] = {}
    for r in results:
        for scope, reason in r.get("unavailable_scopes", {}).items():
            reasons.setdefault((scope, reason), []).append(r["id"])
    if reasons:
        lines += ["", "scopes not measured:"]
        for (scope, reason), ids in reasons.items():
            who = ids[0] if len(ids) == 1 else f"{len(ids)} cases"
            lines.append(f"  {scope} ({who}): {reason}")
    drifted = [r for r in results if r.get("drift")]
    if drifted:
        lines += ["", "environment changed since the baseline (comparisons may reflect it, not the code):"]
        lines += [f"  {r['id']}: {'; '.join(r['drift'])}" for r in drifted]
    fps = fps_lines(results)
    if fps:
        lines += ["", *fps]
    counts = outcome_counts(results)
    lines += ["", f"device: {device or 'unknown'}; " + ", ".join(f"{n} {k}" for k, n in counts.items())]
    return lines


def outcome_counts(results: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for result in sorted(results, key=lambda r: _ORDER.get(r["outcome"], 9)):
        counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
    return counts


def json_report(
    results: Sequence[Mapping[str, Any]],
    device: str | None,
    fingerprint: Mapping[str, Any] | None,
    command: Sequence[str],
    baseline_file: str | None,
    timings: Mapping[str, float] | None = None,
    interrupted: bool = False,
) -> dict[str, Any]:
    fps = fps_table(results)[2]
    return {
        "interrupted": interrupted,
        "timings_seconds": dict(timings or {}),
        "schema_version": REPORT_SCHEMA_VERSION,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": list(command),
        "device": device,
        "fingerprint": dict(fingerprint or {}),
        "baseline_file": baseline_file,
        "summary": outcome_counts(results),
        "drift": {r["id"]: r["drift"] for r in results if r.get("drift")},
        "fps": fps,
        "cases": sorted(results, key=lambda r: (_ORDER.get(r["outcome"], 9), r["id"])),
    }


def markdown(results: Sequence[Mapping[str, Any]], device: str | None, fingerprint: Mapping[str, Any] | None,
             interrupted: bool = False) -> str:
    """A GitHub job-summary section: regressions first, then the device and versions, then how to refresh."""
    counts = outcome_counts(results)
    headline = "regressed" if counts.get("regression") else "no regression"
    headline = f"interrupted ({headline} in the cases measured)" if interrupted else headline
    out = [f"## RF-DETR latency on {device or 'unknown device'}: {headline}", ""]
    out.append(", ".join(f"**{n}** {k}" for k, n in counts.items()) or "no cases ran")
    out += ["", "| case | scope | statistic | baseline | now | Δ | threshold | processes | verdict |",
            "|---|---|---|---|---|---|---|---|---|"]
    table = rows(results)
    for row in table:
        verdict = f"**{row['verdict']}**" if row["verdict"] == "REGRESSION" else row["verdict"]
        out.append(f"| `{row['case']}` | {row['scope']} | {row['statistic']} | {row['baseline']} | {row['now']} | "
                   f"{row['delta']} | {row['threshold']} | {row['processes']} | {verdict} |")
    out += ["", "\\" + BY_CALLS] if any(r["statistic"].endswith("*") for r in table) else []
    widened = threshold_lines(results)
    if widened:
        out += ["", "Thresholds wider than asked (these cases' processes disagree by more):", ""]
        out += [f"- {line.strip()}" for line in widened]
    out += why.markdown(results)
    drifted = [r for r in results if r.get("drift")]
    if drifted:
        out += ["", "**Environment changed since the baseline:**", ""]
        out += [f"- `{r['id']}`: {'; '.join(r['drift'])}" for r in drifted]
    fp = dict(fingerprint or {})
    versions = ", ".join(
        f"{k} {fp[k]}" for k in ("driver", "cuda", "torch", "onnxruntime", "rfdetr", "python") if fp.get(k)
    )
    if versions:
        out += ["", f"Versions: {versions}."]
    out += [
        "",
        "To accept a slowdown, record the baseline again on this runner with `pytest --save-baseline` "
        "(or run the baseline-refresh workflow) and review the changed baseline file in a pull request.",
        "",
    ]
    return "\n".join(out)


def github_annotations(results: Iterable[Mapping[str, Any]]) -> list[str]:
    """GitHub workflow commands that pin each regression to its case."""
    lines = []
    for result in results:
        for verdict in result.get("verdicts", {}).values():
            if verdict["kind"] == "regression":
                title = f"latency regression: {result['id']}"
                text = (f"{verdict['scope']} {verdict['statistic']} {verdict['baseline']:.4g} -> "
                        f"{verdict['current']:.4g} {verdict['unit']} ({verdict['delta'] * 100:+.2f}%, threshold "
                        f"{verdict['threshold'] * 100:.3g}%)")
                lines.append(f"::error title={_escape(title, True)}::{_escape(text)}")
    return lines


def _escape(text: str, property_value: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if property_value:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def is_unresolved(verdict: Mapping[str, Any]) -> bool:
    """A verdict, as written to the report, that could not resolve what its scope must (gating.is_unresolved)."""
    return verdict.get("kind") == "inconclusive" and bool((verdict.get("detail") or {}).get("unresolved"))


def unresolved_lines(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per comparison that could not resolve what its scope must (paired.judge_pairs, judge.unresolved):
    not gating on this runner, with the finest change it could have detected."""
    lines = []
    for result in results:
        for scope, verdict in (result.get("verdicts") or {}).items():
            if not is_unresolved(verdict):
                continue
            detail = verdict["detail"]
            if detail.get("detectable") is None:  # not seen at all (gating.blind): the verdict's note says why
                why = next((n for n in reversed(verdict.get("notes") or []) if n.startswith("unresolved: ")), "")
                lines.append(f"not gating on this runner: {result['id']} {scope}, {why.removeprefix('unresolved: ')}")
                continue
            least = _resolvable(detail["detectable"])
            lines.append(f"not gating on this runner: {result['id']} {scope}, could detect {least} and no less (must "
                         f"resolve {detail['resolve'] * 100:.3g}%)")
    return lines
