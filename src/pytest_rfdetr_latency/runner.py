"""Runs one case: prepare its backend, warm up, sample each scope, summarize, decide against the baseline.

The session object holds what cases share (device, fingerprint, model builds, ONNX exports, images, the loaded
baseline file); a case object measures one model × backend. Neither imports pytest: the plugin hands in ``skip``
and ``fail`` callables and receives each result through ``publish``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from pytest_rfdetr_latency import baselines, budgets, stats, timing
from pytest_rfdetr_latency.backends import BackendContext, BackendMisconfigured, BackendUnavailable, Prepared
from pytest_rfdetr_latency.cases import Case
from pytest_rfdetr_latency.environment import Device, drift, fingerprint, git_commit, host_probe_ms
from pytest_rfdetr_latency.images import synthetic_images
from pytest_rfdetr_latency.scopes import ALL_SCOPES
from pytest_rfdetr_latency.settings import Settings

# Order of measurement: the GPU-only scopes first, while nothing else has warmed the host caches differently.
MEASURE_ORDER: tuple[str, ...] = ("device", "iobinding", "forward", "e2e")
assert set(MEASURE_ORDER) == set(ALL_SCOPES)
# Scopes whose time is mostly the host's (Python, kernel launches, copies): they inherit the host's slow spells.
HOST_BOUND: tuple[str, ...] = ("iobinding", "forward", "e2e")


class CaseError(RuntimeError):
    """A case could not be measured (export failed, outputs not finite...); the message gives the cause."""


def update_command(case_id: str | None = None) -> str:
    target = f" -k '{case_id}'" if case_id else ""
    return f"pytest --save-baseline{target}"


@dataclass
class CaseResult:
    case: Case
    device: str
    outcome: str  # saved, pass, regression, improvement, inconclusive, no-baseline
    scopes: dict[str, stats.ScopeStats] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    verdicts: dict[str, stats.Verdict] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    drift: list[str] = field(default_factory=list)
    detections: float = 0.0
    score_threshold: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    baseline_file: str = ""
    baseline: dict[str, Any] | None = None  # the entry compared against, if any
    message: str = ""
    memory: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    budget_failures: list[str] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)  # kept samples per scope, ms (reports only)

    def entry(self, commit: str | None) -> dict[str, Any]:
        """This result as a baseline entry."""
        return {
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "git_commit": commit,
            "fingerprint": self.fingerprint,
            "detections": round(self.detections, 3),
            "score_threshold": round(self.score_threshold, 6),
            "scopes": {scope: s.to_json() for scope, s in self.scopes.items()},
            "memory": self.memory,
            "parity": self.parity,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.case.id,
            "model": self.case.model,
            "backend": self.case.backend,
            "batch": self.case.batch,
            "resolution": self.case.resolution,
            "device": self.device,
            "outcome": self.outcome,
            "scopes": {scope: s.to_json() for scope, s in self.scopes.items()},
            "unavailable_scopes": self.unavailable,
            "verdicts": {scope: v.to_json() for scope, v in self.verdicts.items()},
            "fingerprint": self.fingerprint,
            "drift": self.drift,
            "detections": round(self.detections, 3),
            "score_threshold": round(self.score_threshold, 6),
            "details": self.details,
            "baseline_file": self.baseline_file,
            "baseline": self.baseline,
            "message": self.message,
            "memory": self.memory,
            "parity": self.parity,
            "budget_failures": self.budget_failures,
            "samples_ms": {scope: [round(x, 5) for x in values] for scope, values in self.samples.items()},
        }


class LatencySession:
    """What the cases of one pytest session share. Built once per process, lazily, by the plugin's fixture."""

    def __init__(
        self,
        settings: Settings,
        device: Device,
        cache_dir: Path,
        root: Path,
        extra_fingerprint: Mapping[str, Any] | None = None,
        threads: int | None = None,
    ) -> None:
        self.settings = settings
        self.threads = threads  # set when this process is bound to a slice of the cores (xdist workers)
        self.confirm = settings.confirm if settings.confirm is not None else (2 if device.is_cuda else 0)
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        self.device = device
        self.cache_dir = cache_dir
        self.root = root
        self.extra_fingerprint = dict(extra_fingerprint or {})
        self.baseline_path, self.baselines = baselines.load_for_device(
            settings.baseline_dir, device.name, replacing=settings.save_baseline and settings.replace_corrupt
        )
        self.images = synthetic_images(settings.image_count, settings.image_size, settings.seed)
        self.clock = timing.clock_for(device.spec)
        self.monitor = timing.GpuMonitor.for_device(device.spec)
        self._models: dict[tuple[str, int | None], Any] = {}
        self._exports: dict[str, Path] = {}
        self._references: dict[tuple[str, int | None, int], dict[str, Any]] = {}
        self._fingerprint: dict[str, Any] | None = None
        self.commit = git_commit(root)
        self.progress: Callable[[str], None] = lambda text: None  # the plugin shows these lines live

    # Shared, lazily built resources -------------------------------------------------------------------------

    @property
    def fingerprint(self) -> dict[str, Any]:
        if self._fingerprint is None:
            self._fingerprint = {**fingerprint(self.device), **self.extra_fingerprint}
        return self._fingerprint

    def model(self, name: str, resolution: int | None = None) -> Any:
        """The session's one build of ``name`` (seeded random weights, or the configured checkpoint)."""
        key = (name, resolution)
        if key not in self._models:
            from pytest_rfdetr_latency.models import build_model

            source = self.settings.weights.for_model(name) or f"random weights, seed {self.settings.seed}"
            self.progress(f"building {name} ({source}) on {self.device.spec}")
            start = time.perf_counter()
            model = build_model(
                name, self.device.spec, self.settings.seed, self.settings.weights.for_model(name), resolution
            )
            model.build_seconds = round(time.perf_counter() - start, 3)
            self._models[key] = model
        return self._models[key]

    def reference_outputs(self, case: Case) -> dict[str, Any] | None:
        """FP32 PyTorch's raw outputs for the case's model and input (TF32 off): what parity compares against."""
        if case.onnx_file is not None:
            return None
        key = (case.model, case.resolution, case.batch)
        if key not in self._references:
            import torch

            from pytest_rfdetr_latency import models
            from pytest_rfdetr_latency.backends.base import preprocess_tensor, torch_matmul_precision
            from pytest_rfdetr_latency.backends.torch_backend import tensor_outputs
            from pytest_rfdetr_latency.cases import task_of

            model = self.model(case.model, case.resolution)
            with torch_matmul_precision(False):
                models.optimize(model, torch.float32, compile=True, batch_size=case.batch)
                net = models.optimized_module(model)
                models.unoptimize(model)
                resolution = case.resolution or models.resolution_of(model)
                x = preprocess_tensor(self.images[:1] * case.batch, resolution, model.means, model.stds)
                with torch.inference_mode():
                    raw = tensor_outputs(net(x.to(self.device.spec)), task_of(case.model))
            self._references[key] = {k: v.float().cpu().numpy() for k, v in raw.items()}
        return self._references[key]

    def onnx_path(self, case: Case) -> Path:
        """The case's ONNX export, made once and cached on disk across runs (keyed by everything it depends on)."""
        from filelock import FileLock

        from pytest_rfdetr_latency import models
        from pytest_rfdetr_latency.environment import _version

        if case.onnx_file is not None:
            path = Path(case.onnx_file)
            if not path.is_file():
                raise CaseError(f"{case.id}: ONNX file {path} does not exist (given with --rfdetr-onnx)")
            return path
        checkpoint = self.settings.weights.for_model(case.model)
        source = f"seed={self.settings.seed}"
        if checkpoint is not None:
            st = checkpoint.stat()
            source = f"checkpoint={checkpoint.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        key_text = "|".join(
            [case.model, str(case.resolution), str(case.batch), source, f"rfdetr={_version('rfdetr')}",
             f"torch={_version('torch')}", "opset=17"]
        )
        digest = hashlib.sha256(key_text.encode()).hexdigest()[:16]
        if digest in self._exports:
            return self._exports[digest]
        folder = self.cache_dir / "onnx"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{case.group}-b{case.batch}-{digest}.onnx"
        with FileLock(str(folder / f".{target.name}.lock")):
            if not target.exists():
                model = self.model(case.model, case.resolution)
                self.progress(f"exporting {case.model} to ONNX (cached in {folder})")
                scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=folder))
                try:
                    start = time.perf_counter()
                    try:
                        exported = models.export_onnx(model, scratch, case.resolution or models.resolution_of(model),
                                                      case.batch)
                    except Exception as exc:
                        raise CaseError(
                            f"ONNX export of {case.model} failed: {type(exc).__name__}: {str(exc)[:800]}"
                        ) from exc
                    exported.replace(target)
                    (folder / f"{target.stem}.seconds").write_text(f"{time.perf_counter() - start:.3f}\n")
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
        self._exports[digest] = target
        return target

    def case(
        self,
        case: Case,
        *,
        skip: Callable[[str], NoReturn],
        fail: Callable[[str], NoReturn],
        publish: Callable[[CaseResult], None],
        scopes: tuple[str, ...] | None = None,
        thresholds: Mapping[str, float] | None = None,
        budgets: tuple[budgets.Budget, ...] = (),
        spawn: Callable[[float | None], dict[str, Any] | None] | None = None,
    ) -> LatencyCase:
        return LatencyCase(
            self, case, skip=skip, fail=fail, publish=publish, scopes=scopes, thresholds=thresholds, budgets=budgets,
            spawn=spawn,
        )


class LatencyCase:
    """One model × backend case: ``check()`` measures it and passes, fails or skips the test accordingly."""

    def __init__(
        self,
        session: LatencySession,
        case: Case,
        *,
        skip: Callable[[str], NoReturn],
        fail: Callable[[str], NoReturn],
        publish: Callable[[CaseResult], None],
        scopes: tuple[str, ...] | None = None,
        thresholds: Mapping[str, float] | None = None,
        budgets: tuple[budgets.Budget, ...] = (),
        spawn: Callable[[float | None], dict[str, Any] | None] | None = None,
    ) -> None:
        self.session = session
        self._spawn = spawn
        self.case = case
        self.id = case.id
        self._skip = skip
        self._fail = fail
        self._publish = publish
        self.scopes = scopes or session.settings.scopes
        self._thresholds = dict(thresholds or {})
        self._budgets = budgets
        self._sampled: dict[str, timing.Sampled] = {}
        self._fns: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<LatencyCase {self.id} on {self.session.device.spec}>"

    def threshold(self, scope: str) -> float:
        """The relative threshold for ``scope``: marker, then --rfdetr-tolerance, then the data-derived default."""
        if scope in self._thresholds:
            return self._thresholds[scope]
        return self.session.settings.tolerance.for_scope(scope, stats.DEFAULT_THRESHOLDS[scope])

    @property
    def baseline_entry(self) -> dict[str, Any] | None:
        found = self.session.baselines
        return None if found is None else found.entries.get(self.id)

    # The public steps ---------------------------------------------------------------------------------------

    def check(self, inject: float | None = None) -> CaseResult:
        """Measure, then record (--save-baseline) or compare with the baseline; fail or skip the test as needed."""
        __tracebackhide__ = True
        settings = self.session.settings
        inject = settings.inject if inject is None else inject
        prepared, result = self._measure(inject)
        try:
            return self._judge(prepared, result)
        finally:
            prepared.close()

    def measure(self, inject: float | None = None) -> CaseResult:
        """Prepare the backend and sample every selected scope; no baseline involved."""
        __tracebackhide__ = True
        prepared, result = self._measure(inject)
        prepared.close()
        return result

    # Internals ----------------------------------------------------------------------------------------------

    def _judge(self, prepared: Prepared, result: CaseResult) -> CaseResult:
        __tracebackhide__ = True
        settings = self.session.settings
        entry = self.baseline_entry
        if settings.child_report is not None:
            # A fresh process of --rfdetr-confirm or --rfdetr-save-processes: hand the measurement back, judge nothing.
            settings.child_report.write_text(json.dumps(result.to_json()))
            return result
        if settings.save_baseline:
            prepared.close()
            self._best_of_processes(result, list(result.scopes), settings.save_processes - 1)
        elif entry is not None:
            with prepared.context():
                self._decide(result, entry)
            prepared.close()
            self._confirm(result, entry)
        result.budget_failures = budgets.violations(
            (*settings.budgets, *self._budgets), self.id, self.session.device.slug,
            {scope: s.to_json() for scope, s in result.scopes.items()},
        )
        if result.budget_failures:
            result.outcome = "over-budget"
            result.message = "; ".join(result.budget_failures)
            self._publish(result)
            self._fail(f"{self.id} on {result.device} is over budget:\n  " + "\n  ".join(result.budget_failures)
                       + "\n  (a budget is absolute: no --save-baseline makes this pass; raise the budget if intended)")
        if settings.save_baseline:
            result.outcome = "saved"
            result.message = f"recorded for {self.session.device.name} (saved to {self.session.baseline_path})"
            self._publish(result)
            return result
        if entry is None:
            result.outcome = "no-baseline"
            result.message = self._no_baseline_reason()
            self._publish(result)
            if settings.strict:
                self._fail(result.message + " (--rfdetr-strict makes this a failure)")
            self._skip(result.message)
        self._publish(result)
        failures = self._failures(result)
        if failures:
            self._fail(failures)
        return result

    def _best_of_processes(self, result: CaseResult, scopes: list[str], extra: int) -> list[str]:
        """Measure ``scopes`` again in up to ``extra`` fresh processes; keep each scope's fastest process.

        Returns the scopes whose figure came from another process. Without a spawner (no pytest item behind the
        case) or with ``extra`` 0, nothing happens.
        """
        replaced: list[str] = []
        record = result.details.setdefault("processes", {"extra": 0, "failed": 0, "chosen": {}})
        for _ in range(max(0, extra)):
            if self._spawn is None or not scopes:
                break
            other = self._spawn(result.details.get("injected_slowdown_pct"))
            record["extra"] += 1
            if other is None:
                record["failed"] += 1
                continue
            for scope in scopes:
                data = other.get("scopes", {}).get(scope)
                if data is None:
                    continue
                candidate = stats.ScopeStats.from_json(data)
                if candidate.value < result.scopes[scope].value:
                    result.scopes[scope] = candidate
                    result.samples[scope] = list(other.get("samples_ms", {}).get(scope, []))
                    record["chosen"][scope] = f"process {record['extra'] + 1}"
                    if scope not in replaced:
                        replaced.append(scope)
        return replaced

    def _confirm(self, result: CaseResult, entry: dict[str, Any]) -> None:
        """A host-bound scope that regressed is measured again in fresh processes before the case fails: slow
        spells on shared hosts last whole processes, while a real regression is there in every process."""
        for _ in range(self.session.confirm):
            suspects = [s for s, v in result.verdicts.items() if v.kind == "regression" and s in HOST_BOUND]
            if not suspects:
                return
            if self._best_of_processes(result, suspects, 1):
                self._decide(result, entry, rounds=1)

    def _measure(self, inject: float | None) -> tuple[Prepared, CaseResult]:
        __tracebackhide__ = True
        session = self.session
        result = CaseResult(self.case, session.device.name, "measured", baseline_file=str(session.baseline_path))
        context = BackendContext(
            case=self.case,
            device=session.device,
            images=session.images,
            detections=session.settings.detections,
            load_model=lambda: session.model(self.case.model, self.case.resolution),
            onnx_path=lambda: session.onnx_path(self.case),
            scopes=self.scopes,
            threads=session.threads,
        )
        from pytest_rfdetr_latency.backends import prepare
        from pytest_rfdetr_latency.memory import MemoryProbe

        # What other cases share (the model build, the parity reference) is made before the memory probe starts.
        if self.case.onnx_file is None and not self.case.backend.startswith("onnx-"):
            session.model(self.case.model, self.case.resolution)
        if not session.settings.no_parity:
            session.reference_outputs(self.case)
        probe = MemoryProbe(session.device, self.case.backend)
        probe.start()
        session.progress(f"{self.id}: preparing {self.case.backend}")
        start = time.perf_counter()
        try:
            prepared = prepare(context)
        except BackendUnavailable as exc:
            self._skip(f"{self.id}: {exc}")
        except BackendMisconfigured as exc:
            self._fail(f"{self.id}: {exc}")
        try:
            result.details["prepare_seconds"] = round(time.perf_counter() - start, 3)
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
            if inject:
                result.details["injected_slowdown_pct"] = inject
            with prepared.context():
                self._sample_all(prepared, result, inject)
            result.memory = probe.stop()
        except BaseException:
            prepared.close()
            raise
        result.fingerprint = {
            **session.fingerprint,
            "precision": prepared.precision,
            "provider": (prepared.details.get("providers") or [None])[0],
            "detections": session.settings.detections,
            "timer": session.clock.kind,
        }
        if not result.scopes:
            prepared.close()
            self._skip(f"{self.id}: none of the selected scopes ({', '.join(self.scopes)}) can be measured: "
                       + "; ".join(f"{s}: {r}" for s, r in result.unavailable.items()))
        return prepared, result

    def _check_outputs(self, prepared: Prepared, result: CaseResult) -> None:
        """NaN/inf in the outputs is an error; outputs that diverge from FP32 PyTorch fail the case (parity)."""
        import numpy as np

        from pytest_rfdetr_latency import parity

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

    def _scope_fn(self, prepared: Prepared, scope: str, inject: float | None, meta: dict[str, Any]) -> Any:
        session = self.session
        device = session.device
        plain = prepared.scopes.get(scope)
        if scope == "device" and prepared.graphable is not None:
            plain = timing.capture_cuda_graph(prepared.graphable, device.spec)
        if plain is None:
            return None
        if not inject:
            return plain
        timing.warm_up(plain, session.clock, session.monitor, session.settings.sampling)
        entry = self.baseline_entry
        if entry is not None and scope in entry["scopes"]:
            reference = float(entry["scopes"][scope]["value_ms"])
        else:
            reference = stats.quantile(session.clock.time_calls(plain, 9), 0.5)
        delay_ms = reference * inject / 100.0
        meta["injected_ms"] = round(delay_ms, 6)
        on_gpu = device.is_cuda and prepared.graphable is not None and scope in ("forward", "device")
        if on_gpu:
            extra = timing.gpu_delay(delay_ms, device.spec)
            meta["injected_as"] = f"GPU kernel of {extra.cycles} cycles"  # type: ignore[attr-defined]
            if scope == "device":
                return timing.capture_cuda_graph(timing.with_extra(prepared.graphable, extra), device.spec)  # type: ignore[arg-type]
            return timing.with_extra(plain, extra)
        meta["injected_as"] = "host delay"
        return timing.with_extra(plain, timing.host_delay(delay_ms))

    def _sample_all(self, prepared: Prepared, result: CaseResult, inject: float | None) -> None:
        session = self.session
        per_scope: dict[str, Any] = {}
        core = None
        if session.device.is_cuda and not session.settings.no_pin:
            speeds = timing.core_speeds()
            if speeds:
                core = min(speeds, key=speeds.__getitem__)
                result.details["pinned_core"] = core
                result.details["core_speed_ms"] = {"chosen": speeds[core], "slowest": max(speeds.values()),
                                                   "cores": len(speeds)}
        with timing.pinned_to(core):
            self._sample_scopes(prepared, result, inject, per_scope)
        result.details["scopes"] = per_scope
        result.details["measure_seconds"] = round(sum(m["warmup_seconds"] + m["sample_seconds"]
                                                      for m in per_scope.values()), 3)

    def _sample_scopes(
        self, prepared: Prepared, result: CaseResult, inject: float | None, per_scope: dict[str, Any]
    ) -> None:
        session = self.session
        plan = session.settings.sampling
        for scope in MEASURE_ORDER:
            if scope not in self.scopes or scope in prepared.unavailable:
                continue
            meta: dict[str, Any] = {}
            try:
                fn = self._scope_fn(prepared, scope, inject, meta)
            except Exception as exc:  # a forward that cannot be captured as a CUDA graph, for one
                if scope != "device":
                    raise
                result.unavailable[scope] = f"could not capture the forward as a CUDA graph: {str(exc)[:300]}"
                continue
            if fn is None:
                continue
            statistic = stats.DEFAULT_STATISTICS[scope]
            session.progress(f"{self.id}: measuring {scope} (warm-up, then blocks for up to {plan.max_seconds:g} s)")
            warm = timing.warm_up(fn, session.clock, session.monitor, plan)
            sampled = timing.sample(fn, session.clock, session.monitor, plan, statistic, call_ms=warm.call_ms)
            self._fns[scope] = fn
            self._sampled[scope] = sampled
            result.scopes[scope] = self._summarize(scope, sampled, result)
            meta.update(
                warmup_calls=warm.calls,
                warmup_seconds=round(warm.seconds, 3),
                warmup_settled=warm.settled,
                sample_seconds=round(sampled.seconds, 3),
                block_size=sampled.block_size,
                blocks=len(sampled.blocks),
                gpu=[s.to_json() for s in sampled.states[-1:]],
            )
            per_scope[scope] = meta

    def _summarize(self, scope: str, sampled: timing.Sampled, result: CaseResult | None = None) -> stats.ScopeStats:
        kept = sampled.kept
        if result is not None:
            result.samples[scope] = [x for block in kept for x in block]
        if len(kept) < 2:
            raise CaseError(
                f"{self.id}: {scope}: only {len(kept)} of {len(sampled.blocks)} blocks were taken while the GPU "
                "ran unthrottled; the measurement is not trustworthy (check cooling and power on this runner)"
            )
        try:
            return stats.summarize(kept, stats.DEFAULT_STATISTICS[scope], sampled.dropped)
        except ValueError as exc:
            raise CaseError(f"{self.id}: {scope}: {exc}") from exc

    def _decide(self, result: CaseResult, entry: dict[str, Any], rounds: int | None = None) -> None:
        settings = self.session.settings
        result.baseline = entry
        result.drift = drift(entry.get("fingerprint", {}), result.fingerprint, tuple(self.session.extra_fingerprint))
        max_rounds = settings.rounds if rounds is None else rounds
        rounds = 1
        while True:
            result.verdicts = {}
            for scope, current in result.scopes.items():
                stored = entry["scopes"].get(scope)
                if stored is None:
                    continue
                baseline_stats = stats.ScopeStats.from_json(stored)
                try:
                    result.verdicts[scope] = stats.decide(scope, baseline_stats, current, self.threshold(scope))
                except ValueError as exc:
                    raise CaseError(f"{self.id}: {exc}") from exc
            pending = [s for s, v in result.verdicts.items() if v.kind == "inconclusive"]
            if not pending or rounds >= max_rounds:
                break
            rounds += 1
            with timing.pinned_to(result.details.get("pinned_core")):
                self._resample(pending, result)
        result.details["rounds"] = max(rounds, result.details.get("rounds", 1))

        stored_memory = entry.get("memory") or {}
        if result.memory and stored_memory.get("peak_mib") is not None and stored_memory.get("kind") == result.memory[
            "kind"
        ]:
            result.verdicts["memory"] = stats.decide_memory(
                float(stored_memory["peak_mib"]), float(result.memory["peak_mib"]), settings.memory_tolerance
            )
        missing = [s for s in result.scopes if s not in entry["scopes"]]
        if missing:
            result.details["scopes_without_baseline"] = missing
        result.outcome = stats.worst(list(result.verdicts.values())) if result.verdicts else "no-baseline"
        if result.outcome == "no-baseline":
            result.message = (
                f"the baseline of {self.id} holds none of the measured scopes ({', '.join(result.scopes)}): "
                f"record it again with {update_command(self.id)}"
            )

    def _resample(self, scopes: list[str], result: CaseResult) -> None:
        """Another round of blocks for inconclusive scopes, pooled with the earlier ones."""
        session = self.session
        for scope in scopes:
            sampled = timing.sample(self._fns[scope], session.clock, session.monitor, session.settings.sampling,
                                    stats.DEFAULT_STATISTICS[scope], into=self._sampled[scope])
            result.scopes[scope] = self._summarize(scope, sampled, result)

    def _failures(self, result: CaseResult) -> str:
        settings = self.session.settings
        lines: list[str] = []
        regressions = [v for v in result.verdicts.values() if v.kind == "regression"]
        inconclusive = [v for v in result.verdicts.values() if v.kind == "inconclusive"]
        if regressions:
            lines.append(f"{self.id} on {result.device} regressed:")
            lines += [f"  {v.describe()}" for v in regressions]
            extra = result.details.get("processes", {}).get("extra", 0)
            if extra:
                lines.append(f"  (the host-bound figures are the best of this process and {extra} fresh one(s))")
        if inconclusive and settings.strict:
            lines.append(f"{self.id}: verdict inconclusive after {result.details.get('rounds')} round(s) "
                         "(--rfdetr-strict makes this a failure):")
            lines += [f"  {v.describe()}" for v in inconclusive]
        if result.drift and settings.fail_on_drift:
            lines.append(f"{self.id}: the environment changed since the baseline (--rfdetr-fail-on-drift):")
            lines += [f"  {line}" for line in result.drift]
        if result.outcome == "no-baseline" and settings.strict:
            lines.append(result.message)
        if not lines:
            return ""
        if result.drift and not settings.fail_on_drift:
            lines.append("  note: the environment changed since the baseline: " + "; ".join(result.drift))
        lines.append(f"  baseline file: {result.baseline_file}")
        lines.append(f"  if this slowdown is accepted, update the baseline: {update_command(self.id)}")
        return "\n".join(lines)

    def _no_baseline_reason(self) -> str:
        session = self.session
        others = baselines.other_devices(session.settings.baseline_dir, session.device.slug)
        text = (
            f"no baseline for {self.id} on {session.device.name} in {session.baseline_path}: record one with "
            f"{update_command()}"
        )
        if others:
            text += f" (baselines exist for other devices: {', '.join(p.name for p in others)}; never compared)"
        return text
