"""The per-device baseline store: one JSON file per device model, merged on save and replaced atomically.

A baseline file is the memory of the gate: weeks of measurements on hardware that is expensive to get. So it is
validated strictly on load (a damaged file is reported, never half-used), never truncated (a new version is
written to a temporary file beside it and renamed over it, after an fsync), merged (cases not measured now keep
their entries; other devices live in other files), written under a lock (two processes saving at once both land),
and its permissions survive the replacement.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_rfdetr_latency.scopes import ALL_SCOPES

SCHEMA_VERSION = 1
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,95}$")
_STAT_NUMBERS = ("value_ms", "median_ms", "mean_ms", "std_ms", "min_ms", "p10_ms", "p90_ms", "rel_uncertainty")


class BaselineError(Exception):
    """A baseline file cannot be used as it is; the message names the file, what is wrong and the fix."""


@dataclass
class Baselines:
    path: Path
    device: str
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)


def path_for(directory: Path, slug: str) -> Path:
    """The file of device ``slug`` in ``directory``; a slug that could leave the folder is refused."""
    if not _SLUG.match(slug):
        raise BaselineError(f"device name {slug!r} cannot name a baseline file (letters, digits and '-' only)")
    path = directory / f"{slug}.json"
    if path.resolve().parent != directory.resolve():
        raise BaselineError(f"baseline file {path} would lie outside {directory}")
    return path


def other_devices(directory: Path, slug: str) -> list[Path]:
    """Baseline files of other devices in ``directory``, for messages that say what does exist."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.json") if p.stem != slug and _SLUG.match(p.stem))


def _fail(path: Path, where: str, problem: str) -> BaselineError:
    location = f" at {where}" if where else ""
    return BaselineError(
        f"baseline file {path} is not usable{location}: {problem}. The file was left untouched: restore it from "
        "version control, or record it again with --save-baseline --rfdetr-replace-corrupt-baseline"
    )


def _validate(path: Path, data: Any) -> Baselines:
    if not isinstance(data, dict):
        raise _fail(path, "", f"expected a JSON object, found {type(data).__name__}")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _fail(path, "schema_version", f"expected a whole number, found {version!r}")
    if version != SCHEMA_VERSION:
        newer = version > SCHEMA_VERSION
        raise BaselineError(
            f"baseline file {path} has schema version {version}; this pytest-rfdetr-latency reads version "
            f"{SCHEMA_VERSION} only. "
            + ("Upgrade pytest-rfdetr-latency to read it." if newer else "Record it again with --save-baseline.")
            + " The file was left untouched."
        )
    device = data.get("device")
    if not isinstance(device, str) or not device:
        raise _fail(path, "device", f"expected the device name as text, found {device!r}")
    entries = data.get("entries")
    if not isinstance(entries, dict):
        raise _fail(path, "entries", f"expected an object of case ids, found {type(entries).__name__}")
    for case_id, entry in entries.items():
        where = f"entries[{case_id!r}]"
        if not isinstance(entry, dict):
            raise _fail(path, where, f"expected an object, found {type(entry).__name__}")
        if not isinstance(entry.get("fingerprint"), dict):
            raise _fail(path, f"{where}.fingerprint", "expected an object")
        if not isinstance(entry.get("recorded_at"), str):
            raise _fail(path, f"{where}.recorded_at", "expected a timestamp text")
        scopes = entry.get("scopes")
        if not isinstance(scopes, dict) or not scopes:
            raise _fail(path, f"{where}.scopes", "expected a non-empty object of scopes")
        for scope, stats in scopes.items():
            _validate_stats(path, f"{where}.scopes.{scope}", scope, stats)
    return Baselines(path=path, device=device, entries=entries)


def _validate_stats(path: Path, where: str, scope: str, stats: Any) -> None:
    if scope not in ALL_SCOPES:
        raise _fail(path, where, f"unknown scope {scope!r} (known: {', '.join(ALL_SCOPES)})")
    if not isinstance(stats, dict):
        raise _fail(path, where, f"expected an object, found {type(stats).__name__}")
    if not isinstance(stats.get("statistic"), str):
        raise _fail(path, f"{where}.statistic", f"expected text, found {stats.get('statistic')!r}")
    for key in _STAT_NUMBERS:
        value = stats.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise _fail(path, f"{where}.{key}", f"expected a finite non-negative number, found {value!r}")
    if stats["value_ms"] <= 0:
        raise _fail(path, f"{where}.value_ms", f"expected a positive number, found {stats['value_ms']!r}")
    blocks = stats.get("blocks_ms")
    if not isinstance(blocks, list) or len(blocks) < 2 or not all(
        isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) and b >= 0 for b in blocks
    ):
        raise _fail(path, f"{where}.blocks_ms", "expected a list of at least two finite non-negative numbers")
    n = stats.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise _fail(path, f"{where}.n", f"expected a whole number >= 1, found {n!r}")


def load(path: Path) -> Baselines | None:
    """The baselines in ``path``, or None when it does not exist. Raises :class:`BaselineError` if it is damaged."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BaselineError(f"baseline file {path} cannot be read: {exc.strerror}. Check its permissions") from exc
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _fail(path, f"byte {exc.start}", "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        problem = "empty file" if not raw.strip() else f"not valid JSON ({exc.msg})"
        raise _fail(path, f"line {exc.lineno} column {exc.colno}", problem) from None
    return _validate(path, data)


def load_for_device(directory: Path, device: str, *, replacing: bool = False) -> tuple[Path, Baselines | None]:
    """The baseline file of ``device`` in ``directory`` and its contents (None: no file). A damaged file raises,
    unless the run was asked to replace it (``replacing``); a file that records another device always raises."""
    from pytest_rfdetr_latency.environment import slugify

    path = path_for(directory, slugify(device))
    try:
        found = load(path)
    except BaselineError:
        if not replacing:
            raise
        return path, None  # recording over a damaged file was asked for; saving keeps the old one as a backup
    if found is not None and found.device != device:
        raise BaselineError(
            f"baseline file {path} records device {found.device!r}, but this run measures on {device!r}: a "
            "baseline of another device is never compared against"
        )
    return path, found


def render(device: str, entries: Mapping[str, Mapping[str, Any]]) -> str:
    """The file's text: schema version, sorted keys, indent 2, trailing newline (reviewable in pull requests)."""
    document = {"schema_version": SCHEMA_VERSION, "device": device, "entries": dict(entries)}
    return json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n"


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` all at once: a reader sees the old file or the new one, never a part."""
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


@dataclass
class SaveResult:
    path: Path
    written: list[str]
    kept: int  # entries of other cases left as they were
    backup: Path | None = None


def save(
    path: Path,
    device: str,
    new_entries: Mapping[str, Mapping[str, Any]],
    *,
    replace_corrupt: bool = False,
    lock_timeout: float = 600.0,
) -> SaveResult:
    """Merge ``new_entries`` into the file at ``path`` (created if missing), under a lock, atomically."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    _ignore_scratch_files(path.parent)
    lock = FileLock(str(path.parent / f".{path.name}.lock"))
    try:
        lock.acquire(timeout=lock_timeout)
    except Timeout:
        raise BaselineError(
            f"another process has held the lock on {path} for {lock_timeout:.0f} s; if none is running, delete "
            f"{lock.lock_file}"
        ) from None
    try:
        backup = None
        try:
            current = load(path)
        except BaselineError as exc:
            if not replace_corrupt:
                raise BaselineError(
                    f"{exc}. --save-baseline refuses to replace a file it cannot read; pass "
                    "--rfdetr-replace-corrupt-baseline to replace it (the old file is kept as a backup)"
                ) from None
            backup = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}.bak")
            shutil.copy2(path, backup)
            current = None
        if current is not None and current.device != device:
            raise BaselineError(
                f"baseline file {path} records device {current.device!r}, but this run measured {device!r}: "
                "they share a file name but are different devices, so nothing was written; rename one of them"
            )
        entries = dict(current.entries) if current else {}
        kept = sum(1 for case_id in entries if case_id not in new_entries)
        entries.update({case_id: dict(entry) for case_id, entry in new_entries.items()})
        atomic_write(path, render(device, entries))
        return SaveResult(path=path, written=sorted(new_entries), kept=kept, backup=backup)
    finally:
        lock.release()


def _ignore_scratch_files(directory: Path) -> None:
    """Keep lock and temporary files out of version control in a new baseline folder."""
    ignore = directory / ".gitignore"
    if not ignore.exists():
        try:
            ignore.write_text(".*.lock\n.*.tmp\n")
        except OSError:
            pass
