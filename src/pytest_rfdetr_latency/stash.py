"""Where the plugin keeps run state on pytest's config: the stash keys and the accessors the other pytest-facing
modules share."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_rfdetr_latency.measure.settings import Settings

if TYPE_CHECKING:  # named in the stash keys' types below (strings, so that --help imports none)
    from pytest_rfdetr_latency.measure.headtohead import HeadToHead  # noqa: F401
    from pytest_rfdetr_latency.measure.processes import Launch  # noqa: F401
    from pytest_rfdetr_latency.measure.session import LatencySession

SETTINGS_KEY = pytest.StashKey[Settings]()
SESSION_KEY = pytest.StashKey["LatencySession"]()
RESULT_ITEM_KEY = pytest.StashKey[dict[str, Any]]()
WORKER_KEY = pytest.StashKey[dict[str, Any]]()
DIST_KEY = pytest.StashKey[bool]()  # --dist load was made loadgroup
LAUNCH_KEY = pytest.StashKey["Launch"]()
HEAD_TO_HEAD_KEY = pytest.StashKey["HeadToHead"]()  # both sides' processes, measured at the first case
AGAINST_KEY = pytest.StashKey[dict[str, Any]]()  # what the other side's interpreter reported of itself
STORAGE_KEY = pytest.StashKey["Path | None"]()  # pytest-benchmark's storage folder, where this run is to make it
SIGTERM_KEY = pytest.StashKey[Any]()  # the SIGTERM handler this run replaced (plugin.pytest_configure), to restore
PROPERTY = "rfdetr_latency_result"  # the user property that carries a case's result to the reporting process
MARKER = "rfdetr_latency"


def settings(config: pytest.Config) -> Settings:
    return config.stash.get(SETTINGS_KEY, Settings())


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def xdist_workers(config: pytest.Config) -> int:
    """How many xdist workers this run starts (0 without xdist); read on the controller."""
    count = getattr(config.option, "numprocesses", None)
    return count if isinstance(count, int) and getattr(config.option, "dist", "no") != "no" else 0


def cache_dir(config: pytest.Config) -> Path:
    """Where ONNX exports are cached: --rfdetr-cache-dir, else the pytest cache, else a folder under the rootdir."""
    run = settings(config)
    if run.cache_dir is not None:
        return run.cache_dir
    cache = getattr(config, "cache", None)  # absent with -p no:cacheprovider
    if cache is not None:
        return Path(cache.mkdir("rfdetr-latency"))
    return config.rootpath / ".rfdetr-latency-cache"


def progress(config: pytest.Config, text: str) -> None:
    """A line about a long step, shown live with -v (or on a terminal), around pytest's output capture."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or settings(config).child_report is not None or is_worker(config):
        return
    if config.get_verbosity() < 1 and not reporter.isatty():
        return
    capture = config.pluginmanager.get_plugin("capturemanager")
    disabled = getattr(capture, "global_and_fixture_disabled", None)
    import contextlib

    with disabled() if disabled is not None else contextlib.nullcontext():
        reporter.ensure_newline()
        reporter.write_line(f"  [rfdetr-latency] {text}", cyan=True)


def open_session(config: pytest.Config) -> LatencySession:
    """Resolve the device and load its baseline file; a problem with either is a usage error."""
    from pytest_rfdetr_latency.measure.environment import DeviceError, resolve_device
    from pytest_rfdetr_latency.measure.fake import spec as fake_spec
    from pytest_rfdetr_latency.measure.session import LatencySession
    from pytest_rfdetr_latency.store.baselines import BaselineError, lock_unusable

    run = settings(config)
    extra: dict[str, Any] = {}
    for fields in config.hook.pytest_rfdetr_latency_fingerprint(config=config):
        extra.update(fields or {})
    worker = config.stash.get(WORKER_KEY, {})
    threads = int(worker["threads"]) if "threads" in worker else None
    try:
        session_type: type[LatencySession] = LatencySession
        if fake_spec() is not None:  # the plugin's own tests of its mechanism, never a user's run (measure/fake.py)
            from pytest_rfdetr_latency.measure.fake import FakeSession

            device, session_type = FakeSession.device_for(run.device), FakeSession
        else:
            device = resolve_device(run.device)
        session = session_type(run, device, cache_dir(config), config.rootpath, extra, threads)
        session.progress = lambda text: progress(config, text)
        session.invocation = recording_arguments(config)
    except (DeviceError, BaselineError) as exc:
        raise pytest.UsageError(str(exc)) from None
    why = lock_unusable(session.baseline_path) if run.save_baseline and not run.child_report else None
    if why is not None:  # found before measuring, not when the recording is to be saved
        raise pytest.UsageError(f"--save-baseline: {session.baseline_path} could not be saved: {why}; delete it or "
                                "make it writable, or record into another folder with --rfdetr-baseline-dir")
    return session


def recording_arguments(config: pytest.Config) -> tuple[str, ...]:
    from pytest_rfdetr_latency.measure.processes import recording_arguments as given
    from pytest_rfdetr_latency.measure.settings import OPTIONS

    paths = config.args if config.args_source == pytest.Config.ArgsSource.ARGS else []
    flags = [spec.flag for spec in OPTIONS if spec.is_flag]
    return given(config.invocation_params.args, paths, bool(config.option.pyargs), flags)
