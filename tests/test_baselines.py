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

from pytest_rfdetr_latency.store import baselines
from pytest_rfdetr_latency.verdict.stats import summarize


def result(value: float) -> dict[str, Any]:
    """A case's result in one process, as CaseResult.to_json() makes it (the fields a baseline entry takes)."""
    scope = summarize([[value, value * 1.01], [value * 0.99, value]], "median", block_size=2).to_json()
    return {"id": "A", "backend": "torch-fp32", "fingerprint": {"torch": "2.11"}, "detections": 50.0,
            "score_threshold": 0.1, "scopes": {"forward": scope}, "memory": {"kind": "torch-allocator",
                                                                            "peak_mib": 100.0}}


def entry(value: float = 10.0, processes: int = 1) -> dict[str, Any]:
    return baselines.entry_from_processes([result(value * (1 + i / 100)) for i in range(processes)], None)


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
    assert loaded.entries["A"]["scopes"]["forward"]["value_ms"] == pytest.approx(1.0, rel=0.01)
    assert loaded.entries["B"]["scopes"]["forward"]["value_ms"] == pytest.approx(3.0, rel=0.01)
    text = path.read_text()
    assert text.endswith("}\n") and '\n  "device": "NVIDIA H200"' in text
    assert json.loads(text)["schema_version"] == baselines.SCHEMA_VERSION
    assert (path.parent / ".gitignore").read_text() == ".*.lock\n.*.tmp\n*.corrupt-*.bak\n"


def test_other_devices_files_are_never_touched(tmp_path: Path) -> None:
    other = tmp_path / "nvidia-a100.json"
    baselines.save(other, "NVIDIA A100", {"A": entry()})
    before = other.read_bytes()
    baselines.save(tmp_path / "nvidia-h200.json", "NVIDIA H200", {"A": entry(2.0)})
    assert other.read_bytes() == before
    assert baselines.other_devices(tmp_path, "nvidia-h200") == [other]


V2_SCOPE = (b'"scopes": {"forward": {"statistic": "median", "value_ms": 1.0, "block_size": 1, "spread": null, '
            b'"processes": []}}')


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty file"),
        (b'{"schema_version": 2, "device": "NVIDIA H200", "entr', "not valid JSON"),
        (b"\xff\xfe garbage", "not UTF-8"),
        (b"[1, 2]", "expected a JSON object"),
        (b"{}", "it has no schema_version, no device, no entries: a baseline file holds"),
        (b'{"schema_version": 2, "device": "x"}', "it has no entries"),
        (b'{"schema_version": "1", "device": "x", "entries": {}}', "schema_version: expected a whole number"),
        (b'{"schema_version": 2, "device": "x", "entries": []}', "at entries: Input should be a valid dictionary"),
        (b'{"schema_version": 2, "device": "", "entries": {}}', "at device: String should have at least 1 char"),
        (b'{"schema_version": 2, "device": "x", "entries": {"A": {"fingerprint": {}, "recorded_at": "t", '
         b'"processes": 3, ' + V2_SCOPE + b"}}}",
         "at entries['A'].scopes.forward.processes: List should have at least 1"),
        (b'{"schema_version": 1, "device": "x", "entries": {"A": {"fingerprint": {}, "recorded_at": "t", '
         b'"scopes": {"forward": {"statistic": "median", "value_ms": "fast"}}}}}',
         "at entries['A'].scopes.forward.value_ms: Input should be a valid number"),
        (b'{"schema_version": 1, "device": "x", "entries": {"A": {"fingerprint": {}, "recorded_at": "t", '
         b'"scopes": {"warp": {}}}}}', "at entries['A'].scopes.warp.[key]: Input should be 'e2e', 'forward'"),
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


def test_a_file_system_that_refuses_the_save_is_one_message_and_the_old_file_stays(tmp_path: Path) -> None:
    path = tmp_path / "nvidia-h200.json"
    baselines.save(path, "NVIDIA H200", {})
    before = path.read_bytes()
    (tmp_path / ".nvidia-h200.json.lock").unlink(missing_ok=True)
    (tmp_path / ".nvidia-h200.json.lock").mkdir()  # the lock cannot be opened: refused even for root
    with pytest.raises(baselines.BaselineError) as info:
        baselines.save(path, "NVIDIA H200", {})
    assert f"{path} could not be written" in str(info.value) and "the old file is as it was" in str(info.value)
    assert "--rfdetr-baseline-dir" in str(info.value) and path.read_bytes() == before


def test_newer_schema_is_refused_with_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "nvidia-h200.json"
    path.write_text('{"schema_version": 7, "device": "NVIDIA H200", "entries": {}}')
    with pytest.raises(baselines.BaselineError, match=r"schema version 7; this pytest-rfdetr-latency reads versions 1 "
                       r"to 2\. Upgrade pytest-rfdetr-latency"):
        baselines.load(path)


V1_FILE = {
    "schema_version": 1, "device": "NVIDIA H200",
    "entries": {"A": {"recorded_at": "t", "git_commit": None, "fingerprint": {"torch": "2.11"},
                      "memory": {"kind": "torch-allocator", "peak_mib": 640.0},
                      "scopes": {"device": {"statistic": "median", "value_ms": 5.0, "blocks_ms": [5.0, 5.01, 4.99],
                                            "n": 30, "median_ms": 5.0, "mean_ms": 5.0, "std_ms": 0.01,
                                            "min_ms": 4.98, "p10_ms": 4.99, "p90_ms": 5.01,
                                            "rel_uncertainty": 0.001, "dropped_blocks": 0}}}},
}


def test_a_version_1_file_reads_as_one_process_and_saving_keeps_its_other_entries(tmp_path: Path) -> None:
    path = tmp_path / "nvidia-h200.json"
    path.write_text(json.dumps(V1_FILE))
    loaded = baselines.load(path)
    assert loaded is not None and loaded.upgraded_from == 1
    device = loaded.entries["A"]["scopes"]["device"]
    assert loaded.entries["A"]["processes"] == 1 and device["value_ms"] == 5.0
    assert device["block_size"] == 10 and [p["value_ms"] for p in device["processes"]] == [5.0]
    assert loaded.entries["A"]["memory"]["processes"] == [640.0]
    baselines.save(path, "NVIDIA H200", {"B": entry(2.0, processes=3)})
    data = json.loads(path.read_text())
    assert data["schema_version"] == 2 and sorted(data["entries"]) == ["A", "B"]
    assert data["entries"]["B"]["processes"] == 3 and len(data["entries"]["B"]["scopes"]["forward"]["processes"]) == 3


def test_an_entry_is_checked_against_the_schema_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "nvidia-h200.json"
    baselines.save(path, "NVIDIA H200", {"A": entry()})
    before = path.read_bytes()
    bad = entry()
    bad["scopes"]["forward"]["processes"][0]["value_ms"] = -1.0
    with pytest.raises(baselines.BaselineError, match=r"refusing to write .* entries\['B'\]\.scopes\.forward\."
                       r"processes\[0\]\.value_ms is invalid .*nothing was written"):
        baselines.save(path, "NVIDIA H200", {"B": bad})
    assert path.read_bytes() == before


def test_an_entry_holds_every_process_their_median_and_spread() -> None:
    made = entry(10.0, processes=3)
    forward = made["scopes"]["forward"]
    values = [p["value_ms"] for p in forward["processes"]]
    assert made["processes"] == 3 and forward["value_ms"] == pytest.approx(sorted(values)[1])
    assert forward["spread"] == pytest.approx(0.01, rel=0.1) and forward["block_size"] == 2
    assert made["memory"]["processes"] == [100.0, 100.0, 100.0] and made["backend"] == "torch-fp32"


def test_the_recordings_profiling_process_gives_its_tables_to_the_entry_not_its_figures() -> None:
    first, profiled = result(10.0), result(30.0)  # the profiled process was slowed by its profiler
    table = {"calls": 5, "wall_ms": 31.0, "rows": [{"name": "aten::addmm", "kind": "cpu", "ms": 6.0}],
             "trace": "/tmp/r-traces/A.forward.trace.json.gz"}
    profiled["details"] = {"profile": {"forward": table}, "profile_errors": {"e2e": "RuntimeError: no CUPTI"}}
    baselines.take_profiles(first, profiled)
    made = baselines.entry_from_processes([first, result(10.1)], None)
    assert made["profile"] == {"forward": {k: v for k, v in table.items() if k != "trace"}}  # a local path is not kept
    assert made["processes"] == 2 and max(p["value_ms"] for p in made["scopes"]["forward"]["processes"]) < 11


@pytest.mark.parametrize("name", ["baseline", "report", "history"])
def test_the_published_schemas_are_the_ones_the_code_checks(name: str) -> None:
    from importlib.resources import files

    from pytest_rfdetr_latency.store.schema import json_schema

    published = files("pytest_rfdetr_latency.store").joinpath(f"{name}.schema.json").read_text()
    assert published == json_schema(name), f"regenerate: python -m pytest_rfdetr_latency.store.schema {name} > ..."


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
    from pytest_rfdetr_latency.store.baselines import slugify

    for name in ["../../etc/passwd", "/abs/path", "..", "NVIDIA H200 (R)", "\x00weird\nname"]:
        path = baselines.path_for(tmp_path, slugify(name))
        assert path.parent == tmp_path


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pytest_rfdetr_latency.store import baselines
    from pytest_rfdetr_latency.verdict.stats import summarize

    path, case, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    scope = summarize([[1.0, 1.1], [1.0, 1.2]], "median").to_json()
    big = {"padding": "x" * 200_000}  # a large file, so that a kill lands mid-write
    made = baselines.entry_from_processes([{"fingerprint": big, "scopes": {"forward": scope}}], None)
    for i in range(n):
        baselines.save(path, "NVIDIA H200", {f"{case}-{i % 5}": made})
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


@pytest.mark.slow
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
