"""Measuring one case in this process: prepare its backend, check its outputs, warm up and sample each scope.

What comes out is a :class:`CaseResult` holding this process's figure of every scope; whether those figures are
slower than a baseline is judge.py's business. The caller hands in ``skip`` and ``fail`` (pytest's) and ``publish``.
"""

from __future__ import annotations

# Over 350 lines on purpose: one case's measurement from backend to figures; the scopes' sampling, injection and
# placement are its steps, each a method.
import gc
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pytest_rfdetr_latency.measure import injection, profiling, timing
from pytest_rfdetr_latency.measure.backends import BackendContext, BackendMisconfigured, BackendUnavailable, Prepared
from pytest_rfdetr_latency.measure.cases import Case
from pytest_rfdetr_latency.measure.environment import host_probe_ms, steal_jiffies
from pytest_rfdetr_latency.measure.lockstep import sharing_cores
from pytest_rfdetr_latency.measure.results import CaseError, CaseResult
from pytest_rfdetr_latency.measure.session import LatencySession
from pytest_rfdetr_latency.verdict import stats
from pytest_rfdetr_latency.verdict.scopes import DEFAULT_STATISTICS, MEASURE_ORDER

if TYPE_CHECKING:
    from pytest_rfdetr_latency.measure.memory import MemoryProbe


class CaseMeasurement:
    """One case measured once in this process (``run()``), with the callables pytest gives for skip and fail."""

    def __init__(
        self,
        session: LatencySession,
        case: Case,
        scopes: tuple[str, ...],
        *,
        skip: Callable[[str], NoReturn],
        fail: Callable[[str], NoReturn],
        publish: Callable[[CaseResult], None],
        node: str = "",
    ) -> None:
        self.session = session
        self.case = case
        self.id = case.id
        self.scopes = scopes
        self._skip = skip
        self._fail = fail
        self._publish = publish
        self._node = node
        self._cycles_per_ms: float | None = None  # the injected kernel's size, as measured in the device scope's graph
        self._ring = 0  # head to head taking turns, this case: 0 not in the ring yet, 1 in it, 2 stepped aside
        self._collected = False  # taking turns, this case's garbage was collected in full before it joined the ring
        self._to_profile: list[tuple[str, Any]] = []  # each timed scope's callable, for --rfdetr-profile

    def block_sizes(self) -> Mapping[str, int]:
        """Calls per block, per scope: what the fresh processes of one recording or check were told, else what the
        baseline was recorded with (so that a check samples as its baseline did), else chosen from the call time."""
        given = self.session.settings.block_sizes.get(self.id)
        if given:
            return given
        entry = self.session.baseline_entry(self.id)
        if entry is None or self.session.settings.save_baseline:
            return {}
        return {scope: int(s["block_size"]) for scope, s in entry["scopes"].items() if s.get("block_size")}

    def run(self, inject: float | None) -> CaseResult:
        """The case measured in this process. Head to head taking turns, a case that stops before it samples (skipped,
        unavailable, failed) still joins the ring for it and steps aside, so that this process stays in step with the
        others, case for case (lockstep.py)."""
        __tracebackhide__ = True
        from pytest_rfdetr_latency.measure import lockstep

        self._ring, self._collected = 0, False
        try:
            return self._run(inject)
        finally:
            if lockstep.taking_turns():
                if self._ring == 0:
                    lockstep.join()
                if self._ring < 2:
                    lockstep.step_aside()

    def _enter_ring(self, result: CaseResult) -> None:
        """Head to head taking turns: join the ring for this case, once (before its first warm-up, or before it
        prepares where preparing tunes on the GPU, BackendInfo.tunes_on_gpu); the result says
        which of the run's rings it was."""
        from pytest_rfdetr_latency.measure import lockstep

        if self._ring:
            return
        if lockstep.taking_turns():  # every process still works at once: in a turn, the others would wait for it
            gc.collect()
            self._collected = True  # so each scope's sampling, in its turn, collects only the young generations
        joined = lockstep.join()
        self._ring = 1
        if joined:
            result.details["ring_case"] = joined  # paired call by call only with the same case of the same ring

    def _run(self, inject: float | None) -> CaseResult:
        __tracebackhide__ = True
        session = self.session
        result = CaseResult(self.case, session.device.name, "measured", device_kind=session.device.kind,
                            node=self._node, baseline_file=str(session.baseline_path),
                            workload=session.workload(self.case))
        from pytest_rfdetr_latency.measure.memory import MemoryProbe
        from pytest_rfdetr_latency.measure.quiet import empty_tally, kept_quiet

        if self.case.info.needs_cuda and not session.device.is_cuda:
            self._unavailable(result, f"{self.case.backend} needs a CUDA device; this run measures on "
                                      f"{session.device.spec} ({session.device.name})")
        session.placement()  # the run's placement, chosen once per process before this case prepares anything
        quiet = result.details.setdefault("kept_quiet", empty_tally())
        with kept_quiet(quiet), sharing_cores():  # taking turns, every process prepares at once: a share of the cores
            self._make_what_cases_share()
        context = BackendContext(
            case=self.case, device=session.device, images=session.images, detections=session.settings.detections,
            load_model=lambda: session.model(self.case.model, self.case.resolution),
            onnx_path=lambda: session.onnx_path(self.case), scopes=self.scopes, threads=session.threads)
        probe = MemoryProbe(session.device, self.case.backend)
        probe.start()
        if inject and session.settings.inject_on == "memory":
            result.details["injected_memory"] = self._inject_memory(probe, inject)
        info = self.case.info
        if info.tunes_on_gpu and session.device.is_cuda:
            self._enter_ring(result)  # taking turns, alone while it tunes on the GPU
        session.progress(f"{self.id}: preparing {self.case.backend}")
        start = time.perf_counter()
        try:
            with kept_quiet(quiet, expected=(BackendUnavailable,)), sharing_cores():  # alone (in the ring): all
                prepared = session.prepare(context)
        except BackendUnavailable as exc:
            self._unavailable(result, str(exc))
        except BackendMisconfigured as exc:
            self._fail(f"{self.id}: {exc}")
        try:
            result.details["prepare_seconds"] = round(time.perf_counter() - start, 3)
            self._take_prepared(prepared, result)
            if inject:
                result.details["injected_slowdown_pct"] = inject
            probe.phase("prepare")
            with prepared.context():
                self._sample_all(prepared, result, inject)
            result.memory = probe.stop(prepared.memory_window)
            self._profile(prepared, result)
        finally:
            probe.release()
            prepared.close()
        result.fingerprint = {
            **session.fingerprint,
            "precision": prepared.precision,
            "provider": (prepared.details.get("providers") or [None])[0],
            "detections": session.settings.detections,
            "timer": self._clock(prepared).kind,
        }
        if not result.scopes:  # nothing that was asked could be measured: unavailable, a failure when strict
            self._unavailable(result, f"none of the selected scopes ({', '.join(self.scopes)}) can be measured: "
                              + "; ".join(f"{s}: {r}" for s, r in result.unavailable.items()))
        return result

    def _profile(self, prepared: Prepared, result: CaseResult) -> None:
        """A fresh process that profiles (Settings.profiles_here), once every figure is taken: each timed scope's
        window, its raw trace where the parent asked (beside its report)."""
        if not self._to_profile:
            return
        with prepared.context():
            profiling.take_all(result.details, self._to_profile, self.session.device.is_cuda,
                               self.session.settings.trace_dir, self.id)
            tables = result.details.get("profile") or {}
            if prepared.operators is None or not set(tables) & set(profiling.OPERATOR_SCOPES):
                return
            try:
                rows = prepared.operators(profiling.WINDOW_CALLS)
            except Exception as exc:  # the torch.profiler tables stand as they are
                result.details.setdefault("profile_errors", {})["operators"] = f"{type(exc).__name__}: {exc}"[:300]
                return
            for scope in set(tables) & set(profiling.OPERATOR_SCOPES):
                profiling.add_operators(tables[scope], rows)

    def _make_what_cases_share(self) -> None:
        """What other cases share (the model build, the parity reference), made before the memory probe starts. On a
        GPU the reference is made even where parity is not checked (fresh processes, --rfdetr-no-parity): the first
        optimisation of a model leaves state behind, and the case that ran first would carry it."""
        session = self.session
        if self.case.onnx_file is None and not self.case.backend.startswith("onnx-"):
            session.model(self.case.model, self.case.resolution)
        if not session.settings.no_parity or session.device.is_cuda:
            session.reference_outputs(self.case)

    def _inject_memory(self, probe: MemoryProbe, inject: float) -> str:
        """Self-test: hold ``inject`` % of the baseline's peak (the smallest of its processes') allocated on the GPU
        while the case runs, so its peak grows by that much; says what it held, or why nothing."""
        entry = self.session.baseline_entry(self.id) or {}
        peaks = [float(p) for p in (entry.get("memory") or {}).get("processes") or []]
        if not peaks:
            return "nothing: no baseline peak to size it by"
        mib = min(peaks) * inject / 100.0
        if not probe.hold(mib):
            return "nothing: this case's memory is not probed here"
        return f"{mib:.1f} MiB ({inject:g}% of the baseline's {min(peaks):.1f} MiB)"

    def _take_prepared(self, prepared: Prepared, result: CaseResult) -> None:
        """What preparing found, into the result, once its outputs agree with the reference and it detects something
        (a decode path timed with nothing to decode would not be measured)."""
        __tracebackhide__ = True
        result.details["batch"] = self.case.batch
        self._check_outputs(prepared, result)
        if prepared.detections <= 0:
            self._fail(
                f"{self.id}: post-processing would be timed with zero detections (score threshold "
                f"{prepared.score_threshold:.4g}); the measurement would not cover the decode path"
            )
        result.detections = prepared.detections
        result.score_threshold = prepared.score_threshold
        result.unavailable = {s: r for s, r in prepared.unavailable.items() if s in self.scopes}
        result.details.update(prepared.details)
        result.details["host_probe_ms"] = round(host_probe_ms(), 4)

    def _unavailable(self, result: CaseResult, reason: str) -> NoReturn:
        """A backend the configuration asked for cannot run here: said in the summary, skipped, or with
        --rfdetr-strict failed (a gate must not pass on what it could not measure)."""
        __tracebackhide__ = True
        result.outcome = "unavailable"
        result.message = f"{self.id}: {reason}"
        self._publish(result)
        if self.session.settings.strict:
            self._fail(result.message + " (--rfdetr-strict: every case the configuration asks for must be measured)")
        self._skip(result.message)

    def _clock(self, prepared: Prepared | None = None) -> timing.Clock:
        """CUDA events for work on the GPU; the host clock for a backend that computes on the CPU, even on a GPU
        run (an event pair around host work only times how long the host kept the stream waiting)."""
        return timing.HostClock() if self.case.info.on_host else self.session.clock

    def _monitor(self, prepared: Prepared | None = None) -> timing.GpuMonitor:
        """The GPU's clocks and throttling matter to GPU work only: a CPU backend neither waits for them to settle
        nor drops its blocks when the GPU throttles."""
        return timing.GpuMonitor() if self.case.info.on_host else self.session.monitor

    def _check_outputs(self, prepared: Prepared, result: CaseResult) -> None:
        """NaN/inf in the outputs is an error; outputs that diverge from FP32 PyTorch fail the case (parity)."""
        import numpy as np

        from pytest_rfdetr_latency.measure import parity

        if prepared.outputs is None:
            return
        outputs = prepared.outputs()
        for name, array in outputs.items():
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            if bad:
                raise CaseError(f"{self.id}: output {name!r} holds {bad} NaN/inf value(s); latency of a broken "
                                "computation is not measured (and never saved as a baseline)")
        if self.session.settings.no_parity:
            return
        reference = self.session.reference_outputs(self.case)
        if reference is None:
            result.details["parity"] = "not checked: a user's ONNX file has no PyTorch model to compare with"
            return
        found = parity.compare(reference, outputs, prepared.precision)
        result.parity = found.to_json()
        if not found.passed:
            result.outcome = "parity-failure"
            result.message = "; ".join(found.failures)
            self._publish(result)
            self._fail(
                f"{self.id}: outputs diverge from FP32 PyTorch on the same input and weights, so its latency does "
                f"not count: {result.message} (metrics: {found.metrics})"
            )

    def _scope_fn(
        self, prepared: Prepared, scope: str, inject: float | None, meta: dict[str, Any],
        after_warmup: Callable[[], None],
    ) -> Any:
        session = self.session
        device = session.device
        plain = prepared.scopes.get(scope)
        if scope == "device" and prepared.graphable is not None:
            plain = timing.capture_cuda_graph(prepared.graphable, device.spec)
        if plain is None or not inject:
            return plain
        if session.settings.inject_on == "memory":
            meta["injected_as"] = "nothing: a memory injection leaves timings alone"
            return plain
        on_host_only = session.settings.inject_on == "host"
        if on_host_only and scope == "device":
            meta["injected_as"] = "nothing: a host injection leaves the GPU's own time alone"
            return plain
        clock = self._clock(prepared)
        warm = timing.warm_up(plain, clock, self._monitor(prepared), session.settings.sampling)
        after_warmup()  # a pool the warm-up started on the launch core would slow the calls that size the delay
        delay_ms = self._injection_reference(plain, clock, warm.call_ms, scope, meta) * inject / 100.0
        meta["injected_ms"] = round(delay_ms, 6)
        if on_host_only:
            meta["injected_as"] = "host delay before each call, on the launching thread"
            return injection.with_extra_before(plain, injection.host_delay(delay_ms), session.settings.profiles_here)
        on_gpu = device.is_cuda and prepared.graphable is not None and scope in ("forward", "device")
        if on_gpu:
            graphable = prepared.graphable
            assert graphable is not None
            if scope == "device":
                graph, spin = injection.injected_graph(
                    graphable, plain, delay_ms, clock, lambda fn: timing.capture_cuda_graph(fn, device.spec),
                    lambda cycles: injection.gpu_delay(delay_ms, device.spec, cycles),
                )
                self._cycles_per_ms = spin.cycles / delay_ms  # type: ignore[attr-defined]
                meta["injected_as"] = f"GPU kernel of {spin.cycles} cycles, sized in the CUDA graph"  # type: ignore[attr-defined]
                return graph
            cycles = None if self._cycles_per_ms is None else max(1, int(delay_ms * self._cycles_per_ms))
            spin = injection.gpu_delay(delay_ms, device.spec, cycles)
            meta["injected_as"] = f"GPU kernel of {spin.cycles} cycles"  # type: ignore[attr-defined]
            return injection.with_extra(plain, spin, session.settings.profiles_here)
        meta["injected_as"] = "host delay"
        return injection.with_extra(plain, injection.host_delay(delay_ms), session.settings.profiles_here)

    def _injection_reference(self, plain: Any, clock: timing.Clock, call_ms: float | None, scope: str,
                             meta: dict[str, Any]) -> float:
        """What a self-test's delay is a share of: the baseline's figure of the scope where there is one, else the
        median of about a second of this process's calls (9 to 50). One process's calls vary with the launching
        core's two speeds: on the H200 the median of 9 calls put a +5 % forward delay at 3.5-6.2 % of the other
        side's median call."""
        entry = self.session.baseline_entry(self.id)
        if entry is not None and scope in entry["scopes"]:
            return float(entry["scopes"][scope]["value_ms"])
        calls = max(9, min(50, int(1000.0 / max(call_ms or 1000.0, 1e-3))))
        reference = stats.quantile(clock.time_calls(plain, calls), 0.5)
        meta["injection_sized_by"] = f"median of {calls} calls, {reference:.4f} ms"
        return reference

    def _sample_all(self, prepared: Prepared, result: CaseResult, inject: float | None) -> None:
        """Every scope warmed up and sampled; head to head, in the ring of processes taking turns (lockstep.py),
        which this process joins first and leaves after, so that no process prepares while another samples."""
        from pytest_rfdetr_latency.measure import lockstep, placement

        chosen, facts = self.session.placement()
        checked: dict[str, Any] = {}
        if chosen is not None:
            result.details["pinned_core"] = chosen.launch
            result.details["placement"] = {**facts, "during_sampling": checked}
        per_scope: dict[str, Any] = {}
        self._enter_ring(result)
        try:
            with placement.launching_on(chosen, checked):
                self._sample_scopes(prepared, result, inject, per_scope, lambda: placement.resweep(chosen, checked))
        finally:
            lockstep.step_aside()
            self._ring = 2
        result.details["scopes"] = per_scope
        result.details["measure_seconds"] = round(sum(m["warmup_seconds"] + m["sample_seconds"]
                                                      for m in per_scope.values()), 3)

    def _sample_scopes(
        self, prepared: Prepared, result: CaseResult, inject: float | None, per_scope: dict[str, Any],
        after_warmup: Callable[[], None],
    ) -> None:
        session = self.session
        plan = session.settings.sampling
        clock, monitor = self._clock(prepared), self._monitor(prepared)
        sizes = self.block_sizes()
        for scope in MEASURE_ORDER:
            if scope not in self.scopes or scope in prepared.unavailable:
                continue
            meta: dict[str, Any] = {}
            try:
                fn = self._scope_fn(prepared, scope, inject, meta, after_warmup)
            except Exception as exc:  # a forward that cannot be captured as a CUDA graph, for one
                if scope != "device":
                    raise
                result.unavailable[scope] = f"could not capture the forward as a CUDA graph: {str(exc)[:300]}"
                continue
            if fn is None:
                continue
            statistic = DEFAULT_STATISTICS[scope]
            session.progress(f"{self.id}: measuring {scope} (warm-up, then blocks for up to {plan.max_seconds:g} s)")
            warm = timing.warm_up(fn, clock, monitor, plan)
            after_warmup()  # a pool the warm-up started on the launch core leaves it
            steal, switches = steal_jiffies(), _involuntary_switches()
            size, fewest = sizes.get(scope), None
            if session.settings.sizes_file is not None:  # head to head: every process samples alike
                mine = size or timing.block_size_for(warm.call_ms, plan)
                size, fewest = _shared_sizes(session.settings.sizes_file, f"{self.id}/{scope}",
                                             (mine, plan.fewest_blocks(warm.call_ms, mine)))
            sampled = timing.sample(fn, clock, monitor, plan, statistic, call_ms=warm.call_ms, block_size=size,
                                    fewest=fewest, collected=self._collected)
            result.scopes[scope] = self._summarize(scope, sampled, result)
            meta.update(
                warmup_calls=warm.calls,
                warmup_seconds=round(warm.seconds, 3),
                warmup_settled=warm.settled,
                sample_seconds=round(sampled.seconds, 3),
                monitor_seconds=round(sampled.monitor_seconds, 4),
                yardstick_seconds=round(sampled.yardstick_seconds, 4),
                waited_seconds=round(sampled.waited_seconds, 3),
                block_size=sampled.block_size,
                blocks=len(sampled.blocks),
                host_ms_blocks=[round(h, 4) for h in sampled.host_ms],
                involuntary_switches=_involuntary_switches() - switches,
                gpu=[s.to_json() for s in sampled.states[-1:]],
            )
            after = steal_jiffies()
            if steal is not None and after is not None:
                meta["steal_jiffies"] = after - steal
            per_scope[scope] = meta
            if session.settings.profiles_here:  # kept only to be profiled
                self._to_profile.append((scope, fn))

    def _summarize(self, scope: str, sampled: timing.Sampled, result: CaseResult) -> stats.ScopeStats:
        kept = sampled.kept
        result.samples[scope] = [x for block in kept for x in block]
        if len(kept) < 2:
            raise CaseError(
                f"{self.id}: {scope}: only {len(kept)} of {len(sampled.blocks)} blocks were taken while the GPU "
                "ran unthrottled; the measurement is not trustworthy (check cooling and power on this runner)"
            )
        try:
            return stats.summarize(kept, DEFAULT_STATISTICS[scope], sampled.dropped, sampled.block_size,
                                   sampled.kept_host_ms)
        except ValueError as exc:
            raise CaseError(f"{self.id}: {scope}: {exc}") from exc


def _involuntary_switches() -> int:
    """How often this thread was taken off its core so far (a busy host preempts the launching thread)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return 0
    who = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
    return int(resource.getrusage(who).ru_nivcsw)


def _shared_sizes(path: Path, key: str, mine: tuple[int, int]) -> tuple[int, int]:
    """The block size and the fewest blocks every process of a head-to-head run samples ``key`` with: the first
    process to size it writes ``mine`` down, the others read it (the processes take turns, so they never write at
    once)."""
    import json
    import os

    known: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}
    names = (key, f"{key}/fewest")
    if any(name not in known for name in names):
        known.update({name: value for name, value in zip(names, mine) if name not in known})
        partial = path.with_name(path.name + ".tmp")
        partial.write_text(json.dumps(known))
        os.replace(partial, path)
    return int(known[names[0]]), int(known[names[1]])
