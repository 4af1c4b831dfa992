"""The configured model × backend matrix as ready-made tests.

    pytest --rfdetr-latency --pyargs pytest_rfdetr_latency.suite
    pytest --save-baseline --pyargs pytest_rfdetr_latency.suite

The cases come from --rfdetr-models and --rfdetr-backends (or their ini keys); each one measures its scopes and
is checked against the baseline of the GPU it runs on.
"""

from __future__ import annotations

from pytest_rfdetr_latency.runner import LatencyCase


def test_latency(rfdetr_case: LatencyCase) -> None:
    rfdetr_case.check()
