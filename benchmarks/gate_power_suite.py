"""The cases that benchmarks/gate_power.py runs in each fresh process: clean, then with injected slowdowns.

GATE_POWER_INJECT lists the slowdowns, in percent, this process measures after its clean run (0 = clean).
"""

from __future__ import annotations

import os

import pytest

from pytest_rfdetr_latency.runner import LatencyCase

LEVELS = [float(x) for x in os.environ.get("GATE_POWER_INJECT", "0").split(",") if x.strip()]
MODEL = os.environ.get("GATE_POWER_MODEL", "RFDETRMedium")


@pytest.mark.parametrize("inject", LEVELS, ids=[f"inject{x:g}" for x in LEVELS])
@pytest.mark.rfdetr_latency(models=[MODEL], backends=["torch-fp32"], scopes=["device", "forward", "e2e"])
def test_torch(rfdetr_case: LatencyCase, inject: float) -> None:
    rfdetr_case.check(inject=inject or None)


@pytest.mark.parametrize("inject", LEVELS, ids=[f"inject{x:g}" for x in LEVELS])
@pytest.mark.rfdetr_latency(models=[MODEL], backends=["onnx-cuda"], scopes=["forward"])
def test_onnx(rfdetr_case: LatencyCase, inject: float) -> None:
    rfdetr_case.check(inject=inject or None)
