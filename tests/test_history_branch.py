"""The history job of the shipped workflow, run as written against a local git remote: two runs that append at once
both keep their lines on the branch, and a fetch that fails is an error, never an empty history."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BRANCH = "rfdetr-latency-history"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _step(name: str) -> str:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "gpu-gate.yml").read_text())
    steps = workflow["jobs"]["history"]["steps"]
    return str(next(step["run"] for step in steps if step.get("name", "").startswith(name)))


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _remote_with(tmp_path: Path, lines: list[str]) -> Path:
    remote = tmp_path / "origin.git"
    _git("init", "-q", "--bare", str(remote), cwd=tmp_path)
    seed = tmp_path / "seed"
    seed.mkdir()
    _git("init", "-q", cwd=seed)
    (seed / "runs").mkdir()
    (seed / "runs" / "nvidia-h200.jsonl").write_text("".join(f"{line}\n" for line in lines))
    _git("checkout", "-q", "-b", BRANCH, cwd=seed)
    _git("add", "runs", cwd=seed)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "seed", cwd=seed)
    _git("push", "-q", str(remote), f"HEAD:{BRANCH}", cwd=seed)
    return remote


def _job(tmp_path: Path, name: str, remote: Path, appended: list[str]) -> subprocess.Popen[str]:
    """One history job: its runner's folder with the GPU job's file, then the step's script as written."""
    folder = tmp_path / name
    (folder / "appended" / "history-h200").mkdir(parents=True)
    (folder / "appended" / "history-h200" / "nvidia-h200.jsonl").write_text("".join(f"{x}\n" for x in appended))
    env = {**os.environ, "HISTORY_REMOTE": str(remote), "GITHUB_SHA": name, "REPO": "o/r", "TOKEN": "t"}
    return subprocess.Popen(["bash", "-c", _step("Append to the branch")], cwd=folder, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_two_runs_appending_at_once_both_keep_their_lines(tmp_path: Path) -> None:
    old = ['{"run":"a","v":1}', '{"run":"b","v":1}']
    remote = _remote_with(tmp_path, old)
    # Both GPU jobs fetched the same two lines and appended one run each; their history jobs run at once.
    jobs = [_job(tmp_path, name, remote, [*old, f'{{"run":"{name}","v":1}}']) for name in ("first", "second")]
    outputs = [job.communicate(timeout=120)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], outputs
    clone = tmp_path / "check"
    _git("clone", "-q", "--branch", BRANCH, str(remote), str(clone), cwd=tmp_path)
    kept = (clone / "runs" / "nvidia-h200.jsonl").read_text().splitlines()
    assert kept[:2] == old and sorted(kept[2:]) == ['{"run":"first","v":1}', '{"run":"second","v":1}']


def test_a_history_that_cannot_be_fetched_is_an_error_not_an_empty_one(tmp_path: Path) -> None:
    job = _job(tmp_path, "lost", tmp_path / "no-such-remote.git", ['{"run":"x","v":1}'])
    output = job.communicate(timeout=120)[0]
    assert job.returncode != 0 and "could not be fetched" in output
