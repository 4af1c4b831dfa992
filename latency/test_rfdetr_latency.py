"""This repository's own latency suite, on the plugin's fixtures (run it on a GPU runner):

    pytest --save-baseline latency        # record this GPU's baseline
    pytest --rfdetr-latency latency       # check against it
"""

from __future__ import annotations

from pytest_rfdetr_latency.runner import LatencyCase


def test_matrix(rfdetr_case: LatencyCase) -> None:
    """Every configured model × backend, every scope, against the baseline of this GPU."""
    rfdetr_case.check()
