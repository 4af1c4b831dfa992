"""Head to head of two checkouts (the pull request's gate): the paired verdict, where threads are placed, what each
side imports and runs, the host injection: units with made-up figures and fake topologies. The real runs are in
test_history.py, beside the other head-to-head runs."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_rfdetr_latency.measure import headtohead, injection, placement, timing
from pytest_rfdetr_latency.measure.processes import Launch
from pytest_rfdetr_latency.verdict import judge, paired

# The paired verdict -------------------------------------------------------------------------------------------


def test_a_pair_is_the_kth_process_of_each_side_and_its_noise_is_pooled_around_each_cases_own_mean() -> None:
    assert paired.log_ratios([10.0, 20.0], [11.0, 20.0]) == pytest.approx([math.log(1.1), 0.0])
    # Two cases that changed by different amounts: only the spread around each one's mean is noise.
    noise, freedom = paired.pooled_noise([[0.10, 0.12, 0.08], [-0.02, 0.0, 0.02]])
    assert freedom == 4 and noise == pytest.approx(0.02, rel=1e-6)
    assert paired.pooled_noise([[0.1]]) == (None, 0)


def test_the_line_is_students_t_on_the_pooled_freedom_over_the_root_of_the_pairs() -> None:
    line = paired.line(0.01, 9, 4)
    assert line is not None and math.log1p(line) == pytest.approx(judge.student_quantile(3.0, 9) * 0.01 / 2)
    assert judge.student_quantile(3.0, 9) == pytest.approx(4.09, abs=0.01)  # t(9) at the normal 3-sigma tail
    assert paired.line(None, 9, 4) is None and paired.line(0.01, 0, 4) is None


def test_a_slowdown_beyond_both_the_line_and_the_tolerance_is_a_regression_and_says_what_it_could_detect() -> None:
    this = [5.00, 5.10, 5.05, 5.02]
    slower = [v * 1.05 for v in this]
    verdict = paired.judge_pairs("forward", "p20", this, slower, 0.03, 0.01, 9, resolve=0.05)
    assert verdict.kind == "regression" and verdict.delta == pytest.approx(0.05)
    assert verdict.detail["detectable"] == pytest.approx(0.0207, abs=1e-3) and verdict.detail["pairs"] == 4
    assert "detectable 2.07%" in verdict.reason and "asked" in verdict.reason
    same = paired.judge_pairs("forward", "p20", this, this, 0.03, 0.01, 9, resolve=0.05)
    assert same.kind == "pass" and same.threshold == 0.03
    faster = paired.judge_pairs("forward", "p20", this, [v / 1.05 for v in this], 0.03, 0.01, 9, resolve=0.05)
    assert faster.kind == "improvement"


def test_a_comparison_that_cannot_resolve_what_it_must_is_unresolved_never_a_pass() -> None:
    this = [5.0, 5.1, 5.05, 5.02]
    verdict = paired.judge_pairs("forward", "p20", this, this, 0.03, 0.20, 9, resolve=0.05)
    assert verdict.kind == "inconclusive" and verdict.threshold > 0.3
    assert any(note.startswith("unresolved: this comparison can detect") for note in verdict.notes)
    # ...but a slowdown beyond even that coarse line is a regression all the same.
    far = paired.judge_pairs("forward", "p20", this, [v * 2 for v in this], 0.03, 0.20, 9, resolve=0.05)
    assert far.kind == "regression"
    unknown = paired.judge_pairs("forward", "p20", this[:1], this[:1], 0.03, None, 0, resolve=0.05)
    assert unknown.kind == "inconclusive" and "noise between pairs is unknown" in " ".join(unknown.notes)


def test_a_process_that_stands_apart_from_its_side_is_found_and_its_pair_left_out() -> None:
    found = paired.offsets({"a": [1.0, 1.01, 0.99, 1.5], "b": [2.0, 2.02, 1.98, 3.0]})
    assert paired.apart(found) == [3]
    assert paired.apart(paired.offsets({"a": [1.0, 1.02, 0.99, 1.01]})) == []
    assert paired.apart([0.0, 0.5]) == []  # too few others to say
    versus = _versus({"A": ([5.0, 5.1, 5.0, 9.0], [5.0, 5.0, 5.1, 5.0]),
                      "B": ([7.0, 7.1, 7.0, 12.0], [7.1, 7.0, 7.0, 7.0])})
    versus.leave_out_apart(["forward"])
    assert list(versus.left_out) == [3]
    assert "this side's process 4 stands +56.3% apart from its side's others" in versus.left_out[3]
    assert versus.paired("A", "forward") == ([5.0, 5.1, 5.0], [5.0, 5.0, 5.1])
    # The judged side's processes are never left out: a change that slows some of them is the change's.
    judged = _versus({"A": ([5.0, 5.0, 5.1, 5.0], [5.0, 5.1, 5.0, 9.0]),
                      "B": ([7.1, 7.0, 7.0, 7.0], [7.0, 7.1, 7.0, 12.0])})
    judged.leave_out_apart(["forward"])
    assert judged.left_out == {}


def test_the_noise_is_pooled_over_the_cases_of_one_backend_and_scope() -> None:
    versus = _versus({"A": ([5.0, 5.2, 5.1, 5.0], [5.1, 5.1, 5.2, 5.05]),
                      "B": ([7.0, 7.1, 7.3, 7.0], [7.2, 7.0, 7.1, 7.1])})
    noise, freedom = versus.noise("torch-fp16", "forward")
    expected = paired.pooled_noise([paired.log_ratios(*versus.paired(c, "forward")) for c in ("A", "B")])
    assert freedom == 6 and noise == pytest.approx(expected[0])
    assert versus.noise("onnx-cuda", "forward") == (None, 0)


def _versus(cases: dict[str, tuple[list[float], list[float]]]) -> headtohead.HeadToHead:
    versus = headtohead.HeadToHead(Path("/opt/head/bin/python"), headtohead.order(4))
    for case, sides in cases.items():
        for side, values in zip(("this", "other"), sides):
            versus.results[side][case] = [{"id": case, "backend": "torch-fp16", "process_index": i,
                                           "scopes": {"forward": {"value_ms": v}}} for i, v in enumerate(values)]
    return versus


def test_the_summary_lists_what_the_runner_cannot_gate_apart() -> None:
    from pytest_rfdetr_latency.report.render import unresolved_lines

    this = [5.0, 5.1, 5.05, 5.02]
    coarse = paired.judge_pairs("forward", "p20", this, this, 0.03, 0.20, 9, resolve=0.05)
    fine = paired.judge_pairs("device", "median", this, this, 0.01, 0.001, 9, resolve=0.02)
    results = [{"id": "RFDETRMedium-torch-fp16", "verdicts": {"forward": coarse.to_json(), "device": fine.to_json()}}]
    assert unresolved_lines(results) == [
        f"not gating on this runner: RFDETRMedium-torch-fp16 forward, could detect {coarse.threshold * 100:.3g}% and "
        "no less (must resolve 5%)"]
    # One process of three slowed threefold by a loaded CPU, Student's t on one degree of freedom: 10^101 % says only
    # that the comparison sees nothing.
    blind = coarse.to_json()
    blind["detail"] = {**blind["detail"], "detectable": 1.56e101, "resolve": 1.0}
    assert unresolved_lines([{"id": "RFDETRNano-torch-fp32", "verdicts": {"e2e": blind}}]) == [
        "not gating on this runner: RFDETRNano-torch-fp32 e2e, could detect more than 1000% and no less (must "
        "resolve 100%)"]


# Where the threads run ----------------------------------------------------------------------------------------


def _topology(root: Path, siblings: dict[int, str], node: int = 0) -> Path:
    for core, listed in siblings.items():
        folder = root / f"cpu{core}"
        (folder / "topology").mkdir(parents=True)
        (folder / "topology" / "thread_siblings_list").write_text(listed + "\n")
        (folder / f"node{node}").mkdir()
    return root


def test_the_launch_core_is_the_fastest_whose_siblings_can_be_kept_free(tmp_path: Path) -> None:
    root = _topology(tmp_path, {0: "0,4", 1: "1,5", 2: "2,6", 3: "3,7", 4: "0,4", 5: "1,5", 6: "2,6", 7: "3,7"})
    speeds = {0: 0.5, 1: 0.9, 2: 0.8, 3: 1.0, 4: 0.9, 5: 1.0, 6: 0.7, 7: 1.1}
    chosen = placement.choose(range(8), speeds, root)
    assert chosen is not None
    # Core 0 is the fastest, but the kernel's housekeeping lands there: the next fastest, 6, with 2 kept free.
    assert (chosen.launch, chosen.quiet, chosen.rest, chosen.node) == (6, (2,), (0, 1, 3, 4, 5, 7), 0)
    assert chosen.to_json()["speeds_ms"]["6"] == 0.7
    # A sibling outside the allowed cores need not be kept free; one core alone leaves nothing for the rest.
    assert placement.choose([2, 3], {2: 1.0, 3: 2.0}, root) == placement.Placement(2, (), (3,), 0)
    assert placement.choose([3], {3: 1.0}, root) is None
    assert placement.parse_cpu_list("0-2,5,7-8") == (0, 1, 2, 5, 7, 8)


def test_a_process_given_a_placement_moves_its_threads_and_the_record_says_so() -> None:
    import threading

    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("placing threads needs two cores")
    chosen = placement.Placement(launch=allowed[0], quiet=(), rest=tuple(allowed[1:]))
    stop = threading.Event()
    pool = threading.Thread(target=stop.wait)
    pool.start()
    me = threading.get_native_id()
    others = {int(t): os.sched_getaffinity(int(t)) for t in os.listdir("/proc/self/task")}
    try:
        facts = placement.apply_at_start(chosen)
        assert os.sched_getaffinity(pool.native_id) == set(allowed[1:])  # type: ignore[arg-type]
        assert os.sched_getaffinity(me) == set(allowed)  # its cores, and the pools sized from them, unchanged
        assert facts["moved"] >= 1 and facts["placement"]["launch"] == allowed[0]
    finally:
        for tid, cores in others.items():  # this test's process is pytest's: every thread back where it was
            try:
                os.sched_setaffinity(tid, cores)
            except OSError:
                continue
        stop.set()
        pool.join()


# What each side runs ------------------------------------------------------------------------------------------


def test_the_other_sides_tests_are_its_own_and_its_environment_lacks_this_sides_pythonpath(tmp_path: Path) -> None:
    here, there = tmp_path / "head", tmp_path / "base"
    (here / "latency").mkdir(parents=True)
    (there / "latency").mkdir(parents=True)
    (here / "pytest.ini").write_text("[pytest]\n")
    (there / "pytest.ini").write_text("[pytest]\n")
    moves = headtohead.moves_to(here, there, {})
    mapped = headtohead.map_target(f"{here}/latency/test_a.py::test_x[c]", moves)
    assert mapped == f"{there}/latency/test_a.py::test_x[c]"
    elsewhere = "/elsewhere/suite.py::test_latency[c]"
    assert headtohead.map_target(elsewhere, moves) == elsewhere
    launch = Launch(cwd=here / "latency", rootdir=here, inifile=here / "pytest.ini", options=("-p", "no:randomly"))
    other = headtohead.in_tree(launch, there, Path("/opt/base/bin/python"))
    assert (other.cwd, other.rootdir, other.inifile, other.python) == (
        there / "latency", there, there / "pytest.ini", Path("/opt/base/bin/python"))
    assert other.command(["t.py"])[:3] == ["/opt/base/bin/python", "-m", "pytest"]
    env = {"PYTHONPATH": "/this/side/src", "PATH": "/usr/bin"}
    assert headtohead.child_environment("other", env) == {"PATH": "/usr/bin", "PYTHONHASHSEED": "0"}
    assert headtohead.child_environment("this", env)["PYTHONPATH"] == "/this/side/src"
    assert headtohead.child_environment("this", {"PYTHONHASHSEED": "7"})["PYTHONHASHSEED"] == "7"


def test_sides_that_import_the_same_files_and_run_the_same_tests_are_one(tmp_path: Path) -> None:
    mine = {"rfdetr": "/env/rfdetr/__init__.py", "torch": "/env/torch/__init__.py", "onnxruntime": None}
    assert headtohead.same_code(mine, dict(mine), tmp_path, None) == [
        "rfdetr from /env/rfdetr/__init__.py", "torch from /env/torch/__init__.py", f"the tests of {tmp_path}"]
    assert headtohead.same_code(mine, dict(mine), tmp_path, tmp_path / "base") == []  # its own tests
    assert headtohead.same_code(mine, {**mine, "torch": "/other/torch/__init__.py"}, tmp_path, None) == []
    found = headtohead.provenance(("json", "no_such_module_here"))
    assert found["json"] is not None and found["json"].endswith("__init__.py") and found["no_such_module_here"] is None


def test_a_host_injection_delays_each_call_before_it_runs() -> None:
    calls: list[str] = []
    both = injection.with_extra_before(lambda: calls.append("call") or 7, lambda: calls.append("delay"))
    assert both() == 7 and calls == ["delay", "call"]
    clock = timing.HostClock()
    plain = statistic = min(clock.time_calls(lambda: None, 20))
    delayed = min(clock.time_calls(injection.with_extra_before(lambda: None, injection.host_delay(2.0)), 5))
    assert delayed >= 2.0 > statistic and plain < 1.0


# One pair standing apart, taking turns ------------------------------------------------------------------------------

# The H200's A/A run aa-turns-2 (docs/pr-gate.md, third session), forward scope of torch-fp16: each pair's figures.
MEDIUM = ([5.315, 5.134, 5.249, 5.911], [5.421, 5.221, 5.255, 9.923])  # pair 4: the head's process 68 % slower
KEYPOINT = ([8.395, 14.389, 8.209, 8.673], [8.878, 14.641, 8.599, 8.926])  # pair 2: both slow, alike


def test_a_pair_that_stands_apart_is_left_out_and_said_one_in_four_at_most() -> None:
    ratios = [paired.log_ratios(*MEDIUM), paired.log_ratios(*KEYPOINT)]
    found = paired.strays(ratios, "forward")
    assert [[index for index, _, _ in case] for case in found] == [[3], []]
    _, why, drawn = found[0][0]
    assert "its change +67.9%" in why and "one pair in four may stand apart" in why and "1 in 1000" in why
    assert 0 < drawn < ratios[0][3]  # pooled into the noise drawn in, not at its own distance
    # Three pairs: none may go (a verdict keeps three at least). Pairs standing apart together mask each other: the
    # others' spread then includes them, so none is left out (the comparison stays as wide as they make it).
    assert paired.strays([[0.0, 0.01, math.log(2.0)], [0.0, 0.01, -0.01, 0.005]], "forward")[0] == []
    eight = [0.0, 0.01, -0.01, 0.005, -0.004, 0.003, math.log(2.0), 0.002]
    assert [index for index, _, _ in paired.strays([eight, [0.0, 0.01, -0.01, 0.005]], "forward")[0]] == [6]
    eight[1] = math.log(1.8)
    assert paired.strays([eight, [0.0, 0.01, -0.01, 0.005]], "forward")[0] == []
    # The device scope's floor is 2 %: a pair 1.5 % off is kept however tight the others are.
    tight = [0.0, 0.0001, -0.0001, math.log(1.015)]
    assert paired.strays([tight, [0.0, 0.0002, -0.0001, 0.0001]], "device")[0] == []
    stray = [[*tight[:3], math.log(1.03)], [0.0, 0.0002, -0.0001, 0.0001]]
    assert [index for index, _, _ in paired.strays(stray, "device")[0]] == [3]


def test_leaving_stray_pairs_out_keeps_false_alarms_near_the_nominal_rate() -> None:
    # Clean pairs of Gaussian noise, two cases of four, the decision as judge_scope makes it: how often a pair is
    # left out, and how often a clean comparison fails, with the rule and without it (docs/pr-gate.md).
    import random
    import statistics

    rng = random.Random(20261201)

    def trial(use: bool, noise: float) -> tuple[bool, int]:
        groups = [[rng.gauss(0.0, noise) for _ in range(4)] for _ in range(2)]
        found = paired.strays(groups, "e2e") if use else [[], []]
        kept = [[r for i, r in enumerate(g) if i not in {j for j, _, _ in f}] for g, f in zip(groups, found)]
        pooled, freedom = paired.pooled_noise([k + [d for _, _, d in f] for k, f in zip(kept, found)])
        line = paired.line(pooled, freedom, len(kept[0]))
        assert line is not None
        return statistics.fmean(kept[0]) > math.log1p(max(0.03, line)), sum(len(f) for f in found)

    runs = 6000
    with_rule = [trial(True, 0.05) for _ in range(runs)]
    without = [trial(False, 0.05) for _ in range(runs)]
    left_out = sum(n for _, n in with_rule) / runs
    assert left_out < 0.02  # about one pair in a thousand of eight: under 2 % of runs
    alarms, plain = sum(a for a, _ in with_rule) / runs, sum(a for a, _ in without) / runs
    assert alarms <= plain + 0.002 and alarms < 0.004  # nominal: 0.135 %


def test_taking_turns_the_verdict_leaves_the_stray_pair_out_and_the_summary_says_so() -> None:
    from pytest_rfdetr_latency.report.duel import left_out_lines

    cases = {"RFDETRMedium-torch-fp16": MEDIUM, "RFDETRKeypointPreview-torch-fp16": KEYPOINT}
    in_turns = _versus(cases)
    in_turns.in_turns = True
    verdict = headtohead.judge_scope(in_turns, "RFDETRMedium-torch-fp16", "torch-fp16", "forward", "p20", 0.10)
    assert verdict.detail["pairs"] == 3 and verdict.kind == "pass" and verdict.detail["detectable"] < 0.10
    assert any(n.startswith("pair 4 left out: its change +67.9%") for n in verdict.notes)
    lines = left_out_lines([{"id": "RFDETRMedium-torch-fp16", "verdicts": {"forward": verdict.to_json()}}])
    assert lines == [f"head to head: RFDETRMedium-torch-fp16 forward: {verdict.notes[-1]}"]
    # One after the other, the pair stays (the reference side's processes standing apart are that mode's rule).
    sequential = headtohead.judge_scope(_versus(cases), "RFDETRMedium-torch-fp16", "torch-fp16", "forward", "p20",
                                        0.10)
    assert sequential.detail["pairs"] == 4 and sequential.kind == "inconclusive" and sequential.detail["unresolved"]


def test_a_pairs_ratio_call_by_call_is_the_median_of_its_calls_ratios_and_needs_enough_calls() -> None:
    this = [10.0, 20.0, 10.0] * 10
    other = [11.0, 22.0, 10.0] * 10  # the i-th call of each side met the same moment: fast, slow, fast, ...
    assert paired.call_ratio(this, other) == pytest.approx(math.log(1.1))
    assert paired.call_ratio(this[:19], other[:19]) is None  # fewer than MIN_CALLS
    assert paired.call_ratio(this + [5.0] * 5, other) == pytest.approx(math.log(1.1))  # the calls both sides took


def _calls(seed: int, count: int, slower: float) -> tuple[list[float], list[float]]:
    """Two sides' calls taken in turns: each moment of the host (fast or 1.8x slower) falls on both sides' i-th call,
    each call with its own 0.5 % jitter; the other side ``slower``."""
    import random

    rng = random.Random(seed)
    host = [rng.choice((1.0, 1.8)) for _ in range(count)]
    return ([6.0 * h * rng.gauss(1, 0.005) for h in host], [6.0 * slower * h * rng.gauss(1, 0.005) for h in host])


def test_taking_turns_one_call_a_block_each_pair_is_taken_call_by_call() -> None:
    versus = headtohead.HeadToHead(Path("/opt/head/bin/python"), headtohead.order(4), in_turns=True)
    for k in range(4):
        mine, theirs = _calls(k, 150, 1.03)
        # The figures (a fast quantile) meet the host's two speeds in different shares: they alone disagree.
        for side, calls, figure in (("this", mine, 6.0 * (1 + 0.05 * (k % 2))), ("other", theirs, 6.18)):
            versus.results[side].setdefault("A", []).append({
                "id": "A", "backend": "torch-fp16", "process_index": k,
                "scopes": {"forward": {"value_ms": figure, "block_size": 1, "blocks_ms": calls}}})
    ratios, by_calls = versus.ratios("A", "forward")
    assert by_calls and len(ratios) == 4 and all(r == pytest.approx(math.log(1.03), abs=0.003) for r in ratios)
    verdict = headtohead.judge_scope(versus, "A", "torch-fp16", "forward", "p20", 0.025)
    assert verdict.kind == "regression" and verdict.detail["by_calls"]
    assert verdict.delta == pytest.approx(0.03, abs=0.003) and "4 pairs, call by call, noise" in verdict.reason
    # One after the other, the i-th calls are minutes apart: the figures' ratios, as before, which miss it here.
    versus.in_turns = False
    ratios, by_calls = versus.ratios("A", "forward")
    assert not by_calls and ratios == pytest.approx(paired.log_ratios(*versus.paired("A", "forward")))
    figures = headtohead.judge_scope(versus, "A", "torch-fp16", "forward", "p20", 0.025)
    assert figures.kind != "regression" and not figures.detail["by_calls"]
    # Calls of a pair whose processes sampled the case in different rings (one was a case behind), or with a dropped
    # block on one side (every later call a round behind), are not a turn apart: that pair's figures.
    versus.in_turns = True
    versus.results["this"]["A"][0]["details"] = {"ring_case": 2}
    versus.results["other"]["A"][0]["details"] = {"ring_case": 3}
    versus.results["this"]["A"][1]["scopes"]["forward"]["dropped_blocks"] = 1
    kept = versus._ratios("A", "forward")
    assert [by_calls for _, by_calls in kept.values()] == [False, False, True, True]
    assert versus.ratios("A", "forward")[1] is False  # said so: not every pair was taken call by call
    # Blocks of several calls are not calls: the figures too.
    for runs in versus.results["this"].values():
        for run in runs:
            run["scopes"]["forward"]["block_size"] = 5
    assert versus.ratios("A", "forward")[1] is False


def test_taking_turns_with_no_plan_given_the_sides_alternate_call_by_call() -> None:
    from pytest_rfdetr_latency.measure.headtohead import sampling_for
    from pytest_rfdetr_latency.measure.sampling import PRESETS, parse_sampling
    from pytest_rfdetr_latency.measure.settings import Settings

    taking_turns = Settings(against=Path("/opt/head/bin/python"))
    assert sampling_for(taking_turns) == PRESETS["turns"] and PRESETS["turns"].block_size == 1
    given = dataclasses.replace(taking_turns, sampling=parse_sampling("quick"), sampling_explicit=True)
    assert sampling_for(given) == PRESETS["quick"]  # a plan asked for is the plan used
    one_after_the_other = dataclasses.replace(taking_turns, against_sequential=True)
    assert sampling_for(one_after_the_other) == PRESETS["standard"]


def _fake_pairs(figures: dict[tuple[str, int], float]) -> Any:
    """A stand-in for processes.run_in_turns: each child reports one torch-fp16 case's forward figure, looked up by
    its side (this side's launch has no interpreter of its own) and pair, and hands back a turn."""
    from pytest_rfdetr_latency.measure.processes import ChildOutcome

    def run_in_turns(children: Any, timeout: float) -> tuple[list[Any], list[int]]:
        outcomes = []
        for child in children:
            side = "this" if child.launch.python is None else "other"
            value = figures[(side, child.settings.process_index)]
            outcomes.append(ChildOutcome(results=[{"id": "RFDETRMedium-torch-fp16", "backend": "torch-fp16",
                                                   "scopes": {"forward": {"value_ms": value}}}]))
        return outcomes, [1] * len(children)

    return run_in_turns


def _figures(spread: float) -> dict[tuple[str, int], float]:
    """Pair k's two processes agree within +-spread, alternating in sign: a pair noise of about 2 x spread."""
    return {(side, k): 6.0 * (1 + (spread if (k + (side == "other")) % 2 else -spread)) for k in range(12)
            for side in ("this", "other")}


def _grown(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, spread: float, **given: Any) -> headtohead.HeadToHead:
    from pytest_rfdetr_latency.measure.settings import Settings

    monkeypatch.setattr(headtohead, "run_in_turns", _fake_pairs(_figures(spread)))
    settings = Settings(enabled=True, against=Path("/opt/head/bin/python"), against_aa=True, **given)
    launch = Launch(cwd=tmp_path, rootdir=tmp_path)
    return headtohead.measure(launch, ["latency"], settings, tmp_path)


def test_taking_turns_up_to_four_pairs_run_at_once_in_their_balanced_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pytest_rfdetr_latency.measure.settings import Settings

    calls: list[list[tuple[str, int]]] = []
    fake = _fake_pairs(_figures(0.001))

    def run_in_turns(children: Any, timeout: float) -> Any:
        calls.append([("this" if c.launch.python is None else "other", c.settings.process_index) for c in children])
        return fake(children, timeout)

    monkeypatch.setattr(headtohead, "run_in_turns", run_in_turns)
    settings = Settings(enabled=True, against=Path("/opt/head/bin/python"), against_aa=True, against_processes=6,
                        against_max_processes=6)
    outcome = headtohead.measure(Launch(cwd=tmp_path, rootdir=tmp_path), ["latency"], settings, tmp_path)
    # Six pairs: the first four at once (eight processes, this-other other-this ...), then the last two.
    assert calls == [[("this", 0), ("other", 0), ("other", 1), ("this", 1), ("this", 2), ("other", 2), ("other", 3),
                      ("this", 3)], [("this", 4), ("other", 4), ("other", 5), ("this", 5)]]
    assert outcome.turns == {k: {"this": 1, "other": 1} for k in range(6)}
    assert len(outcome.figures("other", "RFDETRMedium-torch-fp16", "forward")) == 6


def test_pairs_are_added_two_at_a_time_while_a_comparison_cannot_resolve_what_it_must(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pytest_rfdetr_latency.measure.settings import Settings

    # Pairs 3 % apart: four pairs (3 degrees of freedom) cannot resolve the 5 % a forward must; four more in one go.
    noisy = _grown(monkeypatch, tmp_path, 0.015)
    assert len(noisy.sides) == 16 and noisy.sides == headtohead.order(8) and noisy.may_grow
    assert [a["pairs"] for a in noisy.added] == [[5, 8]]
    assert noisy.added[0]["unresolved"] == ["RFDETRMedium-torch-fp16 forward"]
    assert len(noisy.figures("this", "RFDETRMedium-torch-fp16", "forward")) == 8
    assert noisy.details(8, 8)["added"] == noisy.added
    from pytest_rfdetr_latency.report.duel import added_pair_lines

    assert added_pair_lines(noisy.details(8, 8)) == [
        "head to head: pairs 5 to 8 added: 1 comparison(s) could not yet resolve what they must "
        "(RFDETRMedium-torch-fp16 forward)"]
    # A cap given is kept; pairs 0.2 % apart resolve with the four a run starts with, and nothing is added.
    assert len(_grown(monkeypatch, tmp_path, 0.015, against_max_processes=6).sides) == 12
    never = _grown(monkeypatch, tmp_path, 0.015, against_max_processes=4)
    assert len(never.sides) == 8 and never.added == [] and not never.may_grow
    quiet = _grown(monkeypatch, tmp_path, 0.001)
    assert len(quiet.sides) == 8 and quiet.added == [] and quiet.unresolved(Settings()) == []
    # One after the other, the same: each process on its own (processes.run_child), the added ones too.
    calls: list[tuple[str, int]] = []

    def run_child(launch: Any, targets: Any, settings: Any, timeout: float, env: Any = None) -> Any:
        side = "this" if launch.python is None else "other"
        calls.append((side, settings.process_index))
        return _fake_pairs(_figures(0.015))([type("C", (), {"launch": launch, "settings": settings})()], timeout)[0][0]

    monkeypatch.setattr(headtohead, "run_child", run_child)
    sequential = _grown(monkeypatch, tmp_path, 0.015, against_sequential=True)
    assert [a["pairs"] for a in sequential.added] == [[5, 8]] and len(calls) == 16
    assert [side for side, _ in calls] == headtohead.order(8) and [k for _, k in calls][8:] == [4, 4, 5, 5, 6, 6, 7, 7]


def test_a_run_stopped_while_growing_is_judged_on_its_first_pairs_and_profiles_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pytest_rfdetr_latency.measure.processes import Stopped
    from pytest_rfdetr_latency.measure.settings import Settings

    fake = _fake_pairs(_figures(0.015))  # pairs 3 % apart: the first four cannot resolve forward's 5 %, so it grows

    def stopped_when_growing(children: Any, timeout: float) -> Any:
        outcomes, turns = fake(children, timeout)
        if min(c.settings.process_index for c in children) >= 4:  # pairs 5 to 8: stopped, a case half done
            raise Stopped("stopped by signal 15 (SIGTERM)", outcomes, [0] * len(children))
        return outcomes, turns

    monkeypatch.setattr(headtohead, "run_in_turns", stopped_when_growing)
    settings = Settings(enabled=True, against=Path("/opt/head/bin/python"), against_aa=True)
    outcome = headtohead.measure(Launch(cwd=tmp_path, rootdir=tmp_path), ["latency"], settings, tmp_path)
    # As if it had not grown: four pairs, the added ones forgotten, still judged at the growing z; the record says it.
    assert outcome.stopped == {"why": "stopped by signal 15 (SIGTERM)", "pairs": [5, 8]}
    assert outcome.sides == headtohead.order(4) and sorted(outcome.turns) == [0, 1, 2, 3]
    assert len(outcome.figures("other", "RFDETRMedium-torch-fp16", "forward")) == 4
    assert outcome.added == [{"pairs": [5, 8], "unresolved": ["RFDETRMedium-torch-fp16 forward"], "stopped": True}]
    assert outcome.decide_z == paired.GROWING_Z and outcome.profiler is None
    assert outcome.why == "stopped by signal 15 (SIGTERM)"
    assert outcome.details(4, 4)["stopped"] == outcome.stopped


def test_a_run_stopped_in_its_first_pairs_keeps_what_its_processes_finished_and_the_errors_of_their_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pytest_rfdetr_latency.measure.processes import ChildOutcome, Stopped
    from pytest_rfdetr_latency.measure.settings import Settings

    calls: list[int] = []

    def stopped(children: Any, timeout: float) -> Any:
        calls.append(len(children))
        done = [ChildOutcome(results=[{"id": "RFDETRMedium-torch-fp16", "backend": "torch-fp16",
                                       "scopes": {"forward": {"value_ms": 6.0}}}]) for _ in children]
        done[1] = ChildOutcome(error="exit code 4; its last lines: ImportError: onnxruntime")  # ended on its own
        raise Stopped("stopped by signal 15 (SIGTERM)", done, [3] * len(children))

    monkeypatch.setattr(headtohead, "run_in_turns", stopped)
    settings = Settings(enabled=True, against=Path("/opt/head/bin/python"), against_aa=True, against_processes=6)
    outcome = headtohead.measure(Launch(cwd=tmp_path, rootdir=tmp_path), ["latency"], settings, tmp_path)
    # The first four pairs were stopped: the last two are never started, nothing grows, nothing is profiled.
    assert calls == [8] and outcome.stopped == {"why": "stopped by signal 15 (SIGTERM)", "pairs": [1, 4]}
    assert outcome.sides == headtohead.order(4)  # the report's order lists the processes that ran, not the six asked
    assert outcome.added == [] and outcome.profiler is None
    assert outcome.errors == {"this": [], "other": ["process 2 (other side): exit code 4; its last lines: ImportError: "
                                                    "onnxruntime"]}
    assert len(outcome.figures("this", "RFDETRMedium-torch-fp16", "forward")) == 4
    assert len(outcome.figures("other", "RFDETRMedium-torch-fp16", "forward")) == 3
    assert outcome.turns == {k: {"this": 3, "other": 3} for k in range(4)}  # the turns taken before the stop


def test_a_noisy_comparison_resolves_once_pairs_are_added_and_the_line_depends_on_the_noise_alone() -> None:
    from pytest_rfdetr_latency.measure.settings import Settings

    # Pair noise about 1.6 %: unresolved (a forward must resolve 5 %) with 4 pairs, resolved with 8.
    ratios = [0.016, -0.016, 0.012, -0.012, 0.02, -0.02, 0.014, -0.014]
    this = [6.0] * 8
    versus = _versus({"RFDETRMedium-torch-fp16": (this[:4], [6.0 * math.exp(r) for r in ratios[:4]])})
    assert versus.unresolved(Settings()) == ["RFDETRMedium-torch-fp16 forward"]
    grown = headtohead.HeadToHead(Path("/opt/head/bin/python"), headtohead.order(8))
    for side, values in (("this", this), ("other", [6.0 * math.exp(r) for r in ratios])):
        grown.results[side]["RFDETRMedium-torch-fp16"] = [
            {"id": "RFDETRMedium-torch-fp16", "backend": "torch-fp16", "process_index": i,
             "scopes": {"forward": {"value_ms": v}}} for i, v in enumerate(values)]
    assert grown.unresolved(Settings()) == []
    # The same spread around a 10 % slowdown: the line, and so the stopping, does not move with the change.
    slower = headtohead.HeadToHead(Path("/opt/head/bin/python"), headtohead.order(8))
    slower.results = {side: {k: [{**r, "scopes": {"forward": {"value_ms": r["scopes"]["forward"]["value_ms"] *
                                                               (1.1 if side == "other" else 1.0)}}} for r in runs]
                             for k, runs in cases.items()} for side, cases in grown.results.items()}
    assert slower.unresolved(Settings()) == [] and slower.noise("torch-fp16", "forward")[0] == pytest.approx(
        grown.noise("torch-fp16", "forward")[0])


def test_a_run_that_may_add_pairs_judges_at_half_the_tail_probability() -> None:
    from scipy.stats import norm

    from pytest_rfdetr_latency.verdict.judge import DECIDE_Z

    assert pytest.approx(float(norm.isf(norm.sf(DECIDE_Z) / 2)), rel=1e-12) == paired.GROWING_Z
    versus = _versus({"RFDETRMedium-torch-fp16": MEDIUM, "RFDETRKeypointPreview-torch-fp16": KEYPOINT})
    fixed = headtohead.judge_scope(versus, "RFDETRMedium-torch-fp16", "torch-fp16", "forward", "p20", 0.025)
    versus.may_grow = True
    growing = headtohead.judge_scope(versus, "RFDETRMedium-torch-fp16", "torch-fp16", "forward", "p20", 0.025)
    assert fixed.detail["z"] == DECIDE_Z and growing.detail["z"] == paired.GROWING_Z
    assert growing.detail["detectable"] > fixed.detail["detectable"]


def test_each_cases_verdicts_are_said_on_one_line_as_soon_as_they_are_decided() -> None:
    from pytest_rfdetr_latency.report.failures import decided

    this = [5.0, 5.1, 5.05, 5.02]
    verdicts = {"device": paired.judge_pairs("device", "median", this, this, 0.01, 0.001, 9, resolve=0.02),
                "forward": paired.judge_pairs("forward", "p20", this, [v * 1.05 for v in this], 0.025, 0.01, 9,
                                              resolve=0.05)}
    assert decided("RFDETRMedium-torch-fp16", verdicts) == (
        "RFDETRMedium-torch-fp16: decided: device pass +0.00% (threshold 1%); forward regression +5.00% (threshold "
        "2.5%)")
    assert decided("X", {}) == "X: decided: nothing compared"


def test_a_run_stopped_while_it_grew_forgets_the_added_pairs_their_results_turns_and_errors() -> None:
    """What a stop while growing is judged on: the first pairs, as if the run had not grown. Each error goes with
    its pair, whatever its text says."""
    from pytest_rfdetr_latency.measure.processes import ChildOutcome

    versus = headtohead.HeadToHead(Path("/opt/base/bin/python"), sides=headtohead.order(4))
    for pair in range(4):
        for number, side in enumerate(headtohead.order(4)[2 * pair:2 * pair + 2], start=2 * pair + 1):
            failed = (pair, side) in {(1, "other"), (2, "this")}
            versus.keep(side, pair, number, ChildOutcome(
                results=[] if failed else [{"id": "case", "scopes": {"e2e": {}}}],
                error="exit code 1; its last lines: a process number 9 in the text" if failed else None))
        versus.turns[pair] = {"this": 5, "other": 5}
    versus.forget_pairs(2)
    assert versus.sides == headtohead.order(2)
    assert [r["process_index"] for r in versus.results["this"]["case"]] == [0, 1]
    assert [r["process_index"] for r in versus.results["other"]["case"]] == [0]
    assert versus.errors == {"this": [], "other": ["process 3 (other side): exit code 1; its last lines: a process "
                                                   "number 9 in the text"]}
    assert sorted(versus.turns) == [0, 1]
