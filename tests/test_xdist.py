"""Several workers through pytest-xdist: the binding plan (pure) and a two-worker CPU run on the fake backend."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_rfdetr_latency.measure.workers import Gpu, WorkerPlanError, plan, worker_index

H200 = [Gpu("0", "NVIDIA H200"), Gpu("1", "NVIDIA H200")]


def test_each_worker_gets_its_own_gpu_and_cores() -> None:
    bindings = plan(2, "cuda", H200, list(range(32)))
    assert [b.gpu.visible_id for b in bindings if b.gpu] == ["0", "1"]
    assert bindings[0].cores == tuple(range(16)) and bindings[1].cores == tuple(range(16, 32))
    assert "worker gw1: GPU 1 (NVIDIA H200), cores 16," in bindings[1].describe()


def test_auto_uses_the_gpus_when_there_are_some() -> None:
    assert all(b.gpu is not None for b in plan(2, "auto", H200, [0, 1, 2, 3]))
    assert all(b.gpu is None for b in plan(2, "auto", [], [0, 1, 2, 3]))


def test_more_workers_than_gpus_is_refused() -> None:
    with pytest.raises(WorkerPlanError, match=r"-n 4 asks for 4 workers but this host shows 2 GPU\(s\).*use -n 2"):
        plan(4, "cuda", H200, list(range(32)))


def test_gpus_of_different_models_are_refused() -> None:
    mixed = [Gpu("0", "NVIDIA H200"), Gpu("1", "NVIDIA A100-SXM4-80GB")]
    with pytest.raises(WorkerPlanError, match=r"different models.*run one pytest per model"):
        plan(2, "cuda", mixed, list(range(8)))
    # Only the GPUs in use count: one worker on the first GPU is fine.
    assert plan(1, "cuda", mixed, list(range(8)))[0].gpu == mixed[0]


def test_naming_one_gpu_under_xdist_is_refused() -> None:
    with pytest.raises(WorkerPlanError, match="names one GPU"):
        plan(2, "cuda:1", H200, list(range(8)))


def test_cuda_without_gpus_and_too_few_cores_are_refused() -> None:
    with pytest.raises(WorkerPlanError, match="no GPU is visible"):
        plan(2, "cuda", [], [0, 1])
    with pytest.raises(WorkerPlanError, match="more workers than this process may use cores"):
        plan(3, "cpu", [], [0, 1])


def test_cpu_workers_split_the_cores() -> None:
    bindings = plan(2, "cpu", H200, [0, 1, 2, 3, 4])
    assert [b.cores for b in bindings] == [(0, 1), (2, 3)]
    assert all(b.gpu is None for b in bindings)


def test_worker_index_reads_xdist_input() -> None:
    assert worker_index({"workerid": "gw3", "workercount": 4}) == (3, 4)


SUITE = """
import os

def test_latency(rfdetr_case):
    rfdetr_case.check()

def test_unrelated():  # no latency case, in a bound worker: on the worker's cores too (said in the summary)
    assert len(os.sched_getaffinity(0)) == len(os.environ["ALL_CORES"].split(",")) // 2
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores for two workers")
def test_two_cpu_workers_measure_and_the_controller_saves_once(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_backend: Any
) -> None:
    """The workers' binding and the controller's one save are mechanism: measured on the fake backend (inherited by
    the workers through the environment), as every case a worker starts would be."""
    pytester.makepyfile(test_suite=SUITE)
    cores = sorted(os.sched_getaffinity(0))
    monkeypatch.setenv("ALL_CORES", ",".join(map(str, cores)))
    common = ("-n", "2", "--rfdetr-device=cpu", "--rfdetr-models=RFDETRNano", "--rfdetr-backends=torch-fp32,onnx-cpu",
              "--rfdetr-sampling=quick,min-blocks=4,max-seconds=1,warmup-seconds=0.5", "--rfdetr-images=2",
              "--rfdetr-scopes=forward", f"--rfdetr-cache-dir={tmp_path / 'cache'}", "-p", "no:randomly")
    result = pytester.runpytest(*common, "--save-baseline", "--rfdetr-report=report.json")
    result.assert_outcomes(passed=3)
    share = len(cores) // 2
    result.stdout.fnmatch_lines([f"xdist workers: worker gw0: no GPU, cores {','.join(map(str, cores[:share]))}; *",
                                 "xdist: every test of a worker runs on its GPU and cores, latency case or not*",
                                 "xdist: --dist load became loadgroup: a model's cases stay on one worker*"])
    report = json.loads((pytester.path / "report.json").read_text())
    workers = {case["details"]["worker"]["worker"] for case in report["cases"]}
    assert len(report["cases"]) == 2 and workers and workers <= {"gw0", "gw1"}  # two latency cases, one test not
    for case in report["cases"]:
        assert case["details"]["worker"]["threads"] == str(share)
        assert case["fingerprint"]["cpu_count"] == share
    saved = list((pytester.path / "latency_baselines").glob("*.json"))
    assert len(saved) == 1
    assert sorted(json.loads(saved[0].read_text())["entries"]) == ["RFDETRNano-onnx-cpu", "RFDETRNano-torch-fp32"]

    too_many = pytester.runpytest(*("-n", str(len(cores) + 1), *common[2:]), "--rfdetr-latency")
    assert too_many.ret == pytest.ExitCode.USAGE_ERROR
    too_many.stderr.fnmatch_lines(["*asks for more workers than this process may use cores*"])


@pytest.mark.slow
def test_a_bound_workers_thread_count_reaches_its_onnx_runtime_session(nano_onnx: Path) -> None:
    """What the two-worker run above no longer shows on the fake: a worker bound to a share of the cores opens its
    real ONNX Runtime session with that many intra-op threads, not the host's count."""
    import shutil

    import onnxruntime

    from pytest_rfdetr_latency.measure.backends import BackendContext
    from pytest_rfdetr_latency.measure.backends.onnx_backend import _profiled_session
    from pytest_rfdetr_latency.measure.cases import Case
    from pytest_rfdetr_latency.measure.environment import Device

    context = BackendContext(case=Case("RFDETRNano", "onnx-cpu"), device=Device("cpu", "a CPU", "cpu", None),
                             images=[], detections=1, load_model=lambda: None, onnx_path=lambda: nano_onnx, threads=1)
    session, profile_dir = _profiled_session(onnxruntime, context, nano_onnx, 0)
    try:
        assert session.get_session_options().intra_op_num_threads == 1
    finally:
        session.end_profiling()
        shutil.rmtree(profile_dir, ignore_errors=True)
