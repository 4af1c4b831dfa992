"""What the cases of one pytest process share: the device and its fingerprint, the baseline file, the images, the
clock, and the caches of model builds, ONNX exports and FP32 reference outputs. Built once per process, lazily, by
the plugin's fixture; it imports no pytest."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pytest_rfdetr_latency.measure import timing
from pytest_rfdetr_latency.measure.backends.base import BackendContext, Prepared
from pytest_rfdetr_latency.measure.cases import Case, works_on_cpu
from pytest_rfdetr_latency.measure.environment import Device, cpu_count, fingerprint, git_commit
from pytest_rfdetr_latency.measure.images import synthetic_images
from pytest_rfdetr_latency.measure.placement import Placement
from pytest_rfdetr_latency.measure.results import CaseError
from pytest_rfdetr_latency.measure.settings import Settings
from pytest_rfdetr_latency.store import baselines
from pytest_rfdetr_latency.verdict import judge


class LatencySession:
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
        self.cores = threads or cpu_count()  # before any placement narrows the launching thread (placement.py)
        # Fresh processes that must confirm a comparison beyond its threshold, and that a baseline is made of.
        self.confirm = settings.confirm if settings.confirm is not None else (2 if device.is_cuda else 0)
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        self.device = device
        self.cache_dir = cache_dir
        self.root = root
        self.extra_fingerprint = dict(extra_fingerprint or {})
        # A recording over a damaged file, and its fresh processes, may find the file unreadable: it is replaced.
        recording = settings.save_baseline or settings.child_report is not None
        if settings.against is not None:  # head to head: this environment's processes stand in for a baseline
            self.baseline_path, self.baselines = Path("(head to head: no baseline file)"), None
        else:
            self.baseline_path, self.baselines = baselines.load_for_device(
                settings.baseline_dir, device.name, replacing=recording and settings.replace_corrupt
            )
        self._typical: dict[tuple[str, str, float | None], tuple[float | None, int]] = {}
        self._slopes: dict[tuple[str, str], float | None] = {}
        self.images = synthetic_images(settings.image_count, settings.image_size, settings.seed)
        self.clock = timing.clock_for(device.spec)
        self.monitor = timing.GpuMonitor.for_device(device.spec)
        self._models: dict[tuple[str, int | None], Any] = {}
        self._exports: dict[str, Path] = {}
        self._references: dict[tuple[str, int | None, int], dict[str, Any]] = {}
        self._fingerprint: dict[str, Any] | None = None
        self._placement: tuple[Placement | None, dict[str, Any]] | None = None
        self._digests: dict[str, str] = {}
        self.commit = git_commit(root)
        self.invocation: tuple[str, ...] = ()  # this run's paths and options, for the command that records again
        self.kept_quiet: dict[str, Any] = {"warnings": {}, "output_lines": 0}  # building for the fixtures (quiet.py)
        self.timings: dict[str, float] = {}  # seconds spent on shared work (build, reference, export), for the report
        self.progress: Callable[[str], None] = lambda text: None  # the plugin shows these lines live

    def _spent(self, what: str, start: float) -> None:
        self.timings[what] = round(self.timings.get(what, 0.0) + time.perf_counter() - start, 3)

    @property
    def fingerprint(self) -> dict[str, Any]:
        if self._fingerprint is None:
            self._fingerprint = {**fingerprint(self.device), **self.extra_fingerprint}
        return self._fingerprint

    def use_entries(self, entries: Mapping[str, dict[str, Any]], label: str) -> None:
        """Judge against ``entries`` instead of the baseline file (a head-to-head run: this environment's processes);
        ``label`` says what they are where a file name would be shown."""
        self.baselines = baselines.Baselines(Path(label), self.device.name, dict(entries))
        self.baseline_path = Path(label)
        self._typical.clear()
        self._slopes.clear()

    def baseline_entry(self, case_id: str) -> dict[str, Any] | None:
        return None if self.baselines is None else self.baselines.entries.get(case_id)

    def typical_noise(self, scope: str, backend: str, slope: float | None) -> tuple[float | None, int]:
        """The process-to-process spread of ``scope`` on ``backend`` typical of this device's baseline file (figures
        host-normalized with ``slope``), and its degrees of freedom."""
        key = (scope, backend, slope)
        if key not in self._typical:
            entries = self.baselines.entries.values() if self.baselines else ()
            self._typical[key] = judge.typical_noise(entries, scope, backend, slope)
        return self._typical[key]

    def host_slope(self, scope: str, backend: str) -> float | None:
        """How ``scope`` on ``backend`` follows the host yardstick in this device's baseline file (judge.host_slope)."""
        key = (scope, backend)
        if key not in self._slopes:
            entries = self.baselines.entries.values() if self.baselines else ()
            self._slopes[key] = judge.host_slope(entries, scope, backend)
        return self._slopes[key]

    def workload(self, case: Case) -> dict[str, Any]:
        """What a case measures besides its model and backend: two runs compare only when these agree. Weights are
        named by the checkpoint's content, not its path; the sampling plan by its parameters."""
        settings = self.settings
        checkpoint = settings.weights.for_model(case.model) if case.onnx_file is None else Path(case.onnx_file)
        plan = settings.sampling
        identity: dict[str, Any] = {
            "seed": settings.seed,
            "weights": "random" if checkpoint is None else f"sha256:{self._digest(checkpoint)}",
            "image_size": f"{settings.image_size[0]}x{settings.image_size[1]}",
            "images": settings.image_count,
            "detections": settings.detections,
            "batch": case.batch,
            "resolution": case.resolution or "native",
            "sampling": (f"block={plan.block_size},min-blocks={plan.min_blocks},max-blocks={plan.max_blocks},"
                         f"target={plan.target:g},max-seconds={plan.max_seconds:g},warmup-calls={plan.warmup_calls},"
                         f"warmup-seconds={plan.warmup_seconds:g}"
                         + ("" if plan.min_blocks_seconds is None
                            else f",min-blocks-seconds={plan.min_blocks_seconds:g}")),
        }
        if works_on_cpu(case.backend, self.device.is_cuda):
            # Work on the CPU scales with its cores: a baseline of 32 cores says nothing about a worker of 16.
            identity["cores"] = self.cores
        return identity

    def _digest(self, path: Path) -> str:
        key = str(path.resolve())
        if key not in self._digests:
            digest = hashlib.sha256()
            try:
                with path.open("rb") as handle:
                    for chunk in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(chunk)
                self._digests[key] = digest.hexdigest()[:16]
            except OSError:
                self._digests[key] = f"unreadable:{path.name}"  # the case itself then fails naming the path
        return self._digests[key]

    def placement(self) -> tuple[Placement | None, dict[str, Any]]:
        """Where this process's threads run while a GPU scope is sampled (placement.py): the run's placement handed
        down by the parent, else one chosen here once; applied to every thread of the process the first time. None
        on the CPU or with --rfdetr-no-pin."""
        if self._placement is None:
            from pytest_rfdetr_latency.measure import placement

            chosen: Placement | None = None
            facts: dict[str, Any] = {}
            if self.device.is_cuda and not self.settings.no_pin:
                chosen = self.settings.placement or placement.choose_for_run()
                if chosen is not None:
                    facts = placement.apply_at_start(chosen)
                    facts["chosen_by"] = "parent" if self.settings.placement else "this process"
            self._placement = (chosen, facts)
        return self._placement

    def model(self, name: str, resolution: int | None = None) -> Any:
        """The session's one build of ``name`` (seeded random weights, or the configured checkpoint)."""
        key = (name, resolution)
        if key not in self._models:
            from pytest_rfdetr_latency.measure.models import build_model

            source = self.settings.weights.for_model(name) or f"random weights, seed {self.settings.seed}"
            self.progress(f"building {name} ({source}) on {self.device.spec}")
            start = time.perf_counter()
            self._models[key] = build_model(
                name, self.device.spec, self.settings.seed, self.settings.weights.for_model(name), resolution
            )
            self._spent("build", start)
        return self._models[key]

    def reference_outputs(self, case: Case) -> dict[str, Any] | None:
        """Strict FP32 PyTorch's raw outputs for the case's model and input: what parity compares against.

        The network is rfdetr's export-mode module run eagerly (``inference(compile=False)``), not the traced one
        that torch-fp32 measures, so parity checks the trace too, and no second FP32 trace is made per model.
        """
        if case.onnx_file is not None:
            return None
        key = (case.model, case.resolution, case.batch)
        if key not in self._references:
            import torch

            from pytest_rfdetr_latency.measure import models
            from pytest_rfdetr_latency.measure.backends.base import preprocess_tensor, torch_matmul_precision
            from pytest_rfdetr_latency.measure.backends.torch_backend import tensor_outputs
            from pytest_rfdetr_latency.measure.cases import task_of

            model = self.model(case.model, case.resolution)
            start = time.perf_counter()
            with torch_matmul_precision(False):
                models.optimize(model, torch.float32, compile=False, batch_size=case.batch)
                try:
                    net = models.optimized_module(model)
                    resolution = case.resolution or models.resolution_of(model)
                    x = preprocess_tensor(self.images[:1] * case.batch, resolution, model.means, model.stds)
                    with torch.inference_mode():
                        raw = tensor_outputs(net(x.to(self.device.spec)), task_of(case.model))
                finally:
                    models.unoptimize(model)
            self._references[key] = {k: v.float().cpu().numpy() for k, v in raw.items()}
            self._spent("reference", start)
        return self._references[key]

    def prepare(self, context: BackendContext) -> Prepared:
        """``context.case`` prepared with its backend (backends/: torch and onnxruntime are imported only now)."""
        from pytest_rfdetr_latency.measure.backends import prepare

        return prepare(context)

    def onnx_path(self, case: Case) -> Path:
        """The case's ONNX export, made once and cached on disk across runs (keyed by everything it depends on)."""
        from filelock import FileLock

        from pytest_rfdetr_latency.measure import models
        from pytest_rfdetr_latency.measure.environment import _version

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
             f"torch={_version('torch')}", "opset=17", f"source={models.export_source()}"]
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
                start = time.perf_counter()
                try:
                    try:
                        exported = models.export_onnx(model, scratch, case.resolution or models.resolution_of(model),
                                                      case.batch)
                    except Exception as exc:
                        raise CaseError(
                            f"ONNX export of {case.model} failed: {type(exc).__name__}: {str(exc)[:800]}"
                        ) from exc
                    exported.replace(target)
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
                    self._spent("export", start)
        self._exports[digest] = target
        return target
