"""Why a scope got slower: its profile at recording set against its profile now (--rfdetr-profile), operator by
operator and kernel by kernel. Pure: what was profiled comes in (measure/profiling.py), a table goes out; where
people read it is report/why.py."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

TOP = 8  # rows of the table kept in the report
ORT_PREFIX = "ort::"  # ONNX Runtime's operators, from its own session profiling (measure/profiling.py)
OUTSIDE = "(host time outside profiled operators)"  # the profile's row for host time no operator accounts for

_TEMPLATE = re.compile(r"<[^<>]*>")
_NUMBER = re.compile(r"\b\d+\b")


def matched_name(name: str) -> str:
    """A kernel's name without the launch parameters some names carry (template arguments, sizes), so that the same
    kernel matches across two profiles."""
    previous = None
    while previous != name:  # innermost first: each bracket pair becomes one mark, then the pair around it
        previous, name = name, _TEMPLATE.sub("\u2026", name)
    return _NUMBER.sub("N", " ".join(name.split())).replace("\u2026", "<>")


def diagnose(before: Mapping[str, Any], after: Mapping[str, Any], change_ms: float,
             timeline: str | None = None) -> dict[str, Any]:
    """The rows whose time per call changed most (by size), those of the explaining timeline first, slower first:
    ``status`` slower, faster, new or gone; and the share of the scope's change as judged (``change_ms``) that the
    rows that grew explain on one timeline: ``timeline`` where the scope's figure is one (``gpu``: the device scope
    times the GPU's work), else the one that explains more, the host's (operators, labels, the time outside them) or
    the GPU's (kernels). The two are never added: a kernel that got slower also makes the host wait longer (on the
    H200 a hidden chain of matrix products showed first as cudaDeviceSynchronize, +0.23 ms, above its own kernel)."""
    then = _by_name(_without_operators(before) if after.get("operators") is None else before)
    now = _by_name(_without_operators(after) if before.get("operators") is None else after)
    rows = []
    for key in then.keys() | now.keys():
        was, is_ = then.get(key), now.get(key)
        old, new = (was or {}).get("ms", 0.0), (is_ or {}).get("ms", 0.0)
        status = "new" if was is None else "gone" if is_ is None else "slower" if new > old else "faster"
        rows.append({"name": (is_ or was or {})["name"], "kind": key[0], "before_ms": old, "after_ms": new,
                     "delta_ms": round(new - old, 4), "status": status})
    changed = sorted((r for r in rows if r["delta_ms"]), key=lambda r: -abs(r["delta_ms"]))[:TOP]
    grew = {timeline: sum(r["delta_ms"] for r in rows if r["delta_ms"] > 0 and (r["kind"] == "gpu") == on_gpu)
            for timeline, on_gpu in (("host", False), ("gpu", True))}
    by = timeline or max(grew, key=lambda line: grew[line])
    return {
        "change_ms": round(change_ms, 4),
        "profiled_ms": [before.get("wall_ms"), after.get("wall_ms")],
        "gpu_ms": [before.get("gpu_ms"), after.get("gpu_ms")],
        "calls": [before.get("calls"), after.get("calls")],
        "explained": round(grew[by] / change_ms, 3) if change_ms > 0 else None,
        "explained_by": by,
        "rows": sorted(changed, key=lambda r: ((r["kind"] == "gpu") != (by == "gpu"), -r["delta_ms"])),
    }


def _without_operators(profile: Mapping[str, Any]) -> Mapping[str, Any]:
    """A profile with ONNX Runtime's operator rows given back to the host time outside profiled operators, to be set
    against a profile that has none (recorded before they were taken, or where they could not be)."""
    if profile.get("operators") is None:
        return profile
    ort = sum(float(r["ms"]) for r in profile.get("rows", []) if str(r["name"]).startswith(ORT_PREFIX))
    given_back = float(profile.get("outside_taken_ms", ort))  # what they took from it, no more
    rows = [dict(r) for r in profile.get("rows", []) if not str(r["name"]).startswith(ORT_PREFIX)]
    for row in rows:
        if row["name"] == OUTSIDE:
            row["ms"] = row["ms"] + given_back
    return {**profile, "rows": rows}


def _by_name(profile: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for row in profile.get("rows", []):
        key = (str(row["kind"]), matched_name(str(row["name"])))
        if key in found:
            found[key] = {**found[key], "ms": found[key]["ms"] + row["ms"]}
        else:
            found[key] = dict(row)
    return found


def for_result(verdicts: Mapping[str, Any], now: Mapping[str, Any], then: Mapping[str, Any]) -> dict[str, Any]:
    """Every judged timing scope profiled on both sides, diagnosed against the change its verdict measured (the
    device scope on the GPU's timeline: its figure is the GPU's time)."""
    return {scope: diagnose(then[scope], now[scope], verdict.current - verdict.baseline,
                            "gpu" if scope == "device" else None)
            for scope, verdict in verdicts.items() if scope in now and scope in then}


def to_profile(verdicts: Mapping[str, Any], recorded: Mapping[str, Any], asked: bool = False,
               refused: bool = False) -> list[str]:
    """The timing scopes a check profiles in one more fresh process once its verdict is decided: every one judged
    where profiles were ``asked`` for (--rfdetr-profile), none where they were ``refused`` (--rfdetr-no-profile),
    else those judged a regression whose recording holds their profile."""
    return [scope for scope, verdict in verdicts.items() if scope != "memory" and not refused and (
        asked or (verdict.kind == "regression" and scope in recorded))]


def take_profiled(details: dict[str, Any], scopes: Sequence[str], reported: Sequence[Mapping[str, Any]],
                  error: str | None, seconds: float) -> None:
    """What that process profiled of ``scopes``, into the case's ``details`` (``profile``, and ``profile_errors`` for
    each it could not profile, with why); its cost apart, in ``profile_process``. It profiles every scope it samples;
    only ``scopes`` are kept. Its figures are not taken: the verdict stands as decided."""
    got = dict(reported[0].get("details", {})) if reported else {}
    details["profile_process"] = {"scopes": list(scopes), "seconds": round(seconds, 1)}
    kept = {scope: table for scope, table in (got.get("profile") or {}).items() if scope in scopes}
    if kept:
        details["profile"] = kept
    why = f"the profiling process failed: {error or 'it reported no profile'}"
    errors = {s: (got.get("profile_errors") or {}).get(s) or why for s in scopes if s not in kept}
    if errors:
        details.setdefault("profile_errors", {}).update(errors)
