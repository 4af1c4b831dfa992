"""A regression's diagnosis where people look (--rfdetr-profile, verdict/diagnosis.py): a few lines under the
failure message, and a section of the Markdown summary (the job summary and the pull request's comment)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SHOWN = 3  # rows shown under a failure
LONGEST = 90  # characters of a name shown: a GPU kernel's can run to hundreds of template arguments
TIMELINE = {"host": "host", "gpu": "GPU"}


def short(name: str) -> str:
    return name if len(name) <= LONGEST else name[:LONGEST - 1] + "\u2026"


def lines(scope: str, found: Mapping[str, Any]) -> list[str]:
    """What grew most in ``scope``, and how much of its measured change that explains."""
    grew = [r for r in found["rows"] if r["delta_ms"] > 0][:SHOWN]
    if not grew:
        return [f"why ({scope}, profiled): no operator or kernel grew; the change is not in what the profiler sees"]
    share = found.get("explained")
    text = "; ".join(f"{short(r['name'])} ({r['kind']}, {r['status']}) {r['before_ms']:.3g} -> {r['after_ms']:.3g} ms"
                     for r in grew)
    timeline = TIMELINE[found["explained_by"]]
    tail = (f", {share:.0%} of the judged +{found['change_ms']:.3g} ms on the {timeline} timeline"
            if share is not None else "")
    gpu = found.get("gpu_ms") or [None, None]
    on_gpu = f"; GPU kernel time {gpu[0]:.3g} -> {gpu[1]:.3g} ms a call" if gpu[0] and gpu[1] else ""
    return [f"why ({scope}, profiled, time a call): {text}{tail}{on_gpu}"]


def missing(scope: str, details: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> str:
    """Why a timing scope's regression, asked to be profiled, has no diagnosis."""
    error = (details.get("profile_errors") or {}).get(scope)
    if error:
        return f"no diagnosis: the profile could not be taken ({error})"
    if not (baseline or {}).get("profile"):
        return ("no diagnosis: the baseline entry holds no profile to compare with (record it with --save-baseline "
                "--rfdetr-profile)")
    return "no diagnosis: this scope was not profiled on both sides"


def markdown(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """A table per regressed scope that was profiled on both sides: what changed most, slower first."""
    out: list[str] = []
    for result in results:
        for scope, verdict in (result.get("verdicts") or {}).items():
            found = (result.get("diagnosis") or {}).get(scope)
            if verdict.get("kind") != "regression" or not found:
                continue
            share = found.get("explained")
            timeline = TIMELINE[found["explained_by"]]
            explains = (f"; the rows that grew explain {share:.0%} of it on the {timeline} timeline"
                        if share is not None else "")
            out += ["", f"**Why `{result['id']}` {scope} got slower** (profiled, time a call; measured "
                        f"{found['change_ms']:+.4g} ms as judged{explains}):", "",
                    "| operator or kernel | kind | status | baseline | now | Δ |", "|---|---|---|---|---|---|"]
            out += [f"| `{short(r['name'])}` | {r['kind']} | {r['status']} | {r['before_ms']:.4g} ms | "
                    f"{r['after_ms']:.4g} ms | {r['delta_ms']:+.4g} ms |" for r in found["rows"]]
    return out
