"""The plugin's fixtures: the session every case shares, the model loader, the images, the timer and the case
itself (registered by plugin.py). Like plugin.py, nothing here imports torch until a fixture runs."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pytest

from pytest_rfdetr_latency.measure.cases import Case
from pytest_rfdetr_latency.measure.settings import marker_settings
from pytest_rfdetr_latency.stash import (
    AGAINST_KEY,
    HEAD_TO_HEAD_KEY,
    LAUNCH_KEY,
    MARKER,
    RESULT_ITEM_KEY,
    SESSION_KEY,
    WORKER_KEY,
    open_session,
    progress,
)
from pytest_rfdetr_latency.stash import settings as _settings

if TYPE_CHECKING:
    from PIL import Image

    from pytest_rfdetr_latency.measure.headtohead import HeadToHead
    from pytest_rfdetr_latency.measure.processes import ChildOutcome
    from pytest_rfdetr_latency.measure.session import LatencySession
    from pytest_rfdetr_latency.measure.timing import Timer
    from pytest_rfdetr_latency.runner import LatencyCase


@pytest.fixture(scope="session")
def rfdetr_latency_session(request: pytest.FixtureRequest) -> LatencySession:
    """What all RF-DETR latency cases of this session share: device, fingerprint, models, exports, baselines.

    Example::

        def test_device(rfdetr_latency_session):
            print(rfdetr_latency_session.device.name)
    """
    config = request.config
    if SESSION_KEY not in config.stash:
        config.stash[SESSION_KEY] = open_session(config)
    return config.stash[SESSION_KEY]


@pytest.fixture(scope="session")
def rfdetr_model_loader(rfdetr_latency_session: LatencySession) -> Any:
    """Build an RF-DETR model once per session, offline: seeded random weights, or --rfdetr-weights' checkpoint.

    Example::

        def test_boxes(rfdetr_model_loader, rfdetr_images):
            model = rfdetr_model_loader("RFDETRNano")
            detections = model.predict(rfdetr_images[0], threshold=0.0)
            assert len(detections) > 0
    """
    from pytest_rfdetr_latency.measure.quiet import kept_quiet

    session = rfdetr_latency_session

    def load(name: str, resolution: int | None = None) -> Any:
        with kept_quiet(session.kept_quiet):  # what building prints stays out of the way, counted
            return session.model(name, resolution)

    return load


@pytest.fixture(scope="session")
def rfdetr_images(rfdetr_latency_session: LatencySession) -> list[Image.Image]:
    """Seeded synthetic RGB images (--rfdetr-image-size, default 640x640; --rfdetr-images, default 4).

    Example::

        def test_size(rfdetr_images):
            assert rfdetr_images[0].size == (640, 640)
    """
    return rfdetr_latency_session.images


@pytest.fixture(scope="session")
def rfdetr_timer(rfdetr_latency_session: LatencySession) -> Timer:
    """Times a callable: warm-up until clocks settle, block sampling, a summary. CUDA events on a GPU run; its
    ``.host`` twin uses the host clock (for work that blocks, such as CPU backends).

    Example::

        def test_forward(rfdetr_timer, rfdetr_model_loader, rfdetr_images):
            model = rfdetr_model_loader("RFDETRNano")
            stats = rfdetr_timer.measure(lambda: model.predict(rfdetr_images[0]))
            assert stats.median > 0  # ms; stats.p90 and the blocks are there too
    """
    from pytest_rfdetr_latency.measure.timing import Timer

    session = rfdetr_latency_session
    return Timer(session.clock, session.monitor, session.settings.sampling)


@pytest.fixture
def rfdetr_case(request: pytest.FixtureRequest, rfdetr_latency_session: LatencySession) -> LatencyCase:
    """One model × backend latency case of the configured matrix; the plugin parametrizes tests that use it.

    ``check()`` measures the case and compares it with this GPU's baseline (or records it with --save-baseline).
    Example::

        @pytest.mark.rfdetr_latency(backends=["torch-fp16"], scopes=["device"], tolerance="2%")
        def test_fp16(rfdetr_case):
            rfdetr_case.check()
    """
    case = getattr(request, "param", None)
    if not isinstance(case, Case):
        raise pytest.UsageError(f"{request.node.nodeid}: rfdetr_case is parametrized by the plugin; do not pass it")
    marker = request.node.get_closest_marker(MARKER)
    try:
        scopes, thresholds, marker_budgets = marker_settings(case.id, marker.kwargs if marker else {})
    except (argparse.ArgumentTypeError, ValueError) as exc:
        pytest.fail(f"@pytest.mark.{MARKER} on {request.node.nodeid}: {exc}", pytrace=False)
    node = request.node
    target = _case_target(node)
    config = request.config

    def publish(result: Any) -> None:
        data = result.to_json()
        worker = config.stash.get(WORKER_KEY, None)
        if worker is not None:
            data["details"]["worker"] = worker
        data["git_commit"] = rfdetr_latency_session.commit
        node.stash[RESULT_ITEM_KEY] = data

    def spawn(inject: float | None, block_sizes: Mapping[str, int], profile: bool) -> ChildOutcome:
        from pytest_rfdetr_latency.measure.processes import child_settings, run_child

        progress(config, f"{case.id}: profiling it in a fresh process" if profile else
                 f"{case.id}: moved past its threshold; measuring it again in a fresh process")
        child = child_settings(_settings(config), process_index=0, cache_dir=rfdetr_latency_session.cache_dir,
                               inject=inject, block_sizes={case.id: block_sizes},
                               placement=rfdetr_latency_session.placement()[0], profile=profile)
        return run_child(config.stash[LAUNCH_KEY], [target], child, timeout=900)

    from pytest_rfdetr_latency.runner import LatencyCase

    return LatencyCase(
        rfdetr_latency_session, case, skip=pytest.skip, fail=pytest.fail, publish=publish, scopes=scopes,
        thresholds=thresholds, budgets=marker_budgets, spawn=spawn, node=target,
        versus=_head_to_head(request.session, rfdetr_latency_session, node),
    )


def _case_target(item: pytest.Item) -> str:
    return f"{item.path}::{item.nodeid.split('::', 1)[1]}"


def _head_to_head(session: pytest.Session, latency_session: LatencySession, node: pytest.Item) -> HeadToHead | None:
    """With --rfdetr-against, both sides' processes, measured for every selected case when the first case asks. A
    stopped measurement (HeadToHead.stopped) ends the session after its last case is judged or skipped: every case's
    result is at hand (a process may take them in another order than the items'); ``node`` asks."""
    config = session.config
    run = _settings(config)
    if run.against is None:
        return None
    if HEAD_TO_HEAD_KEY not in config.stash:
        from pytest_rfdetr_latency.measure import headtohead

        targets = [_case_target(item) for item in _case_items(session)]
        config.stash[HEAD_TO_HEAD_KEY] = headtohead.measure_for(
            latency_session, config.stash[LAUNCH_KEY], targets, lambda text: progress(config, text),
            config.stash.get(AGAINST_KEY, None))
    versus = config.stash[HEAD_TO_HEAD_KEY]
    if versus.stopped and node is _case_items(session)[-1]:  # the session's last case: then it ends
        session.shouldstop = f"head to head stopped ({versus.why}): what both sides finished was judged"
    return versus


def _case_items(session: pytest.Session) -> list[pytest.Function]:
    return [item for item in session.items if isinstance(item, pytest.Function)
            and isinstance(getattr(getattr(item, "callspec", None), "params", {}).get("rfdetr_case"), Case)]
