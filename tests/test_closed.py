"""A gate that cannot measure, or measures something else, does not pass: it says so, and fails when strict."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SUITE = """
def test_latency(rfdetr_case):
    rfdetr_case.check()
"""
# Mechanism tests: a plan that measures little (precision is not what they check).
FAST = "--rfdetr-sampling=quick,min-blocks=4,max-seconds=1,warmup-seconds=0.5"
QUICK = ("--rfdetr-device=cpu", FAST, "--rfdetr-images=2", "--rfdetr-scopes=forward",
         "--rfdetr-models=RFDETRNano", "-p", "no:randomly")


def test_a_check_that_compared_nothing_says_so_and_fails_when_strict(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    # A GPU backend on a CPU machine: nothing can be measured, nothing compared.
    lenient = pytester.runpytest(*QUICK, "--rfdetr-latency", "--rfdetr-backends=torch-fp16")
    lenient.assert_outcomes(skipped=1)
    assert lenient.ret == 0
    lenient.stdout.fnmatch_lines([
        "not measured here:",
        "  RFDETRNano-torch-fp16: torch-fp16 needs a CUDA device; this run measures on cpu*",
        "WARNING: nothing was compared against a baseline: 1 case(s) ran and none had a baseline*",
    ])
    strict = pytester.runpytest(*QUICK, "--rfdetr-latency", "--rfdetr-backends=torch-fp16", "--rfdetr-strict")
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines([
        "*RFDETRNano-torch-fp16: torch-fp16 needs a CUDA device*(--rfdetr-strict: every case the configuration asks "
        "for must be measured)*",
        "ERROR: nothing was compared against a baseline*(--rfdetr-strict makes this a failure)",
    ])
    # A recording compares nothing: what it could not measure is not said to be "not compared".
    recording = pytester.runpytest(*QUICK, "--save-baseline", "--rfdetr-backends=torch-fp16")
    recording.stdout.fnmatch_lines(["not measured here:", "  RFDETRNano-torch-fp16: torch-fp16 needs a CUDA device*"])
    recording.stdout.no_fnmatch_line("not compared:")
    empty = pytester.runpytest(*QUICK, "--rfdetr-latency", "--rfdetr-strict", "-k", "no-such-case")
    empty.stdout.fnmatch_lines(["ERROR: nothing was compared against a baseline: no latency case ran*"])
    assert empty.ret != 0


def test_a_case_whose_every_selected_scope_is_unmeasurable_fails_when_strict(pytester: pytest.Pytester,
                                                                             fake_backend: Any) -> None:
    # The device scope replays a CUDA graph: on the CPU nothing that was asked can be measured (on the fake, which
    # says what torch-fp32 says: the real backend's reasons are test_end_to_end.py's).
    pytester.makepyfile(test_suite=SUITE)
    args = ("--rfdetr-device=cpu", FAST, "--rfdetr-images=2", "--rfdetr-models=RFDETRNano", "-p", "no:randomly",
            "--rfdetr-backends=torch-fp32", "--rfdetr-scopes=device", "--rfdetr-no-parity", "--rfdetr-latency")
    lenient = pytester.runpytest(*args)
    lenient.assert_outcomes(skipped=1)
    strict = pytester.runpytest(*args, "--rfdetr-strict")
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(["*RFDETRNano-torch-fp32: none of the selected scopes (device) can be measured: "
                                 "device: *(--rfdetr-strict: every case the configuration asks for must be measured)*"])


def test_a_folder_the_run_cannot_write_is_refused_before_anything_is_measured(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    # /proc takes no new files, even from root: the nearest existing parent of the folder is what would be written.
    saving = pytester.runpytest(*QUICK, "--save-baseline", "--rfdetr-baseline-dir=/proc/self/baselines")
    assert saving.ret == pytest.ExitCode.USAGE_ERROR
    saving.stderr.fnmatch_lines(["*--rfdetr-baseline-dir /proc/self/baselines: /proc/self cannot be written to (*); "
                                 "give a folder this run can write"])
    history = pytester.runpytest(*QUICK, "--rfdetr-latency", "--rfdetr-history=/proc/self/history")
    assert history.ret == pytest.ExitCode.USAGE_ERROR
    history.stderr.fnmatch_lines(["*--rfdetr-history /proc/self/history: /proc/self cannot be written to*"])
    # Output files too: a report path that is a folder, a summary under a file, a benchmark file under /proc.
    (pytester.path / "afile").write_text("")
    outputs = [("--rfdetr-report", "reports", "* is a folder; give a file path in a folder this run can write"),
               ("--rfdetr-markdown", "afile/summary.md", "*afile is not a folder; give a file path*"),
               ("--rfdetr-benchmark-json", "/proc/self/bench.json", "*/proc/self cannot be written to*")]
    (pytester.path / "reports").mkdir()
    said = saving.stderr.str() + history.stderr.str()
    for flag, path, message in outputs:
        refused = pytester.runpytest(*QUICK, "--rfdetr-latency", f"{flag}={path}")
        assert refused.ret == pytest.ExitCode.USAGE_ERROR
        refused.stderr.fnmatch_lines([f"*{flag} *{message.lstrip('*')}"])
        said += refused.stderr.str()
    assert "Traceback" not in said


def test_a_baseline_of_another_workload_is_refused_naming_what_differs(pytester: pytest.Pytester, tmp_path: Path,
                                                                       fake_backend: Any) -> None:
    pytester.makepyfile(test_suite=SUITE)
    args = (*QUICK, "--rfdetr-backends=torch-fp32", f"--rfdetr-cache-dir={tmp_path}")
    pytester.runpytest(*args, "--save-baseline", "--rfdetr-seed=0").assert_outcomes(passed=1)
    result = pytester.runpytest(*args, "--rfdetr-latency", "--rfdetr-seed=1", "--rfdetr-images=3")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*RFDETRNano-torch-fp32: the baseline measured another workload (seed=0 there, 1 here; images=2 there, 3 "
        "here), so it is not compared. Record a baseline of this workload: pytest --save-baseline *--rfdetr-seed=1*"
        "-k 'RFDETRNano-torch-fp32'",
        "*RFDETRNano-torch-fp32*forward*REFUSED: another workload*",
    ])


@pytest.mark.parametrize(("marker", "message"), [
    ("tolerance='ten'", "invalid tolerance 'ten': expected a percentage"),
    ("scopes='warp'", "unknown scope 'warp'"),
    ("budget='forward<=1ms'", "invalid budget 'forward<=1ms'"),
])
def test_a_bad_marker_argument_is_one_message(pytester: pytest.Pytester, marker: str, message: str) -> None:
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.rfdetr_latency({marker})
        def test_latency(rfdetr_case):
            rfdetr_case.check()
        """)
    result = pytester.runpytest(*QUICK, "--rfdetr-latency", "--rfdetr-backends=torch-fp32")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*@pytest.mark.rfdetr_latency on *test_latency*: *{message}*"])
    assert "Traceback" not in result.stdout.str()


def test_weights_for_all_models_by_name_is_refused_with_the_forms() -> None:
    from pytest_rfdetr_latency.measure.settings import parse_weights

    with pytest.raises(argparse.ArgumentTypeError, match="'all=' names no model; one checkpoint for the selected "
                                                         r"model is the path alone \(x.pth\)"):
        parse_weights("all=x.pth")


def _prepare(path: Path) -> Any:
    from PIL import Image

    from pytest_rfdetr_latency.measure.backends import BackendContext
    from pytest_rfdetr_latency.measure.backends.onnx_backend import prepare
    from pytest_rfdetr_latency.measure.cases import Case
    from pytest_rfdetr_latency.measure.environment import Device

    context = BackendContext(
        case=Case("mine", "onnx-cpu", onnx_file=str(path)), device=Device("cpu", "CPU", "cpu"),
        images=[Image.new("RGB", (64, 48))], detections=5, load_model=lambda: None, onnx_path=lambda: path,
    )
    return prepare(context)


def test_a_users_onnx_file_with_a_dynamic_height_is_one_message(nano_onnx: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    import onnx

    from pytest_rfdetr_latency.measure.backends import BackendMisconfigured

    model = onnx.load(str(nano_onnx))
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    dynamic = tmp_path / "dynamic.onnx"
    onnx.save(model, str(dynamic))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    with pytest.raises(BackendMisconfigured, match=r"dynamic.onnx: input .* has the shape \[1, 3, 'height', 384\]; "
                                                   "a latency case needs a fixed square image size"):
        _prepare(dynamic)
    assert not list((tmp_path / "tmp").iterdir())  # the first run's profile folder is gone with the session


def test_a_users_onnx_file_with_other_output_names_is_one_message(nano_onnx: Path, tmp_path: Path) -> None:
    import onnx

    from pytest_rfdetr_latency.measure.backends import BackendMisconfigured

    model = onnx.load(str(nano_onnx))
    names = {output.name: f"out{i}" for i, output in enumerate(model.graph.output)}
    for node in model.graph.node:
        node.output[:] = [names.get(o, o) for o in node.output]
    for output in model.graph.output:
        output.name = names[output.name]
    renamed = tmp_path / "renamed.onnx"
    onnx.save(model, str(renamed))
    with pytest.raises(BackendMisconfigured, match=r"renamed.onnx: outputs are named \['out0', 'out1'\]; a latency "
                                                   "case decodes RF-DETR's export"):
        _prepare(renamed)


def _outputs(classes: int = 4, queries: int = 30, keypoints: int = 0, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    boxes = np.concatenate([rng.uniform(0.2, 0.8, (1, queries, 2)), rng.uniform(0.05, 0.2, (1, queries, 2))], -1)
    out = {"boxes": boxes, "logits": rng.normal(0, 2, (1, queries, classes + 1))}
    if keypoints:
        out["keypoints"] = rng.uniform(0, 1, (1, queries, keypoints, 3))
    return out


def test_parity_fails_on_classes_swapped_and_keypoints_moved() -> None:
    from pytest_rfdetr_latency.measure import parity

    reference = _outputs(keypoints=17)
    assert parity.compare(reference, reference, "fp32").passed
    # One dominant class per query among twenty; the candidate finds every box, each with the next class.
    rng = np.random.default_rng(1)
    logits = rng.normal(-6.0, 0.5, (1, 30, 21))
    logits[0, np.arange(30), rng.integers(0, 20, 30)] = 4.0
    labelled = {**reference, "logits": logits}
    relabelled = {**reference, "logits": np.concatenate([np.roll(logits[..., :20], 1, axis=-1), logits[..., 20:]],
                                                        axis=-1)}
    found = parity.compare(labelled, relabelled, "fp16")
    assert any("of the matched detections have the reference's class" in f for f in found.failures)
    assert found.metrics["found_share"] == 1.0 and found.metrics["class_agreement"] < 0.5
    moved = {**reference, "keypoints": reference["keypoints"] + np.array([0.02, 0.02, 0.0])}
    found = parity.compare(reference, moved, "fp16")
    assert found.failures == ("matched keypoints moved by 0.02 of the image on average (at most 0.005 expected for "
                              "fp16)",)
