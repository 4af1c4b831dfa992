"""What rfdetr, torch and ONNX Runtime print while a case builds, traces and exports its model, kept out of the
user's way and counted.

Building and tracing RF-DETR emits dozens of third-party warnings (TracerWarning, deprecations) and log lines on
every run; pytest would print them before the summary and attach them to every failure, burying the verdict. They
say nothing about the measurement. So they are recorded per case (counts by category, lines of output), kept in
the JSON report, and summed in one line of the summary; where the work fails, what was printed is written out
with the error, since then it is the diagnosis.
"""

from __future__ import annotations

import io
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from typing import Any


def empty_tally() -> dict[str, Any]:
    return {"warnings": {}, "output_lines": 0}


@contextmanager
def kept_quiet(tally: dict[str, Any], expected: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Record the block's warnings and printed output into ``tally`` instead of showing them (rfdetr's log handlers
    write to whatever ``sys.stdout`` and ``sys.stderr`` are at the time, so its log lines are output too). Warning
    filters stay as the run set them: what ``-W error`` makes an error is still raised. Where the block raises an
    error, the output is written out with it; not where it raises one of ``expected`` (a backend that cannot run
    here is a skip that says why), nor pytest's skip and fail."""
    buffer = io.StringIO()
    failed = False
    try:
        with warnings.catch_warnings(record=True) as caught, redirect_stdout(buffer), redirect_stderr(buffer):
            try:
                yield
            except expected:
                raise
            except Exception:
                failed = True
                raise
            finally:
                counts: dict[str, int] = tally.setdefault("warnings", {})
                for message in caught:
                    name = message.category.__name__
                    counts[name] = counts.get(name, 0) + 1
                tally["output_lines"] = tally.get("output_lines", 0) + len(buffer.getvalue().splitlines())
    finally:
        if failed:
            sys.stderr.write(buffer.getvalue())


def summed(tallies: Any) -> dict[str, Any]:
    """The tallies of several cases together."""
    total = empty_tally()
    for tally in tallies:
        for name, count in (tally or {}).get("warnings", {}).items():
            total["warnings"][name] = total["warnings"].get(name, 0) + count
        total["output_lines"] += (tally or {}).get("output_lines", 0)
    return total


def summary_line(total: dict[str, Any]) -> str | None:
    """One line for the terminal summary, or None where nothing was kept."""
    count = sum(total["warnings"].values())
    if not count and not total["output_lines"]:
        return None
    kinds = ", ".join(f"{name} {n}" for name, n in sorted(total["warnings"].items(), key=lambda kv: -kv[1]))
    return (f"kept out of the way: {count} warning(s) ({kinds or 'none'}) and {total['output_lines']} line(s) of "
            "output that rfdetr, torch and ONNX Runtime printed while building, tracing and exporting; counted per "
            "case in the JSON report (details.kept_quiet)")
