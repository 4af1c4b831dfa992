"""Tables for docs/ from the plugin's JSON reports (--rfdetr-report), so every number in the write-ups can be
traced to a committed raw file.

    python benchmarks/tabulate.py docs/data/h200-matrix-save-n0.json docs/data/h200-matrix-save-onnx-cuda.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def rows(reports: list[dict[str, Any]]) -> list[str]:
    cases: dict[str, dict[str, Any]] = {}
    for report in reports:
        for case in report["cases"]:
            cases[case["id"]] = case
    out = [
        "| case | precision | device ms | forward ms (p20) | e2e ms (p20 / median) | images/s | peak MiB | "
        "parity: found / IoU / max score err | outcome |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case_id in sorted(cases, key=lambda c: (c.split("-")[0], c)):
        case = cases[case_id]
        scopes = case.get("scopes", {})

        def ms(scope: str, scopes: dict[str, Any] = scopes) -> str:
            return f"{scopes[scope]['value_ms']:.3g}" if scope in scopes else "-"

        e2e = scopes.get("e2e")
        fps = f"{1000.0 * case.get('batch', 1) / e2e['median_ms']:.1f}" if e2e else "-"
        e2e_text = f"{e2e['value_ms']:.3g} / {e2e['median_ms']:.3g}" if e2e else "-"
        memory = case.get("memory") or {}
        parity = (case.get("parity") or {}).get("metrics")
        parity_text = "-"
        if parity:
            parity_text = f"{parity['found_share']:.2f} / {parity['mean_iou']:.3f} / {parity['max_score_error']:.3g}"
        out.append(
            f"| {case_id} | {case['fingerprint'].get('precision', '-') if case.get('fingerprint') else '-'} | "
            f"{ms('device')} | {ms('forward')} | {e2e_text} | {fps} | {memory.get('peak_mib', '-')} | {parity_text} | "
            f"{case['outcome']} |"
        )
    return out


if __name__ == "__main__":
    print("\n".join(rows([json.loads(Path(p).read_text()) for p in sys.argv[1:]])))
