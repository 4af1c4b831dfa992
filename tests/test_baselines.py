from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_rfdetr_latency import baselines
from pytest_rfdetr_latency.stats import summarize


def entry(value: float = 10.0) -> dict[str, Any]:
    scope = summarize([[value, value * 1.01], [value * 0.99, value]], "median").to_json()
    return {"recorded_at": "2026-11-29T00:00:00Z", "git_commit": None, "fingerprint": {"torch": "2.11"},
            "scopes": {"forward": scope}}


def test_missing_file_loads_as_none(tmp_path: Path) -> None:
    assert baselines.load(tmp_path / "nvidia-h200.json") is None


def test_save_creates_then_merges_keeping_other_cases(tmp_path: Path) -> None:
    path = tmp_path / "base" / "nvidia-h200.json"
    first = baselines.save(path, "NVIDIA H200", {"A": entry(1.0), "B": entry(2.0)})
    assert first.written == ["A", "B"] and first.kept == 0
    second = baselines.save(path, "NVIDIA H200", {"B": entry(3.0), "C": entry(4.0)})
    assert second.kept == 1
    loaded = baselines.load(path)
    assert loaded is not None
    assert sorted(loaded.entries) == ["A", "B", "C"]
    assert loaded.entries["A"]["scopes"]["forward"]["value_ms"] == 1.0
    assert loaded.entries["B"]["scopes"]["forward"]["value_ms"] == 3.0
    text = path.read_text()
    assert text.endswith("}\n") and '\n  "device": "NVIDIA H200"' in text
    assert json.loads(text)["schema_version"] == baselines.SCHEMA_VERSION
    assert (path.parent / ".gitignore").read_text() == ".*.lock\n.*.tmp\n"


def test_other_devices_files_are_never_touched(tmp_path: Path) -> None:
    other = tmp_path / "nvidia-a100.json"
    baselines.save(other, "NVIDIA A100", {"A": entry()})
    before = other.read_bytes()
    baselines.save(tmp_path / "nvidia-h200.json", "NVIDIA H200", {"A": entry(2.0)})
    assert other.read_bytes() == before
    assert baselines.other_devices(tmp_path, "nvidia-h200") == [other]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty file"),
        (b'{"schema_version": 1, "device": "NVIDIA H200", "entr', "not valid JSON"),
        (b"\xff\xfe garbage", "not UTF-8"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"schema_version": "1", "device": "x", "entries": {}}', "schema_version: expected a whole number"),
        (b'{"schema_version": 1, "device": "x", "entries": []}', "entries: expected an object"),
        (b'{"schema_version": 1, "device": "x", "entries": {"A": {"fingerprint": {}, "recorded_at": "t", '
         b'"scopes": {"forward": {"statistic": "median", "value_ms": "fast"}}}}}', "value_ms: expected a finite"),
        (b'{"schema_version": 1, "device": "x", "entries": {"A": {"fingerprint": {}, "recorded_at": "t", '
         b'"scopes": {"warp": {}}}}}', "unknown scope 'warp'"),
    ],
)
def test_damaged_files_are_reported_with_the_problem_and_left_untouched(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "nvidia-h200.json"
    path.write_bytes(content)
    with pytest.raises(baselines.BaselineError) as info:
        baselines.load(path)
    assert str(path) in str(info.value)
    assert problem in str(info.value)
    assert "left untouched" in str(info.value)
    assert path.read_bytes() == content


def test_newer_schema_is_refused_with_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "nvidia-h200.json"
    path.write_text('{"schema_version": 7, "device": "NVIDIA H200", "entries": {}}')
    with pytest.raises(baselines.BaselineError, match="schema version 7; this pytest-rfdetr-latency reads version 1"):
        baselines.load(path)


def test_saving_over_a_damaged_file_is_refused_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "nvidia-h200.json"
    path.write_bytes(b"{not json")
    with pytest.raises(baselines.BaselineError, match="--rfdetr-replace-corrupt-baseline"):
        baselines.save(path, "NVIDIA H200", {"A": entry()})
    assert path.read_bytes() == b"{not json"
    result = baselines.save(path, "NVIDIA H200", {"A": entry()}, replace_corrupt=True)
    assert result.backup is not None and result.backup.read_bytes() == b"{not json"
    loaded = baselines.load(path)
    assert loaded is not None and list(loaded.entries) == ["A"]


def test_a_file_of_another_device_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "nvidia-h200.json"
    baselines.save(path, "NVIDIA H200 NVL", {"A": entry()})
    before = path.read_bytes()
    with pytest.raises(baselines.BaselineError, match="records device 'NVIDIA H200 NVL'"):
        baselines.save(path, "NVIDIA H200", {"B": entry()})
    assert path.read_bytes() == before


def test_permissions_survive_replacement(tmp_path: Path) -> None:
    path = tmp_path / "nvidia-h200.json"
    baselines.save(path, "NVIDIA H200", {"A": entry()})
    path.chmod(0o640)
    baselines.save(path, "NVIDIA H200", {"B": entry()})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".hidden", "x" * 200, "NVIDIA H200"])
def test_device_names_cannot_escape_the_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(baselines.BaselineError):
        baselines.path_for(tmp_path, name)


def test_slugified_hostile_names_stay_inside(tmp_path: Path) -> None:
    from pytest_rfdetr_latency.environment import slugify

    for name in ["../../etc/passwd", "/abs/path", "..", "NVIDIA H200 (R)", "\x00weird\nname"]:
        path = baselines.path_for(tmp_path, slugify(name))
        assert path.parent == tmp_path


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pytest_rfdetr_latency import baselines
    from pytest_rfdetr_latency.stats import summarize

    path, case, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    scope = summarize([[1.0, 1.1], [1.0, 1.2]], "median").to_json()
    big = {"padding": "x" * 200_000}  # a large file, so that a kill lands mid-write
    for i in range(n):
        entry = {"recorded_at": "t", "git_commit": None, "fingerprint": big, "scopes": {"forward": scope}}
        baselines.save(path, "NVIDIA H200", {f"{case}-{i % 5}": entry})
    """
)


def test_concurrent_savers_both_land(tmp_path: Path) -> None:
    path = tmp_path / "nvidia-h200.json"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    procs = [subprocess.Popen([sys.executable, str(script), str(path), case, "15"]) for case in ("gpu0", "gpu1")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    loaded = baselines.load(path)
    assert loaded is not None
    assert sorted(loaded.entries) == sorted(f"{c}-{i}" for c in ("gpu0", "gpu1") for i in range(5))


def test_killing_a_writer_mid_write_never_leaves_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "nvidia-h200.json"
    baselines.save(path, "NVIDIA H200", {"keep": entry()})
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    for attempt in range(25):
        proc = subprocess.Popen([sys.executable, str(script), str(path), "k", "1000"])
        time.sleep(0.25 + (attempt % 5) * 0.05)
        proc.send_signal((signal.SIGTERM, signal.SIGKILL, signal.SIGINT)[attempt % 3])
        proc.wait(timeout=30)
        loaded = baselines.load(path)  # raises if the file were ever half-written
        assert loaded is not None and "keep" in loaded.entries
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # A killed writer can leave its temporary file behind, never a damaged baseline.
    assert all(name.startswith(".nvidia-h200.json.") for name in leftovers)
    assert os.access(path, os.R_OK)
