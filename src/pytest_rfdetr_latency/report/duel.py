"""What a head-to-head run says of itself: which two environments met, how their processes ran, where they were
placed, which pairs were left out or added, and what went wrong (the collector prints these under the table)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def said_of(duel: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The summary's notes and errors of one run's ``details.head_to_head``."""

    def versions(side: str) -> str:
        return ", ".join(f"{k} {v}" for k, v in duel["versions"][side].items() if v) or "versions unknown"

    where = f" in {duel['tree']}" if duel.get("tree") else ""
    notes = [
        f"head to head{' (A/A, as declared)' if duel.get('aa') else ''}: {duel['against']}{where} "
        f"({versions('other')}) judged against this environment ({versions('this')}), pair by pair; fresh "
        f"processes, {duel['processes']['this']} and {duel['processes']['other']}, "
        + (f"pairs at once, preparing together and taking turns block by block ({_turns(duel)})"
           if duel.get("in_turns")
           else f"one after the other in the order {' '.join(duel['order'])}")
        + "; no baseline file read or written"]
    placed = duel.get("placement")
    if placed:
        notes.append(
            f"head to head: every process placed to launch on core {placed['launch']} (siblings kept free: "
            f"{', '.join(map(str, placed['quiet'])) or 'none'}), its other threads on cores "
            f"{', '.join(map(str, placed['rest']))}; PYTHONHASHSEED the same on both sides; "
            + ("; ".join(duel.get("placement_problems") or []) or "every process reported its threads so"))
    notes += [f"head to head: {line}" for line in duel.get("left_out", [])]
    notes += added_pair_lines(duel)
    return notes, list(duel.get("errors", []))


def left_out_lines(results: Iterable[Mapping[str, Any]]) -> list[str]:
    """Head to head taking turns: each pair left out of a comparison because it stood apart, and why."""
    return [f"head to head: {result['id']} {scope}: {note}" for result in results
            for scope, verdict in (result.get("verdicts") or {}).items()
            for note in verdict.get("notes") or [] if note.startswith("pair ") and " left out: " in note]


def added_pair_lines(duel: Mapping[str, Any]) -> list[str]:
    """Head to head: the pairs added while comparisons could not resolve what they must, and which they were."""
    return [f"head to head: pairs {a['pairs'][0]} to {a['pairs'][1]} added: {len(a['unresolved'])} comparison(s) "
            f"could not yet resolve what they must ({', '.join(a['unresolved'])})" for a in duel.get("added") or []]


def _turns(duel: Mapping[str, Any]) -> str:
    """How many turns each pair took, and which pairs could not take turns (a side whose plugin does not)."""
    turns: dict[str, dict[str, int]] = duel.get("turns") or {}
    apart = [f"pair {int(pair) + 1}: the {', '.join(s for s, n in taken.items() if not n)} side took no turn (its "
             "plugin does not take turns, or the process ended or ran out of time before its first), so the pair "
             "did not alternate" for pair, taken in turns.items() if not all(taken.values())]
    counts = [min(taken.values()) for taken in turns.values() if all(taken.values())]
    span = f"{min(counts)}" if counts and min(counts) == max(counts) else f"{min(counts or [0])}–{max(counts or [0])}"
    said = f"{span} turns a side per pair" if counts else "no pair took turns"
    return "; ".join([said, *apart])
