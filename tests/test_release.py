"""What a release ships (the release workflow builds and checks the same): a wheel of this checkout that holds the
plugin's entry point, its console script, its three published schemas and its license."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_holds_the_plugin_its_schemas_console_script_and_license(tmp_path: Path) -> None:
    # Built from a copy of what the wheel is made of: setuptools leaves build/ and an egg-info in the tree it builds.
    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
                           capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = tmp_path.glob("pytest_rfdetr_latency-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        entry_points = archive.read(info).decode()
        metadata = archive.read(info.replace("entry_points.txt", "METADATA")).decode()
    assert {f"pytest_rfdetr_latency/store/{n}.schema.json" for n in ("baseline", "report", "history")} <= names
    assert {"pytest_rfdetr_latency/plugin.py", "pytest_rfdetr_latency/measure/backends/onnx_backend.py"} <= names
    parts = ("verdict", "store", "measure", "report", "trends")
    assert {f"pytest_rfdetr_latency/{part}/__init__.py" for part in parts} <= names
    assert "[pytest11]\nrfdetr_latency = pytest_rfdetr_latency.plugin" in entry_points
    assert "rfdetr-latency = pytest_rfdetr_latency.trends.cli:main" in entry_points
    assert "License-Expression: Apache-2.0" in metadata and any(n.endswith("licenses/LICENSE") for n in names)
