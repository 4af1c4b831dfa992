"""pytest hooks, options and fixtures: the only module that talks to pytest.

It stays thin: options come from :data:`settings.OPTIONS`, and torch, rfdetr and onnxruntime are imported only
once a latency run starts (``pytest --help`` imports none of them).
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

from pytest_rfdetr_latency.cases import Case, matrix
from pytest_rfdetr_latency.settings import OPTIONS, RawValue, Settings, SettingsError, marker_settings
from pytest_rfdetr_latency.stash import (
    AGAINST_KEY,
    DIST_KEY,
    HEAD_TO_HEAD_KEY,
    LAUNCH_KEY,
    PROPERTY,
    RESULT_ITEM_KEY,
    SESSION_KEY,
    SETTINGS_KEY,
    WORKER_KEY,
    cache_dir,
    is_worker,
    progress,
    xdist_workers,
)
from pytest_rfdetr_latency.stash import settings as _settings

if TYPE_CHECKING:
    from PIL import Image

    from pytest_rfdetr_latency.headtohead import HeadToHead
    from pytest_rfdetr_latency.processes import ChildOutcome
    from pytest_rfdetr_latency.runner import LatencyCase
    from pytest_rfdetr_latency.session import LatencySession
    from pytest_rfdetr_latency.timing import Timer

MARKER = "rfdetr_latency"
DISABLED_REASON = "RF-DETR latency cases run only with --rfdetr-latency (to check) or --save-baseline (to record)"


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_rfdetr_latency import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rfdetr-latency", "RF-DETR latency gate (pytest-rfdetr-latency)")
    for spec in OPTIONS:
        text = spec.full_help.replace("%", "%%")  # argparse formats help with %
        if spec.is_flag:
            group.addoption(spec.flag, action="store_true", default=False, dest=f"rfdetr_{spec.dest}", help=text)
        else:
            group.addoption(spec.flag, dest=f"rfdetr_{spec.dest}", type=spec.parser, metavar=spec.metavar, help=text)
        if spec.ini:
            parser.addini(spec.ini_name, spec.help, type="string", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(models=None, backends=None, scopes=None, tolerance=None, budget=None): restrict the RF-DETR "
        "latency cases of a test that uses the rfdetr_case fixture, set which scopes gate and with what tolerance, "
        "and give absolute budgets ('e2e:median<=12ms@nvidia-h200')",
    )
    config.addinivalue_line("markers", "xdist_group(name): keep the tests of one group on one xdist worker")
    from pytest_rfdetr_latency.collector import ResultCollector
    from pytest_rfdetr_latency.processes import CHILD_ENV, Launch, given_options, load_child_settings

    child = os.environ.get(CHILD_ENV)
    if child:  # a fresh process of a recording or a confirmation: the parent's settings, exactly
        from pytest_rfdetr_latency import lockstep

        settings = load_child_settings(child)
        lockstep.begin()  # one of a pair that takes turns (head to head): wait for the first
    else:
        try:
            settings = _resolve(config)
        except SettingsError as exc:
            if config.getoption("help"):
                return
            raise pytest.UsageError(str(exc)) from None
    config.stash[SETTINGS_KEY] = settings
    has_xdist = config.pluginmanager.hasplugin("xdist")
    config.stash[LAUNCH_KEY] = Launch(
        cwd=config.invocation_params.dir, rootdir=config.rootpath, inifile=config.inipath,
        options=given_options(config.invocation_params.args),
        xdist_workers=(0 if is_worker(config) else xdist_workers(config)) if has_xdist else None,
    )
    config.pluginmanager.register(ResultCollector(config), "rfdetr-latency-results")
    if settings.active:
        _bind_xdist_workers(config, settings)


def _resolve(config: pytest.Config) -> Settings:
    from pytest_rfdetr_latency.settings import check_ini_keys, resolve

    with warnings.catch_warnings():  # pytest 9 deprecates inicfg and offers no other list of the keys given
        warnings.simplefilter("ignore", DeprecationWarning)
        given = list(getattr(config, "inicfg", {}))
    check_ini_keys(given, str(config.inipath) if config.inipath else None)
    raw = {
        spec.dest: RawValue(
            cli=config.getoption(f"rfdetr_{spec.dest}"),
            ini=config.getini(spec.ini_name) if spec.ini else None,
            ini_file=str(config.inipath) if config.inipath else None,
        )
        for spec in OPTIONS
    }
    return resolve(raw, os.environ, config.rootpath)


def _bind_xdist_workers(config: pytest.Config, settings: Settings) -> None:
    """On the controller, check that the workers can be bound; on a worker, bind it to its GPU and cores."""
    from pytest_rfdetr_latency import workers

    if is_worker(config):
        index, count = workers.worker_index(config.workerinput)  # type: ignore[attr-defined]
    else:
        index, count = 0, xdist_workers(config)
        if count == 0:
            return
    gpus = [] if settings.device == "cpu" else workers.visible_gpus()
    try:
        bindings = workers.plan(count, settings.device, gpus, workers.affinity())
    except workers.WorkerPlanError as exc:
        raise pytest.UsageError(str(exc)) from None
    if is_worker(config):
        config.stash[WORKER_KEY] = {"worker": f"gw{index}", **workers.apply(bindings[index])}
    else:
        # A worker is bound as a whole, before CUDA starts: its GPU, and its cores for every thread it will make
        # (rebinding one thread per test would leave thread pools made meanwhile on the other workers' cores).
        notes = ["every test of a worker runs on its GPU and cores, latency case or not: run other tests in a "
                 "pytest of their own to give them the whole machine"]
        if config.stash.get(DIST_KEY, False):
            notes.append("--dist load became loadgroup: a model's cases stay on one worker, which builds it once")
        config.stash[WORKER_KEY] = {"plan": [b.describe() for b in bindings], "notes": notes}


def pytest_cmdline_main(config: pytest.Config) -> None:
    # xdist's default distribution spreads one model's cases over every worker, so each builds the model again;
    # loadgroup keeps a model's cases together (the plugin marks each case with its model's group).
    latency = config.getoption("rfdetr_enabled", False) or config.getoption("rfdetr_save_baseline", False)
    if latency and getattr(config.option, "dist", None) == "load":
        config.option.dist = "loadgroup"
        config.stash[DIST_KEY] = True  # said in the summary, beside the workers' binding


def _open_session(config: pytest.Config) -> LatencySession:
    """Resolve the device and load its baseline file; a problem with either is a usage error."""
    from pytest_rfdetr_latency.baselines import BaselineError
    from pytest_rfdetr_latency.environment import DeviceError, resolve_device
    from pytest_rfdetr_latency.session import LatencySession

    settings = _settings(config)
    extra: dict[str, Any] = {}
    for fields in config.hook.pytest_rfdetr_latency_fingerprint(config=config):
        extra.update(fields or {})
    worker = config.stash.get(WORKER_KEY, {})
    threads = int(worker["threads"]) if "threads" in worker else None
    try:
        device = resolve_device(settings.device)
        session = LatencySession(settings, device, cache_dir(config), config.rootpath, extra, threads)
        session.progress = lambda text: progress(config, text)
        session.invocation = _recording_arguments(config)
        return session
    except (DeviceError, BaselineError) as exc:
        raise pytest.UsageError(str(exc)) from None


def _recording_arguments(config: pytest.Config) -> tuple[str, ...]:
    from pytest_rfdetr_latency.processes import recording_arguments

    paths = config.args if config.args_source == pytest.Config.ArgsSource.ARGS else []
    flags = [spec.flag for spec in OPTIONS if spec.is_flag]
    return recording_arguments(config.invocation_params.args, paths, bool(config.option.pyargs), flags)


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    settings = _settings(config)
    if not settings.active:
        return
    if settings.child_report is None and not is_worker(config):
        _check_folders(settings)
    if settings.against is not None and settings.child_report is None:
        _check_head_to_head(config, settings)
    if xdist_workers(config) and not is_worker(config):
        _check_baselines_on_controller(config, settings)  # the workers measure; no CUDA context here
        return
    config.stash[SESSION_KEY] = _open_session(config)


def _check_folders(settings: Settings) -> None:
    """Folders this run will write to, checked before anything is measured: a measurement is not lost at the end."""
    from pytest_rfdetr_latency.baselines import cannot_write

    wanted = [("--rfdetr-baseline-dir", settings.baseline_dir)] if settings.save_baseline else []
    wanted += [("--rfdetr-history", settings.history_dir)] if settings.history_dir is not None else []
    for flag, folder in wanted:
        why = cannot_write(folder)
        if why is not None:
            raise pytest.UsageError(f"{flag} {folder}: {why}; give a folder this run can write, or make it writable")


def _check_head_to_head(config: pytest.Config, settings: Settings) -> None:
    from pytest_rfdetr_latency.headtohead import HeadToHeadError, check_interpreter, provenance, same_code

    if xdist_workers(config) or is_worker(config):
        raise pytest.UsageError("--rfdetr-against measures both sides in fresh processes one at a time, each on the "
                                "whole machine: drop -n")
    assert settings.against is not None
    try:
        found = check_interpreter(settings.against, tree=settings.against_tree)
    except HeadToHeadError as exc:
        raise pytest.UsageError(str(exc)) from None
    shared = same_code(provenance(), found.get("provenance") or {}, config.rootpath, settings.against_tree)
    if shared and not settings.against_aa:
        raise pytest.UsageError(
            "--rfdetr-against: both sides would run the same code (" + "; ".join(shared) + "), so the comparison "
            "would measure nothing: give the other side its own checkout (--rfdetr-against-tree=DIR) or environment, "
            "or declare an A/A run with --rfdetr-against-aa")
    config.stash[AGAINST_KEY] = found


def _check_baselines_on_controller(config: pytest.Config, settings: Settings) -> None:
    from pytest_rfdetr_latency import baselines, workers
    from pytest_rfdetr_latency.environment import cpu_name

    gpus = [] if settings.device == "cpu" else workers.visible_gpus()
    try:
        baselines.load_for_device(settings.baseline_dir, gpus[0].name if gpus else cpu_name(),
                                  replacing=settings.save_baseline and settings.replace_corrupt)
    except baselines.BaselineError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "rfdetr_case" not in metafunc.fixturenames:
        return
    settings = _settings(metafunc.config)
    marker = metafunc.definition.get_closest_marker(MARKER)
    kwargs = marker.kwargs if marker else {}
    from pytest_rfdetr_latency.settings import parse_backends, parse_models

    try:
        models = parse_models(",".join(kwargs["models"])) if kwargs.get("models") else settings.models
        backends = parse_backends(",".join(kwargs["backends"])) if kwargs.get("backends") else settings.backends
    except Exception as exc:
        pytest.fail(f"@pytest.mark.{MARKER} on {metafunc.definition.nodeid}: {exc}", pytrace=False)
    # A marker narrows the run's selection; it never adds what the command line left out.
    if kwargs.get("models") and settings.models_explicit:
        models = tuple(m for m in models if m in settings.models)
    if kwargs.get("backends") and settings.backends_explicit:
        backends = tuple(b for b in backends if b in settings.backends)
    if settings.weights.everywhere is not None and not settings.models_explicit and not kwargs.get("models"):
        from pytest_rfdetr_latency.models import ModelError, checkpoint_architecture

        try:  # one checkpoint and no model named: measure the architecture the checkpoint holds
            models = (checkpoint_architecture(settings.weights.everywhere),)
        except ModelError as exc:
            pytest.fail(str(exc), pytrace=False)
    cases = matrix(models, backends, settings.batch_sizes, settings.resolutions, settings.onnx_models)
    params = [pytest.param(c, id=c.id, marks=pytest.mark.xdist_group(c.group)) for c in cases]
    if not params:  # the marker asked only for what the run left out: say so, not "empty parameter set"
        asked = ", ".join(f"{k}={kwargs[k]!r}" for k in ("models", "backends") if kwargs.get(k))
        reason = (f"@pytest.mark.{MARKER}({asked}) and this run's selection (models {','.join(settings.models)}; "
                  f"backends {','.join(settings.backends)}) share no case: a marker narrows the run's selection "
                  "and never adds to it")
        params = [pytest.param(None, id="no-case", marks=pytest.mark.skip(reason=reason))]
    metafunc.parametrize("rfdetr_case", params, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    settings = _settings(config)
    if settings.process_index:
        from pytest_rfdetr_latency.cases import rotated

        cases = {id(item): item.callspec.params["rfdetr_case"] for item in items
                 if hasattr(item, "callspec") and isinstance(item.callspec.params.get("rfdetr_case"), Case)}
        items[:] = rotated(items, lambda item: cases.get(id(item)), settings.process_index)
    if settings.active:
        return
    skip = pytest.mark.skip(reason=DISABLED_REASON)
    for item in items:
        if "rfdetr_case" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


# ---------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def rfdetr_latency_session(request: pytest.FixtureRequest) -> LatencySession:
    """What all RF-DETR latency cases of this session share: device, fingerprint, models, exports, baselines.

    Example::

        def test_device(rfdetr_latency_session):
            print(rfdetr_latency_session.device.name)
    """
    config = request.config
    if SESSION_KEY not in config.stash:
        config.stash[SESSION_KEY] = _open_session(config)
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
    from pytest_rfdetr_latency.quiet import kept_quiet

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
    from pytest_rfdetr_latency.timing import Timer

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

    def spawn(inject: float | None, block_sizes: Mapping[str, int]) -> ChildOutcome:
        from pytest_rfdetr_latency.processes import child_settings, run_child

        progress(config, f"{case.id}: moved past its threshold; measuring it again in a fresh process")
        child = child_settings(_settings(config), process_index=0, cache_dir=rfdetr_latency_session.cache_dir,
                               inject=inject, block_sizes={case.id: block_sizes},
                               placement=rfdetr_latency_session.placement()[0])
        return run_child(config.stash[LAUNCH_KEY], [target], child, timeout=900)

    from pytest_rfdetr_latency.runner import LatencyCase

    return LatencyCase(
        rfdetr_latency_session, case, skip=pytest.skip, fail=pytest.fail, publish=publish, scopes=scopes,
        thresholds=thresholds, budgets=marker_budgets, spawn=spawn, node=target,
        versus=_head_to_head(request.session, rfdetr_latency_session),
    )


def _case_target(item: pytest.Item) -> str:
    return f"{item.path}::{item.nodeid.split('::', 1)[1]}"


def _head_to_head(session: pytest.Session, latency_session: LatencySession) -> HeadToHead | None:
    """With --rfdetr-against, both sides' processes, measured for every selected case when the first case asks."""
    config = session.config
    run = _settings(config)
    if run.against is None:
        return None
    if HEAD_TO_HEAD_KEY not in config.stash:
        from pytest_rfdetr_latency import headtohead

        targets = [_case_target(item) for item in session.items
                   if isinstance(getattr(getattr(item, "callspec", None), "params", {}).get("rfdetr_case"), Case)]
        config.stash[HEAD_TO_HEAD_KEY] = headtohead.measure_for(
            latency_session, config.stash[LAUNCH_KEY], targets, lambda text: progress(config, text),
            config.stash.get(AGAINST_KEY, None))
    return config.stash[HEAD_TO_HEAD_KEY]


# ---------------------------------------------------------------------------------------------------------------
# Results: from the test (possibly on an xdist worker) through the report to the controller.


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    rep = yield
    data = item.stash.get(RESULT_ITEM_KEY, None)
    if data is not None and rep.when == "call":
        rep.user_properties.append((PROPERTY, json.dumps(data)))
        del item.stash[RESULT_ITEM_KEY]
    return rep
