"""What people read: job summary, annotations, pytest-benchmark export, plots, workflows."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_rfdetr_latency.report import render as report

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted([*(ROOT / ".github" / "workflows").glob("*.yml"), *(ROOT / "examples").rglob("*.yml")])
SUITE = """
def test_latency(rfdetr_case):
    rfdetr_case.check()
"""


def verdict(kind: str, delta: float, scope: str = "forward") -> dict[str, Any]:
    from pytest_rfdetr_latency.verdict.judge import judge

    made = judge(scope, "p20", [10.0, 10.0, 10.0], [10.0 * (1 + delta)] * 3, asked=0.1).to_json()
    assert made["kind"] == kind
    return made


def result(case_id: str, kind: str, delta: float) -> dict[str, Any]:
    model, backend = case_id.split("-", 1)
    return {"id": case_id, "model": model, "backend": backend, "batch": 1, "device": "NVIDIA H200",
            "outcome": kind, "scopes": {"forward": {"statistic": "p20", "value_ms": 10.0 * (1 + delta),
                                                    "median_ms": 10.0}},
            "verdicts": {"forward": verdict(kind, delta)}, "drift": [], "unavailable_scopes": {}}


def test_rows_put_regressions_first_and_markdown_says_how_to_refresh() -> None:
    results = [result("RFDETRNano-torch-fp32", "pass", 0.01), result("RFDETRSmall-onnx-cuda", "regression", 0.25)]
    rows = report.rows(results)
    assert [r["case"] for r in rows] == ["RFDETRSmall-onnx-cuda", "RFDETRNano-torch-fp32"]
    assert rows[0]["verdict"] == "REGRESSION" and rows[0]["delta"] == "+25.00%"
    text = report.markdown(results, "NVIDIA H200", {"driver": "580.159.04", "torch": "2.11.0"})
    assert text.startswith("## RF-DETR latency on NVIDIA H200: regressed")
    row = "| `RFDETRSmall-onnx-cuda` | forward | p20 | 10 ms | 12.5 ms | +25.00% | 10% | 3+3 | **REGRESSION** |"
    assert row in text
    assert "Versions: driver 580.159.04, torch 2.11.0." in text
    assert "pytest --save-baseline" in text and "http" not in text


def test_a_row_taken_call_by_call_is_marked_and_explained_where_people_read_it() -> None:
    # Head to head taking turns: the change is the median of the calls' ratios, not that of the p20 figures shown.
    from pytest_rfdetr_latency.verdict.paired import judge_pairs

    def paired(by_calls: bool) -> dict[str, Any]:
        made = result("RFDETRNano-torch-fp16", "pass", 0.0)
        made["verdicts"]["forward"] = judge_pairs("forward", "p20", [10.0] * 4, [10.1] * 4, 0.05, 0.01, 8, 0.15,
                                                  ratios=[0.011, 0.009, 0.01, 0.01], by_calls=by_calls).to_json()
        return made

    for by_calls in (True, False):
        results = [paired(by_calls)]
        row = report.rows(results)[0]
        assert row["statistic"] == ("p20*" if by_calls else "p20") and row["delta"] == "+1.01%"
        noted = [line for line in report.summary_lines(results, "NVIDIA H200") if line.startswith("* head to head")]
        assert noted == ([report.BY_CALLS] if by_calls else [])
        assert (("\\" + report.BY_CALLS) in report.markdown(results, "NVIDIA H200", None)) is by_calls


def test_annotations_pin_regressions_and_escape_what_github_parses() -> None:
    lines = report.github_annotations([result("RFDETRSmall-onnx-cuda", "regression", 0.25),
                                       result("RFDETRNano-torch-fp32", "pass", 0.0)])
    assert lines == [
        "::error title=latency regression%3A RFDETRSmall-onnx-cuda::forward p20 10 -> 12.5 ms (+25.00%25, "
        "threshold 10%25)"
    ]


def test_a_cpu_run_writes_summary_annotations_benchmark_json_and_plots(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_backend: Any
) -> None:
    # On the fake: what is written from a run's results does not depend on the model that was timed (a real run's
    # report is test_end_to_end.py's).
    pytester.makepyfile(test_suite=SUITE)
    args = ("--rfdetr-device=cpu", "--rfdetr-models=RFDETRNano", "--rfdetr-backends=torch-fp32",
            "--rfdetr-sampling=quick,min-blocks=4,max-seconds=1,warmup-seconds=0.5", "--rfdetr-images=2",
            f"--rfdetr-cache-dir={tmp_path / 'cache'}",
            "-p", "no:randomly")
    pytester.runpytest(*args, "--save-baseline").assert_outcomes(passed=1)
    summary = tmp_path / "step-summary.md"
    summary.write_text("## earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    checked = pytester.runpytest(*args, "--rfdetr-latency", "--rfdetr-inject-slowdown=300%",
                                 "--rfdetr-benchmark-json=bench/results.json", "--rfdetr-plot=plots",
                                 "--rfdetr-report=report.json")
    checked.assert_outcomes(failed=1)
    from pytest_rfdetr_latency.store.schema import Report

    written = Report.model_validate_json((pytester.path / "report.json").read_text())  # what others may read
    assert written.cases[0].verdicts["forward"].kind == "regression"

    text = summary.read_text()
    assert text.startswith("## earlier step\n## RF-DETR latency on ")  # appended, never overwritten
    assert ": regressed" in text and "| `RFDETRNano-torch-fp32` | forward | p20 |" in text
    assert "**REGRESSION**" in text
    checked.stdout.fnmatch_lines(["::error title=latency regression%3A RFDETRNano-torch-fp32::forward p20 *"])

    exported = pytester.path / "bench" / "results.json"
    data = json.loads(exported.read_text())
    names = sorted(b["name"] for b in data["benchmarks"])
    assert names == ["RFDETRNano-torch-fp32[e2e]", "RFDETRNano-torch-fp32[forward]"]
    assert all(b["options"]["timer"] == "host" and b["stats"]["rounds"] >= 4 for b in data["benchmarks"])  # min-blocks
    compare = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", str(exported)],
                             capture_output=True, text=True, timeout=120, check=False)
    assert compare.returncode == 0, compare.stderr
    assert "RFDETRNano-torch-fp32[forward]" in compare.stdout and "benchmark 'e2e'" in compare.stdout
    from pytest_benchmark.utils import load_storage

    storage = load_storage(str(exported.parent), logger=None, default_machine_id=None, netrc="")
    loaded = [bench for _, content in storage.load(str(exported)) for bench in content["benchmarks"]]
    assert len(loaded) == 2

    from PIL import Image

    pictures = sorted((pytester.path / "plots").glob("*.png"))
    assert [p.name for p in pictures] == ["RFDETRNano-torch-fp32.png", "throughput.png"]
    for picture in pictures:
        with Image.open(picture) as image:
            width, height = image.size
            assert width >= 300 and height >= 300
            assert len(set(image.convert("L").getdata())) > 20  # drawn, not blank


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: str(p.relative_to(ROOT)))
def test_workflows_pass_actionlint(workflow: Path) -> None:
    actionlint = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
    out = subprocess.run([actionlint, "-no-color", str(workflow)], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_workflows_match_githubs_schema() -> None:
    tool = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    out = subprocess.run([tool, "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(WORKFLOWS) >= 5


# What a user's repository does differently from this one: the plugin comes from the package index (or a pinned
# commit), the user's requirements are installed, and the latency tests live under tests/latency. Nothing else.
PLUGIN_ENV = (
    "  # The plugin, from the package index once released; until then from its repository, pinned to a tag or commit:\n"
    '  # PLUGIN: "pytest-rfdetr-latency @ git+https://<the plugin\'s repository>@<tag>"\n'
    "  PLUGIN: pytest-rfdetr-latency\n"
)
EXAMPLE_EDITS = {
    "gpu-gate.yml": [
        ("          python -m pip install -e '.[gpu,plot]'\n",
         "          python -m pip install \"$PLUGIN\" 'pytest-rfdetr-latency[gpu,plot]' -r requirements.txt\n"),
        ("          cd .base && ../.base-env/bin/python -m pip install '.[gpu]'\n"
         "          cd .. && .base-env/bin/python -m pip install --no-deps --force-reinstall .  # the head's plugin\n",
         "          .base-env/bin/python -m pip install -r .base/requirements.txt\n"
         "          plugin=\"$(.venv/bin/python -c 'import importlib.metadata as m; "
         "print(m.version(\"pytest-rfdetr-latency\"))')\"\n"
         "          .base-env/bin/python -m pip install -c .base/requirements.txt "
         "\"pytest-rfdetr-latency[gpu]==$plugin\"  # the head's plugin, the base's pins\n"),
        ("-m pytest latency --rfdetr-latency", "-m pytest tests/latency --rfdetr-latency"),
    ],
    "refresh-baseline.yml": [
        ("          python -m pip install -e '.[gpu]'\n",
         "          python -m pip install \"$PLUGIN\" 'pytest-rfdetr-latency[gpu]' -r requirements.txt\n"),
        ("python -m pytest latency --save-baseline", "python -m pytest tests/latency --save-baseline"),
    ],
}


@pytest.mark.parametrize("name", sorted(EXAMPLE_EDITS))
def test_the_example_workflows_are_the_shipped_ones_with_a_users_install_and_nothing_else(name: str) -> None:
    text = (ROOT / ".github" / "workflows" / name).read_text()
    for shipped, example in EXAMPLE_EDITS[name]:
        assert shipped in text, f"{name}: the shipped workflow no longer holds {shipped!r}: update EXAMPLE_EDITS"
        text = text.replace(shipped, example)
    if name == "gpu-gate.yml":
        text = text.replace("    --rfdetr-baseline-dir=latency_baselines\n",
                            "    --rfdetr-baseline-dir=latency_baselines\n" + PLUGIN_ENV, 1)
    else:
        text = text.replace("\njobs:\n", "\nenv:\n" + PLUGIN_ENV + "\njobs:\n", 1)
    assert (ROOT / "examples" / "github-actions" / name).read_text() == text, (
        f"examples/github-actions/{name} drifted from .github/workflows/{name}: copy the change over")


def test_the_refresh_workflow_proposes_and_never_pushes_to_the_default_branch() -> None:
    text = (ROOT / ".github" / "workflows" / "refresh-baseline.yml").read_text()
    assert "workflow_dispatch" in text and "gh pr create" in text and "--save-baseline" in text
    assert 'git push origin "$branch"' in text and "git push origin main" not in text


@pytest.mark.parametrize("folder", [ROOT / ".github" / "workflows", ROOT / "examples" / "github-actions"])
def test_the_gate_fails_closed_and_refresh_records_the_way_it_checks(folder: Path) -> None:
    import yaml

    gate = yaml.safe_load((folder / "gpu-gate.yml").read_text())
    job = gate["jobs"]["latency"]
    policy = gate["env"]["POLICY"]
    assert "--rfdetr-device=cuda" in policy and "--rfdetr-strict" in policy
    # Every scope is measured; naming them would make strict fail those this runner cannot resolve (gating.py).
    assert "--rfdetr-scopes=" not in policy
    steps = [step for step in job["steps"] if "--rfdetr-latency" in step.get("run", "")]
    duel, check = (step["run"] for step in steps)
    # A pull request against its merge base, head to head from the base's checkout; main against the stored baseline.
    assert [step["if"] for step in steps] == ["github.event_name == 'pull_request'",
                                              "github.event_name != 'pull_request'"]
    assert "cd .base" in duel and "$POLICY" in duel and '--rfdetr-against="$GITHUB_WORKSPACE/.venv/bin/python"' in duel
    assert '--rfdetr-against-tree="$GITHUB_WORKSPACE"' in duel and "-n " not in duel
    base = next(step["run"] for step in job["steps"] if "git worktree add" in step.get("run", ""))
    assert 'git merge-base HEAD "${{ github.event.pull_request.base.sha }}"' in base
    assert "$POLICY" in check and '-n "$(nvidia-smi -L | wc -l)"' in check
    # The one check to require fails unless every GPU job succeeded.
    final = gate["jobs"]["gate"]
    assert final["if"] == "always()" and "latency" in final["needs"]
    assert 'test "$RESULT" = success' in final["steps"][-1]["run"]
    # Code from a fork reaches a self-hosted runner only once a maintainer labels the pull request.
    assert "head.repo.full_name == github.repository" in job["if"] and "'gpu-gate'" in job["if"]
    # ... for the commit read then: a later push from the fork does not run on the label set before.
    assert "github.event.action == 'labeled'" in job["if"] and "labels.*.name" not in job["if"]
    summary = next(step["run"] for step in gate["jobs"]["summary"]["steps"] if "GITHUB_STEP_SUMMARY" in step.get(
        "run", ""))
    # One pull-request comment, found again by its marker and edited; the history kept on a branch of its own.
    comment = next(step for step in gate["jobs"]["summary"]["steps"] if "github-script" in step.get("uses", ""))
    script = comment["with"]["script"]
    assert "updateComment" in script and "createComment" in script and "<!-- rfdetr-latency-gate -->" in script
    assert "#artifacts" in script and ": regressed" in script
    assert gate["jobs"]["summary"]["permissions"]["pull-requests"] == "write"
    look = next(step["run"] for step in job["steps"] if "rfdetr-latency history" in step.get("run", ""))
    assert "--fail-on-change" in look and '--device "$device"' in look
    assert "--rfdetr-history" in check and "--rfdetr-markdown" in check
    # Only the history job, which runs none of the change's code, may write; the GPU jobs get a read-only token.
    assert "permissions" not in job and gate["permissions"] == {"contents": "read"}
    keep = gate["jobs"]["history"]
    assert keep["permissions"] == {"contents": "write"} and keep["runs-on"] == "ubuntu-latest"
    assert "git push -q origin HEAD:rfdetr-latency-history" in keep["steps"][-1]["run"]
    assert "exit 1" in keep["steps"][-1]["run"]  # a history that could not be kept fails the run
    for outcome in ("regression", "over-budget", "parity-failure", "refused", "inconclusive", "no-baseline",
                    "unavailable"):
        assert f'"{outcome}"' in summary
    refresh = yaml.safe_load((folder / "refresh-baseline.yml").read_text())
    steps = refresh["jobs"]["refresh"]["steps"]
    record = next(step["run"] for step in steps if "--save-baseline" in step.get("run", ""))
    assert '-n "$(nvidia-smi -L | wc -l)"' in record and "--rfdetr-device=cuda" in record
    # The GPU job measures with a read-only token; the job that writes runs none of the branch's code.
    assert refresh["permissions"] == {"contents": "read"} and "permissions" not in refresh["jobs"]["refresh"]
    writer = refresh["jobs"]["propose"]
    assert writer["runs-on"] == "ubuntu-latest" and writer["permissions"]["contents"] == "write"
    assert not any("pip install" in step.get("run", "") or "pytest" in step.get("run", "") for step in writer["steps"])
    propose = next(step["run"] for step in writer["steps"] if "gh pr create" in step.get("run", ""))
    assert "git status --porcelain -- latency_baselines" in propose  # a new GPU model's first file is untracked
