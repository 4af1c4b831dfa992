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
import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from typing import Any

# rfdetr logs through its own handler, which holds the stream it was made with: redirecting sys.stderr misses it.
LOGGERS = ("rf-detr", "rfdetr")


def empty_tally() -> dict[str, Any]:
    return {"warnings": {}, "output_lines": 0}


@contextmanager
def kept_quiet(tally: dict[str, Any]) -> Iterator[None]:
    """Record the warnings, printed output and rfdetr log lines of the block into ``tally`` instead of showing them;
    write the output out if the block raises an error (not pytest's skip or fail, which say why themselves)."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    saved = [(logger, logger.handlers[:], logger.propagate) for logger in map(logging.getLogger, LOGGERS)]
    for logger, _, _ in saved:
        logger.handlers, logger.propagate = [handler], False
    failed = False
    try:
        with warnings.catch_warnings(record=True) as caught, redirect_stdout(buffer), redirect_stderr(buffer):
            warnings.simplefilter("always")
            try:
                yield
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
        for logger, handlers, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate
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
