"""pytest hooks, options and fixtures: the only module that talks to pytest.

It stays thin: options come from :data:`settings.OPTIONS`, and torch, rfdetr and onnxruntime are imported only
once a latency run starts (``pytest --help`` imports none of them).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_rfdetr_latency import report
from pytest_rfdetr_latency.cases import Case, matrix
from pytest_rfdetr_latency.settings import OPTIONS, RawValue, Settings, SettingsError, parse_scopes, parse_tolerance

if TYPE_CHECKING:
    from PIL import Image

    from pytest_rfdetr_latency.runner import LatencyCase, LatencySession
    from pytest_rfdetr_latency.timing import Timer

SETTINGS_KEY = pytest.StashKey[Settings]()
SESSION_KEY = pytest.StashKey["LatencySession"]()
RESULT_ITEM_KEY = pytest.StashKey[dict[str, Any]]()
WORKER_KEY = pytest.StashKey[dict[str, Any]]()
PROPERTY = "rfdetr_latency_result"
MARKER = "rfdetr_latency"
DISABLED_REASON = "RF-DETR latency cases run only with --rfdetr-latency (to check) or --save-baseline (to record)"


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_rfdetr_latency import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rfdetr-latency", "RF-DETR latency gate (pytest-rfdetr-latency)")
    for spec in OPTIONS:
        text = spec.help.replace("%", "%%")  # argparse formats help with %
        if spec.is_flag:
            group.addoption(spec.flag, action="store_true", default=False, dest=f"rfdetr_{spec.dest}", help=text)
        else:
            group.addoption(spec.flag, dest=f"rfdetr_{spec.dest}", type=spec.parser, metavar=spec.metavar, help=text)
        if spec.ini:
            parser.addini(spec.ini_name, spec.help, type="string", default="")


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(models=None, backends=None, scopes=None, tolerance=None, budget=None): restrict the RF-DETR "
        "latency cases of a test that uses the rfdetr_case fixture, set which scopes gate and with what tolerance, "
        "and give absolute budgets ('e2e:median<=12ms@nvidia-h200')",
    )
    config.addinivalue_line("markers", "xdist_group(name): keep the tests of one group on one xdist worker")
    raw = {
        spec.dest: RawValue(
            cli=config.getoption(f"rfdetr_{spec.dest}"),
            ini=config.getini(spec.ini_name) if spec.ini else None,
            ini_file=str(config.inipath) if config.inipath else None,
        )
        for spec in OPTIONS
    }
    from pytest_rfdetr_latency.settings import resolve

    try:
        settings = resolve(raw, os.environ, config.rootpath)
    except SettingsError as exc:
        if config.getoption("help"):
            return
        raise pytest.UsageError(str(exc)) from None
    config.stash[SETTINGS_KEY] = settings
    config.pluginmanager.register(ResultCollector(config), "rfdetr-latency-results")
    if settings.active:
        _bind_xdist_workers(config, settings)


def _xdist_workers(config: pytest.Config) -> int:
    """How many xdist workers this run starts (0 without xdist); read on the controller."""
    count = getattr(config.option, "numprocesses", None)
    return count if isinstance(count, int) and getattr(config.option, "dist", "no") != "no" else 0


def _bind_xdist_workers(config: pytest.Config, settings: Settings) -> None:
    """On the controller, check that the workers can be bound; on a worker, bind it to its GPU and cores."""
    from pytest_rfdetr_latency import workers

    if _is_worker(config):
        index, count = workers.worker_index(config.workerinput)  # type: ignore[attr-defined]
    else:
        index, count = 0, _xdist_workers(config)
        if count == 0:
            return
    gpus = [] if settings.device == "cpu" else workers.visible_gpus()
    try:
        bindings = workers.plan(count, settings.device, gpus, workers.affinity())
    except workers.WorkerPlanError as exc:
        raise pytest.UsageError(str(exc)) from None
    if _is_worker(config):
        config.stash[WORKER_KEY] = {"worker": f"gw{index}", **workers.apply(bindings[index])}
    else:
        config.stash[WORKER_KEY] = {"plan": [b.describe() for b in bindings]}


def pytest_cmdline_main(config: pytest.Config) -> None:
    # xdist's default distribution spreads one model's cases over every worker, so each builds the model again;
    # loadgroup keeps a model's cases together (the plugin marks each case with its model's group).
    latency = config.getoption("rfdetr_enabled", False) or config.getoption("rfdetr_save_baseline", False)
    if latency and getattr(config.option, "dist", None) == "load":
        config.option.dist = "loadgroup"


def _settings(config: pytest.Config) -> Settings:
    return config.stash.get(SETTINGS_KEY, Settings())


def _cache_dir(config: pytest.Config, settings: Settings) -> Path:
    if settings.cache_dir is not None:
        return settings.cache_dir
    cache = getattr(config, "cache", None)  # absent with -p no:cacheprovider
    if cache is not None:
        return Path(cache.mkdir("rfdetr-latency"))
    return config.rootpath / ".rfdetr-latency-cache"


def _open_session(config: pytest.Config) -> LatencySession:
    """Resolve the device and load its baseline file; a problem with either is a usage error."""
    from pytest_rfdetr_latency.baselines import BaselineError
    from pytest_rfdetr_latency.environment import DeviceError, resolve_device
    from pytest_rfdetr_latency.runner import LatencySession

    settings = _settings(config)
    extra: dict[str, Any] = {}
    for fields in config.hook.pytest_rfdetr_latency_fingerprint(config=config):
        extra.update(fields or {})
    worker = config.stash.get(WORKER_KEY, {})
    threads = int(worker["threads"]) if "threads" in worker else None
    try:
        device = resolve_device(settings.device)
        session = LatencySession(settings, device, _cache_dir(config, settings), config.rootpath, extra, threads)
        session.progress = lambda text: _progress(config, text)
        return session
    except (DeviceError, BaselineError) as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    settings = _settings(config)
    if not settings.active:
        return
    if _xdist_workers(config) and not _is_worker(config):
        _check_baselines_on_controller(config, settings)  # the workers measure; no CUDA context here
        return
    config.stash[SESSION_KEY] = _open_session(config)


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
    if kwargs.get("backends") and settings.backends != Settings().backends:
        backends = tuple(b for b in backends if b in settings.backends)
    if settings.weights.everywhere is not None and not settings.models_explicit and not kwargs.get("models"):
        from pytest_rfdetr_latency.models import ModelError, checkpoint_architecture

        try:  # one checkpoint and no model named: measure the architecture the checkpoint holds
            models = (checkpoint_architecture(settings.weights.everywhere),)
        except ModelError as exc:
            pytest.fail(str(exc), pytrace=False)
    cases = matrix(models, backends, settings.batch_sizes, settings.resolutions, settings.onnx_models)
    params = [pytest.param(c, id=c.id, marks=pytest.mark.xdist_group(c.group)) for c in cases]
    metafunc.parametrize("rfdetr_case", params, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _settings(config).active:
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
    return rfdetr_latency_session.model


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

        def test_forward(rfdetr_timer, rfdetr_model_loader):
            model = rfdetr_model_loader("RFDETRNano")
            stats = rfdetr_timer.measure(lambda: model.predict(image))
            assert stats.median < 500  # ms
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
    kwargs = marker.kwargs if marker else {}
    scopes = parse_scopes(",".join(kwargs["scopes"])) if kwargs.get("scopes") else None
    from pytest_rfdetr_latency import budgets

    marker_budgets = tuple(budgets.parse(str(spec), case=case.id) for spec in _as_list(kwargs.get("budget")))
    thresholds: dict[str, float] = {}
    if kwargs.get("tolerance"):
        tolerance = parse_tolerance(str(kwargs["tolerance"]))
        for scope in ("e2e", "forward", "iobinding", "device"):
            if scope in tolerance.per_scope or tolerance.everywhere is not None:
                thresholds[scope] = tolerance.for_scope(scope, 0.0)
    node = request.node

    def publish(result: Any) -> None:
        data = result.to_json()
        worker = request.config.stash.get(WORKER_KEY, None)
        if worker is not None:
            data["details"]["worker"] = worker
        if result.scopes:  # what --save-baseline records; tools such as benchmarks/gate_power.py reuse it
            data["baseline_entry"] = result.entry(rfdetr_latency_session.commit)
        node.stash[RESULT_ITEM_KEY] = data

    def spawn(inject: float | None) -> dict[str, Any] | None:
        _progress(request.config, f"{case.id}: measuring again in a fresh process")
        return _measure_in_fresh_process(request.config, node, inject)

    return rfdetr_latency_session.case(
        case, skip=pytest.skip, fail=pytest.fail, publish=publish, scopes=scopes, thresholds=thresholds,
        budgets=marker_budgets, spawn=spawn,
    )


def _measure_in_fresh_process(config: pytest.Config, node: pytest.Item, inject: float | None) -> dict[str, Any] | None:
    from pytest_rfdetr_latency.processes import measure_in_fresh_process

    return measure_in_fresh_process(
        target=f"{node.path}::{node.nodeid.split('::', 1)[1]}",
        args=list(config.invocation_params.args),
        cwd=config.invocation_params.dir,
        rootdir=config.rootpath,
        inifile=config.inipath,
        inject=inject,
    )


def _progress(config: pytest.Config, text: str) -> None:
    """A line about a long step, shown live with -v (or on a terminal), around pytest's output capture."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or _settings(config).child_report is not None or _is_worker(config):
        return
    if config.get_verbosity() < 1 and not reporter.isatty():
        return
    capture = config.pluginmanager.get_plugin("capturemanager")
    disabled = getattr(capture, "global_and_fixture_disabled", None)
    import contextlib

    with disabled() if disabled is not None else contextlib.nullcontext():
        reporter.ensure_newline()
        reporter.write_line(f"  [rfdetr-latency] {text}", cyan=True)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


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


class ResultCollector:
    """Gathers case results on the process that reports (the xdist controller, or the only process), then
    records baselines, writes the JSON report and the Markdown summary, and prints the terminal section."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.errors: list[str] = []
        self.annotations: list[str] = []  # GitHub workflow commands, each at the start of its own line

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == PROPERTY:
                self.results.append(json.loads(str(value)))

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        settings = _settings(self.config)
        if _is_worker(self.config) or settings.child_report is not None:
            return
        if settings.save_baseline:
            self._save(settings)
        device = self._device()
        fingerprint = self.results[0]["fingerprint"] if self.results else None
        if settings.report is not None and (self.results or settings.active):
            from pytest_rfdetr_latency.baselines import atomic_write

            files = sorted({r["baseline_file"] for r in self.results})
            document = report.json_report(self.results, device, fingerprint, sys.argv, ", ".join(files) or None)
            settings.report.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(settings.report, json.dumps(document, indent=2, sort_keys=True) + "\n")
            self.notes.append(f"JSON report written to {settings.report}")
        if settings.benchmark_json is not None and self.results:
            from pytest_rfdetr_latency.baselines import atomic_write
            from pytest_rfdetr_latency.exports import benchmark_json

            commit = next((r.get("baseline_entry", {}).get("git_commit") for r in self.results), None)
            settings.benchmark_json.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(settings.benchmark_json,
                         json.dumps(benchmark_json(self.results, fingerprint, commit), indent=2) + "\n")
            self.notes.append(f"pytest-benchmark JSON written to {settings.benchmark_json}")
        if settings.plot_dir is not None and self.results:
            try:
                from pytest_rfdetr_latency.plots import write_all

                written = write_all(self.results, settings.plot_dir)
                self.notes.append(f"{len(written)} plot(s) written to {settings.plot_dir}")
            except ImportError:
                self.errors.append("--rfdetr-plot needs matplotlib: pip install 'pytest-rfdetr-latency[plot]'")
        targets = [p for p in (settings.markdown, os.environ.get("GITHUB_STEP_SUMMARY")) if p]
        if self.results:
            text = report.markdown(self.results, device, fingerprint)
            for target in targets:
                with open(target, "a", encoding="utf-8") as handle:
                    handle.write(text)
                self.notes.append(f"Markdown summary appended to {target}")
            if os.environ.get("GITHUB_ACTIONS") == "true":
                self.annotations = report.github_annotations(self.results)
        if self.errors and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _save(self, settings: Settings) -> None:
        from pytest_rfdetr_latency import baselines
        from pytest_rfdetr_latency.environment import slugify

        by_device: dict[str, dict[str, Any]] = {}
        for result in self.results:
            if result.get("outcome") == "saved" and "baseline_entry" in result:
                by_device.setdefault(result["device"], {})[result["id"]] = result["baseline_entry"]
        for device, entries in by_device.items():
            try:
                path = baselines.path_for(settings.baseline_dir, slugify(device))
                saved = baselines.save(path, device, entries, replace_corrupt=settings.replace_corrupt)
            except baselines.BaselineError as exc:
                self.errors.append(f"baseline not saved: {exc}")
                continue
            note = f"baseline: {len(saved.written)} case(s) recorded in {saved.path} ({saved.kept} other(s) kept)"
            if saved.backup is not None:
                note += f"; the unreadable old file was kept as {saved.backup}"
            self.notes.append(note)

    def _device(self) -> str | None:
        names = sorted({r["device"] for r in self.results})
        if names:
            return ", ".join(names)
        latency_session = self.config.stash.get(SESSION_KEY, None)
        return latency_session.device.name if latency_session else None

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not (self.results or self.notes or self.errors) or _settings(self.config).child_report is not None:
            return
        device = self._device()
        terminalreporter.write_sep("=", f"RF-DETR latency ({device or 'no device'})")
        for line in report.summary_lines(self.results, device):
            terminalreporter.write_line(line)
        plan = self.config.stash.get(WORKER_KEY, {}).get("plan")
        if plan:
            terminalreporter.write_line("xdist workers: " + "; ".join(plan))
        for line in self.annotations:
            terminalreporter.write_line(line)
        for note in self.notes:
            terminalreporter.write_line(note)
        for error in self.errors:
            terminalreporter.write_line(f"ERROR: {error}", red=True, bold=True)
