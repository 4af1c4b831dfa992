"""pytest hooks and options: the plugin's face, with its fixtures (fixtures.py) the modules that talk to pytest.

It stays thin: options come from :data:`settings.OPTIONS`, and torch, rfdetr and onnxruntime are imported only
once a latency run starts (``pytest --help`` imports none of them).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import warnings
from collections.abc import Generator
from typing import TYPE_CHECKING

import pytest

from pytest_rfdetr_latency import sigterm
from pytest_rfdetr_latency.measure.cases import Case, matrix
from pytest_rfdetr_latency.measure.settings import OPTION_GROUPS, OPTIONS, RawValue, Settings, SettingsError
from pytest_rfdetr_latency.report.exports import remove_if_left_empty, unmade_storage
from pytest_rfdetr_latency.stash import (
    AGAINST_KEY,
    DIST_KEY,
    LAUNCH_KEY,
    MARKER,
    PROPERTY,
    RESULT_ITEM_KEY,
    SESSION_KEY,
    SETTINGS_KEY,
    SIGTERM_KEY,
    STORAGE_KEY,
    WORKER_KEY,
    is_worker,
    open_session,
    xdist_workers,
)
from pytest_rfdetr_latency.stash import settings as _settings

# The fixtures (rfdetr_case, rfdetr_timer, ...) live in a module of their own, registered with this one.
pytest_plugins = ("pytest_rfdetr_latency.fixtures",)

if TYPE_CHECKING:

    pass

DISABLED_REASON = "RF-DETR latency cases run only with --rfdetr-latency (to check) or --save-baseline (to record)"


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_rfdetr_latency import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    groups = {dest: parser.getgroup(title.lower().replace(" ", "-"), title)
              for title, members in OPTION_GROUPS.items() for dest in members}
    for spec in OPTIONS:
        group = groups[spec.dest]
        text = spec.full_help.replace("%", "%%")  # argparse formats help with %
        if spec.is_flag:
            group.addoption(spec.flag, action="store_true", default=False, dest=f"rfdetr_{spec.dest}", help=text)
        else:
            group.addoption(spec.flag, dest=f"rfdetr_{spec.dest}", type=spec.parser, metavar=spec.metavar, help=text)
        if spec.ini:
            parser.addini(spec.ini_name, spec.help, type="string", default="")


def pytest_configure(config: pytest.Config) -> None:
    # pytest-benchmark (configured after this plugin) makes its storage folder in every run; an empty one is removed.
    config.stash[STORAGE_KEY] = unmade_storage(config.getoption("benchmark_storage", None))
    config.addinivalue_line(
        "markers",
        f"{MARKER}(models=None, backends=None, scopes=None, tolerance=None, budget=None): restrict the RF-DETR "
        "latency cases of a test that uses the rfdetr_case fixture, set which scopes gate and with what tolerance, "
        "and give absolute budgets ('e2e:median<=12ms@nvidia-h200')",
    )
    config.addinivalue_line("markers", "xdist_group(name): keep the tests of one group on one xdist worker")
    from pytest_rfdetr_latency.collector import ResultCollector
    from pytest_rfdetr_latency.measure.processes import CHILD_ENV, Launch, given_options, load_child_settings

    child = os.environ.get(CHILD_ENV)
    if child:  # a fresh process of a recording or a confirmation: the parent's settings, exactly
        from pytest_rfdetr_latency.measure import lockstep

        settings = load_child_settings(child)
        lockstep.begin()  # one of the processes that take turns (head to head): wait for the others to start
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
    in_main_thread = threading.current_thread() is threading.main_thread()  # where alone a handler can be set
    if settings.active and not is_worker(config) and in_main_thread:  # a fresh process too: a stopped run stops it
        config.stash[SIGTERM_KEY] = signal.signal(signal.SIGTERM, sigterm.stop_as_interrupted)


def _resolve(config: pytest.Config) -> Settings:
    from pytest_rfdetr_latency.measure.settings import check_ini_keys, resolve

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
    from pytest_rfdetr_latency.measure import workers

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


def pytest_unconfigure(config: pytest.Config) -> None:
    remove_if_left_empty(config.stash.get(STORAGE_KEY, None))
    if SIGTERM_KEY in config.stash:  # None: a handler set outside Python, which cannot be put back: the default
        before = config.stash[SIGTERM_KEY]
        signal.signal(signal.SIGTERM, signal.SIG_DFL if before is None else before)


def pytest_cmdline_main(config: pytest.Config) -> None:
    # xdist's default distribution spreads one model's cases over every worker, so each builds the model again;
    # loadgroup keeps a model's cases together (the plugin marks each case with its model's group).
    latency = config.getoption("rfdetr_enabled", False) or config.getoption("rfdetr_save_baseline", False)
    if latency and getattr(config.option, "dist", None) == "load":
        config.option.dist = "loadgroup"
        config.stash[DIST_KEY] = True  # said in the summary, beside the workers' binding


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
    config.stash[SESSION_KEY] = open_session(config)


def _check_folders(settings: Settings) -> None:
    """Folders this run will write to, checked before anything is measured: a measurement is not lost at the end."""
    from pytest_rfdetr_latency.store.baselines import cannot_write

    wanted = [("--rfdetr-baseline-dir", settings.baseline_dir)] if settings.save_baseline else []
    wanted += [("--rfdetr-history", settings.history_dir)] if settings.history_dir is not None else []
    wanted += [("--rfdetr-plot", settings.plot_dir)] if settings.plot_dir is not None else []
    for flag, folder in wanted:
        why = cannot_write(folder)
        if why is not None:
            raise pytest.UsageError(f"{flag} {folder}: {why}; give a folder this run can write")
    files = [("--rfdetr-report", settings.report), ("--rfdetr-markdown", settings.markdown),
             ("--rfdetr-benchmark-json", settings.benchmark_json)]
    for flag, file in files:
        if file is None:
            continue
        why = f"{file} is a folder" if file.is_dir() else cannot_write(file.parent)
        if why is not None:
            raise pytest.UsageError(f"{flag} {file}: {why}; give a file path in a folder this run can write")


def _check_head_to_head(config: pytest.Config, settings: Settings) -> None:
    from pytest_rfdetr_latency.measure.headtohead import HeadToHeadError, check_interpreter, provenance, same_code

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
    from pytest_rfdetr_latency.measure import workers
    from pytest_rfdetr_latency.measure.environment import cpu_name
    from pytest_rfdetr_latency.store import baselines

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
    from pytest_rfdetr_latency.measure.settings import parse_backends, parse_models

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
        from pytest_rfdetr_latency.measure.models import ModelError, checkpoint_architecture

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
        from pytest_rfdetr_latency.measure.cases import rotated

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
