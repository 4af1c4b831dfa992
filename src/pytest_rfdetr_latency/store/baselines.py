"""The per-device baseline store: one JSON file per device model, merged on save and replaced atomically.

A baseline file is the memory of the gate: weeks of measurements on hardware that is expensive to get. So it is
validated strictly on load (a damaged file is reported, never half-used), never truncated (a new version is
written to a temporary file beside it and renamed over it, after an fsync), merged (cases not measured now keep
their entries; other devices live in other files), written under a lock (two processes saving at once both land),
and its permissions survive the replacement.
"""

from __future__ import annotations

# Over 350 lines on purpose: reading, validating, merging and the atomic locked write of a baseline file stay together,
# so that no path writes a baseline around them.
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,95}$")


class BaselineError(Exception):
    """A baseline file cannot be used as it is; the message names the file, what is wrong and the fix."""


@dataclass
class Baselines:
    path: Path
    device: str
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    upgraded_from: int | None = None  # the schema version the file was written in, when older than this one


def slugify(name: str) -> str:
    """A file-name-safe form of a device name: lower case letters, digits and single dashes, nothing else.

    >>> slugify("NVIDIA H200")
    'nvidia-h200'
    >>> slugify("../../etc/passwd")
    'etc-passwd'
    """
    text = re.sub(r"\((r|tm)\)", "", name.lower())
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:96].strip("-")
    return slug or "unknown-device"


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


def _upgrade_v1(data: dict[str, Any]) -> None:
    """Version 1 recorded one process per case: each scope's figure becomes that one process (its block size, which
    version 1 did not store, is what its samples and blocks imply)."""
    entries = data.get("entries")
    if not isinstance(entries, dict):
        return
    for entry in entries.values():
        if not isinstance(entry, dict):
            continue
        entry.setdefault("processes", 1)
        scopes = entry.get("scopes")
        if not isinstance(scopes, dict):
            continue
        for scope, stats in scopes.items():
            if not isinstance(stats, dict) or "processes" in stats:
                continue
            blocks, n = stats.get("blocks_ms"), stats.get("n")
            size = stats.get("block_size")
            if not size and isinstance(blocks, list) and blocks and isinstance(n, int):
                size = max(1, n // len(blocks))
            process = {**stats, "block_size": size}
            scopes[scope] = {"statistic": stats.get("statistic"), "value_ms": stats.get("value_ms"),
                             "block_size": size, "spread": None, "processes": [process]}
        memory = entry.get("memory")
        if isinstance(memory, dict) and "processes" not in memory:
            memory["processes"] = [memory.get("peak_mib")]


def _where(loc: tuple[int | str, ...]) -> str:
    text = ""
    for i, part in enumerate(loc):
        if i == 1 and loc[0] == "entries":
            text += f"[{part!r}]"
        elif isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def _validate(path: Path, data: Any) -> Baselines:
    from pydantic import ValidationError

    from pytest_rfdetr_latency.store.schema import BaselineFile

    if not isinstance(data, dict):
        raise _fail(path, "", f"expected a JSON object, found {type(data).__name__}")
    missing = [key for key in ("schema_version", "device", "entries") if key not in data]
    if missing:
        raise _fail(path, "", f"it has no {', no '.join(missing)}: a baseline file holds schema_version, device and "
                              "entries")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _fail(path, "schema_version", f"expected a whole number, found {version!r}")
    if version > SCHEMA_VERSION or version < 1:
        raise BaselineError(
            f"baseline file {path} has schema version {version}; this pytest-rfdetr-latency reads versions 1 to "
            f"{SCHEMA_VERSION}. "
            + ("Upgrade pytest-rfdetr-latency to read it." if version > SCHEMA_VERSION else
               "Record it again with --save-baseline --rfdetr-replace-corrupt-baseline.")
            + " The file was left untouched."
        )
    upgraded = None
    if version < SCHEMA_VERSION:
        data = json.loads(json.dumps(data))  # a copy to upgrade
        _upgrade_v1(data)
        data["schema_version"] = SCHEMA_VERSION
        upgraded = version
    try:
        document = BaselineFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        found = repr(first.get("input"))
        problem = f"{first['msg']} (found {found[:80]}{'...' if len(found) > 80 else ''})"
        if upgraded:
            problem += f"; the file has schema version {upgraded}, read as version {SCHEMA_VERSION}"
        raise _fail(path, _where(tuple(first["loc"])), problem) from None
    dumped = document.model_dump(mode="json")
    return Baselines(path=path, device=dumped["device"], entries=dumped["entries"], upgraded_from=upgraded)


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


def render(path: Path, device: str, entries: Mapping[str, Mapping[str, Any]]) -> str:
    """The file's text: schema version, sorted keys, indent 2, trailing newline (reviewable in pull requests).
    Checked against the schema first, so that a bad entry is refused here rather than found by the next reader."""
    from pydantic import ValidationError

    from pytest_rfdetr_latency.store.schema import BaselineFile

    document = {"schema_version": SCHEMA_VERSION, "device": device, "entries": dict(entries)}
    try:
        BaselineFile.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BaselineError(
            f"refusing to write baseline file {path}: the entry at {_where(tuple(first['loc']))} is invalid "
            f"({first['msg']}); nothing was written"
        ) from None
    return json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n"


def lock_unusable(path: Path) -> str | None:
    """Why the lock beside the baseline file at ``path`` could not be taken (a folder, or a file this process cannot
    open for writing, as the lock opens it); None when it can or is not there yet. Opens nothing for long and writes
    nothing."""
    lock = path.parent / f".{path.name}.lock"
    if lock.is_dir():
        return f"its lock {lock} is a folder"
    if lock.exists():
        try:
            with open(lock, "r+b"):
                pass
        except OSError as exc:
            return f"its lock {lock} cannot be opened for writing ({exc.strerror or exc})"
    return None


def cannot_write(folder: Path) -> str | None:
    """Why a new file cannot be made in ``folder`` (or, where it does not exist yet, in its nearest existing parent,
    where it would be made); None when it can. Probed with a temporary file, removed at once: nothing is left."""
    import tempfile

    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    try:
        handle, name = tempfile.mkstemp(dir=probe, prefix=".rfdetr-latency-probe-")
    except OSError as exc:
        return f"{probe} cannot be written to ({exc.strerror or exc})"
    os.close(handle)
    os.unlink(name)
    return None


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
    """Merge ``new_entries`` into the file at ``path`` (created if missing), under a lock, atomically. A file system
    that refuses (a read-only lock or file, an immutable file) is a BaselineError naming what it refused."""
    try:
        return _save(path, device, new_entries, replace_corrupt, lock_timeout)
    except OSError as exc:
        where = exc.filename2 or exc.filename or path  # a rename names its target second
        raise BaselineError(
            f"{path} could not be written ({exc.strerror or exc} on {where}); the old file is as it was. Make the "
            "folder and its files writable (a lock file left read-only can be deleted), or record into another "
            "folder with --rfdetr-baseline-dir"
        ) from None


def _save(path: Path, device: str, new_entries: Mapping[str, Mapping[str, Any]], replace_corrupt: bool,
          lock_timeout: float) -> SaveResult:
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
        atomic_write(path, render(path, device, entries))
        return SaveResult(path=path, written=sorted(new_entries), kept=kept, backup=backup)
    finally:
        lock.release()


_SCRATCH = (".*.lock", ".*.tmp", "*.corrupt-*.bak")


def _ignore_scratch_files(directory: Path) -> None:
    """Keep lock, temporary and backup files out of version control in a baseline folder."""
    ignore = directory / ".gitignore"
    try:
        present = ignore.read_text().splitlines() if ignore.exists() else []
        missing = [pattern for pattern in _SCRATCH if pattern not in present]
        if missing:
            with ignore.open("a") as handle:
                handle.write("".join(f"{pattern}\n" for pattern in missing))
    except OSError:
        pass


def take_profiles(result: dict[str, Any], profiled: Mapping[str, Any]) -> None:
    """What the recording's profiling process (--save-baseline --rfdetr-profile) took of a case, into the result its
    entry is made from (``details.profile``, and ``details.profile_errors`` where one could not be taken)."""
    for key in ("profile", "profile_errors"):
        if (profiled.get("details") or {}).get(key):
            result.setdefault("details", {})[key] = profiled["details"][key]


def entry_from_processes(results: Sequence[Mapping[str, Any]], commit: str | None) -> dict[str, Any]:
    """A baseline entry from one case's results in several processes (``CaseResult.to_json()``, the first the
    process that ran the test): every process's figures per scope, their median and their spread."""
    from pytest_rfdetr_latency.verdict.judge import median
    from pytest_rfdetr_latency.verdict.stats import log_spread

    first = results[0]
    scopes: dict[str, Any] = {}
    for scope, stats in first["scopes"].items():
        processes = [r["scopes"][scope] for r in results if scope in r.get("scopes", {})]
        values = [float(p["value_ms"]) for p in processes]
        spread, _ = log_spread([values])
        scopes[scope] = {
            "statistic": stats["statistic"],
            "value_ms": float(f"{median(values):.6g}"),
            "block_size": stats["block_size"],
            "spread": None if spread is None else round(spread, 6),
            "processes": processes,
        }
    memory = None
    if first.get("memory"):
        peaks = [float(r["memory"]["peak_mib"]) for r in results
                 if r.get("memory") and r["memory"].get("kind") == first["memory"]["kind"]]
        memory = {**first["memory"], "peak_mib": median(peaks), "processes": peaks}
    profile = {scope: {k: v for k, v in table.items() if k not in ("trace", "trace_error")}  # a local file's path
               for scope, table in ((first.get("details") or {}).get("profile") or {}).items()}  # the tables kept
    return {
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": commit,
        "backend": first.get("backend"),
        "fingerprint": first.get("fingerprint", {}),
        "detections": first.get("detections", 0.0),
        "score_threshold": first.get("score_threshold", 0.0),
        "processes": len(results),
        "scopes": scopes,
        "memory": memory,
        "parity": first.get("parity"),
        "workload": first.get("workload") or None,
        **({"profile": profile} if profile else {}),
    }
