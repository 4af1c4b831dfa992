"""The plugin's options, skips and usage errors, driven through real pytest runs (no model is built here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SUITE = """
def test_latency(rfdetr_case):
    rfdetr_case.check()
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_suite=SUITE)
    return pytester


def test_help_lists_every_option_and_imports_no_heavy_module(tmp_path: Path) -> None:
    code = (
        "import sys, pytest\n"
        "rc = pytest.main(['--help'])\n"
        "heavy = sorted(m for m in ('torch', 'rfdetr', 'onnxruntime', 'numpy', 'PIL') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True, cwd=tmp_path
    )
    assert "HEAVY []" in out.stdout
    for flag in ("--rfdetr-latency", "--save-baseline", "--rfdetr-models", "--rfdetr-backends", "--rfdetr-device",
                 "--rfdetr-baseline-dir", "--rfdetr-weights", "--rfdetr-tolerance", "--rfdetr-report"):
        assert flag in out.stdout
    assert "rfdetr_latency_models" in out.stdout  # the ini key


def test_cases_are_collected_and_skipped_without_the_flag(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-rs")
    result.assert_outcomes(skipped=12)
    result.stdout.fnmatch_lines(["*run only with --rfdetr-latency (to check) or --save-baseline*"])


def test_ids_name_model_and_backend(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--collect-only", "-q", "--rfdetr-models=RFDETRNano,RFDETRSegNano")
    result.stdout.fnmatch_lines([
        "test_suite.py::test_latency[[]RFDETRNano-torch-fp32[]]",
        "test_suite.py::test_latency[[]RFDETRNano-onnx-cuda[]]",
        "test_suite.py::test_latency[[]RFDETRSegNano-onnx-cpu[]]",
    ])


def test_ini_keys_configure_the_matrix(suite: pytest.Pytester) -> None:
    suite.makeini("[pytest]\nrfdetr_latency_models = RFDETRSmall\nrfdetr_latency_backends = onnx-cpu\n")
    result = suite.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_latency[[]RFDETRSmall-onnx-cpu[]]", "*1 test collected*"])


def test_marker_restricts_the_cases(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.rfdetr_latency(models=["RFDETRNano"], backends=["onnx-cpu", "torch-fp32"])
        def test_mine(rfdetr_case):
            rfdetr_case.check()
        """
    )
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_mine[[]RFDETRNano-onnx-cpu[]]", "*test_mine[[]RFDETRNano-torch-fp32[]]"])
    # A run that names its backends narrows the marker's, even when it names the default list.
    named = pytester.runpytest("--collect-only", "-q", "--rfdetr-backends=torch-fp32,torch-fp16,onnx-cuda")
    assert "RFDETRNano-torch-fp32" in named.stdout.str() and "RFDETRNano-onnx-cpu" not in named.stdout.str()
    pytester.makepyfile(test_other="""
        import pytest

        @pytest.mark.rfdetr_latency(models=["RFDETRNano"], backends=["torch-bf16", "torch-fp32"])
        def test_bf16(rfdetr_case):
            rfdetr_case.check()
        """)
    defaults = pytester.runpytest("--collect-only", "-q", "test_other.py",
                                  "--rfdetr-backends=torch-fp32,torch-fp16,onnx-cpu,onnx-cuda")
    assert "RFDETRNano-torch-fp32" in defaults.stdout.str() and "torch-bf16" not in defaults.stdout.str()
    assert "RFDETRNano-torch-bf16" in pytester.runpytest("--collect-only", "-q", "test_other.py").stdout.str()


def test_marker_with_an_unknown_backend_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.rfdetr_latency(backends=["tensorflow"])
        def test_mine(rfdetr_case):
            rfdetr_case.check()
        """
    )
    result = pytester.runpytest("--collect-only")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*@pytest.mark.rfdetr_latency on test_*::test_mine: unknown backend 'tensorflow'*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rfdetr-models=RFDETRHuge"], "*unknown model 'RFDETRHuge': choose from RFDETRNano, *"),
        (["--rfdetr-backends=torch-fp8"], "*unknown backend 'torch-fp8': choose from torch-fp32, *"),
        (["--rfdetr-tolerance=10"], "*invalid tolerance '10': expected a percentage such as '5%'*"),
        (["--rfdetr-tolerance=ten%"], "*invalid tolerance 'ten%'*"),
        (["--rfdetr-tolerance=-5%"], "*invalid tolerance '-5%'*"),
        (["--rfdetr-device=gpu0"], "*invalid device 'gpu0': use 'cuda', 'cuda:N'*"),
        (["--rfdetr-images=0"], "*invalid image count '0': expected a whole number >= 1*"),
        (["--rfdetr-sampling=fastest"], "*unknown sampling preset 'fastest'*"),
    ],
)
def test_bad_values_are_usage_errors(suite: pytest.Pytester, args: list[str], message: str) -> None:
    result = suite.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_bad_environment_value_names_the_variable(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RFDETR_LATENCY_BACKENDS", "onnx-gpu")
    result = suite.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*environment variable RFDETR_LATENCY_BACKENDS: unknown backend 'onnx-gpu'*"])


def test_an_unknown_variable_is_a_usage_error_and_help_lists_the_names(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RFDETR_LATENCY_INJECT", "60%")  # once silently ignored
    result = suite.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*RFDETR_LATENCY_INJECT names no setting*did you mean "
                                 "RFDETR_LATENCY_INJECT_SLOWDOWN?*"])
    monkeypatch.delenv("RFDETR_LATENCY_INJECT")
    shown = suite.runpytest("--help")
    flowing = " ".join(shown.stdout.str().split())  # argparse wraps the help
    assert "--rfdetr-images=N number of seeded synthetic images" in flowing
    assert "Also: env RFDETR_LATENCY_IMAGES, ini rfdetr_latency_images." in flowing


def test_an_unknown_ini_key_is_a_usage_error_naming_the_closest(suite: pytest.Pytester) -> None:
    suite.makeini("[pytest]\nrfdetr_latency_budgets = RFDETRNano-*:e2e:median<=1ms\n")  # the key is ..._budget
    result = suite.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini key rfdetr_latency_budgets in *tox.ini names no setting*did you mean "
                                 "rfdetr_latency_budget?*"])
    suite.makeini("[pytest]\nrfdetr_latency_budget = RFDETRNano-*:e2e:median<=1ms\n")
    fine = suite.runpytest("--collect-only", "-q")
    assert fine.ret == pytest.ExitCode.OK and "deprecated" not in fine.stderr.str()  # pytest 9 deprecates inicfg


def test_bad_ini_value_names_the_key(suite: pytest.Pytester) -> None:
    suite.makeini("[pytest]\nrfdetr_latency_tolerance = 5\n")
    result = suite.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini key rfdetr_latency_tolerance in *tox.ini: invalid tolerance '5'*"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_a_usage_error(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--rfdetr-latency", "--rfdetr-device=cuda")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--rfdetr-device cuda: no CUDA device is visible here*pass --rfdetr-device cpu*"])
    result = suite.runpytest("--rfdetr-latency", "--rfdetr-device=cuda:7")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--rfdetr-device cuda:7: no CUDA device is visible here*"])


def _cpu_slug() -> str:
    from pytest_rfdetr_latency.measure.environment import cpu_name
    from pytest_rfdetr_latency.store.baselines import slugify

    return slugify(cpu_name())


def test_damaged_baseline_is_a_usage_error_and_stays_as_it_was(suite: pytest.Pytester) -> None:
    folder = suite.path / "latency_baselines"
    folder.mkdir()
    damaged = folder / f"{_cpu_slug()}.json"
    damaged.write_bytes(b'{"schema_version": 1, "device": ')
    for args in (["--rfdetr-latency"], ["--save-baseline"]):
        result = suite.runpytest(*args, "--rfdetr-device=cpu")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"*baseline file {damaged} is not usable at line 1 column *: not valid JSON*"])
        assert damaged.read_bytes() == b'{"schema_version": 1, "device": '


def test_baseline_of_newer_schema_is_refused(suite: pytest.Pytester) -> None:
    folder = suite.path / "latency_baselines"
    folder.mkdir()
    (folder / f"{_cpu_slug()}.json").write_text('{"schema_version": 3, "device": "x", "entries": {}}')
    result = suite.runpytest("--rfdetr-latency", "--rfdetr-device=cpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*has schema version 3; this pytest-rfdetr-latency reads versions 1 to 2*"])


def test_baseline_file_of_another_device_under_this_name_is_refused(suite: pytest.Pytester) -> None:
    folder = suite.path / "latency_baselines"
    folder.mkdir()
    (folder / f"{_cpu_slug()}.json").write_text('{"schema_version": 1, "device": "NVIDIA A100", "entries": {}}')
    result = suite.runpytest("--rfdetr-latency", "--rfdetr-device=cpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*records device 'NVIDIA A100', but this run measures on*never compared against*"])


def test_injection_cannot_be_saved(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--save-baseline", "--rfdetr-inject-slowdown=5%")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*would record a deliberately slowed run as the baseline*"])


def test_fixtures_are_documented_with_examples(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--fixtures", "-v")
    for name in ("rfdetr_case", "rfdetr_model_loader", "rfdetr_images", "rfdetr_timer", "rfdetr_latency_session"):
        result.stdout.fnmatch_lines([f"{name}*"])
    assert result.stdout.str().count("Example::") >= 5


def test_pyargs_suite_is_collected(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--pyargs", "pytest_rfdetr_latency.suite", "--collect-only", "-q",
                                "--rfdetr-models=RFDETRNano", "--rfdetr-backends=onnx-cpu")
    result.stdout.fnmatch_lines(["*::test_latency[[]RFDETRNano-onnx-cpu[]]"])


def test_readme_commands_exist() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "pytest --rfdetr-latency" in readme


@pytest.mark.slow
def test_the_readme_and_fixture_examples_run_as_written_on_a_cpu(pytester: pytest.Pytester) -> None:
    """The README's "Your own tests" block and every fixture's ``Example::``, extracted and run on a CPU."""
    import re
    import textwrap

    root = Path(__file__).parent.parent
    readme = (root / "README.md").read_text()
    section = readme[readme.index("## Your own tests"):]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    pytester.makepyfile(test_readme=block.group(1))
    source = (root / "src" / "pytest_rfdetr_latency" / "fixtures.py").read_text()
    examples = [textwrap.dedent(found) for found in re.findall(r"Example::\n\n((?:        .*\n|\n)+)", source)]
    assert len(examples) >= 5
    pytester.makepyfile(test_fixture_examples="import pytest\n\n\n" + "\n\n".join(examples))
    result = pytester.runpytest("--save-baseline", "--rfdetr-device=cpu", "--rfdetr-models=RFDETRNano",
                                "--rfdetr-backends=torch-fp32", "--rfdetr-sampling=quick", "--rfdetr-images=1",
                                "--rfdetr-scopes=forward", "-rs", "-p", "no:randomly")
    result.assert_outcomes(passed=6, skipped=2)
    # The marker's models or backends that this run left out: a skip that says so, not "empty parameter set".
    shown = result.stdout.str()
    assert re.search(r"test_fixture_examples.py:\d+: @pytest.mark.rfdetr_latency\(backends=\['torch-fp16'\]\) and "
                     r"this run's selection \(models RFDETRNano; backends torch-fp32\) share no case: a marker narrows "
                     r"the run's selection and never adds to it", shown)
    assert re.search(r"test_readme.py:\d+: @pytest.mark.rfdetr_latency\(models=\['RFDETRSmall'\], backends=", shown)
    assert "warnings summary" not in shown  # what building printed, for the fixtures too, is kept out of the way


def test_a_run_leaves_no_empty_benchmark_storage_behind_and_keeps_one_that_was_there(
    pytester: pytest.Pytester,
) -> None:
    # pytest-benchmark, which the plugin brings, makes ./.benchmarks in every run, saving or not.
    pytester.makepyfile("def test_a():\n    pass\n")
    pytester.runpytest().assert_outcomes(passed=1)
    assert not (pytester.path / ".benchmarks").exists()
    (pytester.path / ".benchmarks").mkdir()
    pytester.runpytest().assert_outcomes(passed=1)
    assert (pytester.path / ".benchmarks").is_dir()
