"""Hooks that users (a conftest.py, another plugin) can implement."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.hookspec
def pytest_rfdetr_latency_fingerprint(config: pytest.Config) -> dict[str, Any] | None:
    """Extra fingerprint fields to record with every baseline entry, and to compare on later runs.

    Return a flat dict of JSON-serialisable values, e.g. ``{"container_image": os.environ["IMAGE_DIGEST"]}``.
    A field whose value differs from the baseline's is reported as environment drift, like a driver change.
    """
