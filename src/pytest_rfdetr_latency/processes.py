"""Measuring a case again in a fresh pytest process.

Shared hosts have slow spells that last whole processes; a real regression is there in every process. So a
host-bound regression is confirmed in fresh processes (``--rfdetr-confirm``), and a baseline can be the fastest of
several (``--rfdetr-save-processes``). The fresh process runs the same test node with the same RF-DETR options and
plugin selections, measures only, and hands its result back through a JSON file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pytest_rfdetr_latency.settings import OPTIONS

# Options the fresh process must not inherit: its outputs and its own fresh processes are the parent's business.
_NOT_INHERITED = ("--rfdetr-report", "--rfdetr-markdown", "--rfdetr-child-report", "--rfdetr-inject-slowdown",
                  "--rfdetr-confirm", "--rfdetr-save-processes", "--rfdetr-benchmark-json", "--rfdetr-plot")


def inherited_arguments(args: list[str]) -> list[str]:
    """The invocation's RF-DETR options and plugin selections (-p), for a fresh process that measures one case."""
    flags = {spec.flag for spec in OPTIONS if spec.is_flag}
    keep: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name = arg.split("=", 1)[0]
        takes_value = "=" not in arg and name not in flags
        if name.startswith("--rfdetr-") and name not in _NOT_INHERITED:
            keep.append(arg)
            if takes_value and i + 1 < len(args):
                keep.append(args[i + 1])
                i += 1
        elif name.startswith("--rfdetr-") and takes_value:
            i += 1  # drop the option's value too
        elif arg == "-p" and i + 1 < len(args):
            keep += [arg, args[i + 1]]
            i += 1
        elif arg.startswith("-p") and len(arg) > 2:
            keep.append(arg)
        i += 1
    return keep


def measure_in_fresh_process(
    target: str, args: list[str], cwd: Path, rootdir: Path, inifile: Path | None, inject: float | None
) -> dict[str, Any] | None:
    """Run test node ``target`` in a new pytest process, measuring only; its result, or None if it did not finish."""
    with tempfile.TemporaryDirectory(prefix="rfdetr-latency-child-") as folder:
        out = Path(folder) / "result.json"
        command = [
            sys.executable, "-m", "pytest", target, "-q", "-p", "no:cacheprovider", f"--rootdir={rootdir}",
            *(["-c", str(inifile)] if inifile else []),
            *inherited_arguments(args),
            "--rfdetr-latency", "--rfdetr-no-parity", "--rfdetr-confirm=0", f"--rfdetr-child-report={out}",
            *([f"--rfdetr-inject-slowdown={inject:g}%"] if inject else []),
        ]
        env = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
        try:
            subprocess.run(command, cwd=cwd, env=env, capture_output=True, timeout=900, check=False)
        except subprocess.TimeoutExpired:
            return None
        if not out.exists():
            return None
        data: dict[str, Any] = json.loads(out.read_text())
        return data
