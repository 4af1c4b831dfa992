"""The measurement scopes: what a timed call covers, in which order they are measured, and their defaults.

``e2e``        what a user's call costs: ``predict()`` on an image, or preprocess + ``run()`` + decode for ONNX.
``forward``    the model on a ready input tensor, launched normally (kernel launches and copies included).
``iobinding``  ONNX Runtime CUDA with the input already on the GPU and outputs left there (IO binding).
``device``     GPU time with the launch gaps removed: the forward replayed as a CUDA graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ALL_SCOPES: tuple[str, ...] = ("e2e", "forward", "iobinding", "device")

# Order of measurement: the GPU-only scopes first, while nothing else has warmed the host caches differently.
MEASURE_ORDER: tuple[str, ...] = ("device", "iobinding", "forward", "e2e")

# Scopes whose time is mostly the host's (Python, kernel launches, copies): they inherit the host's slow spells.
HOST_BOUND: tuple[str, ...] = ("iobinding", "forward", "e2e")

# The tolerance each scope is asked to resolve unless the user asks for another, as fractions. The gate widens it for
# a case whose baseline processes disagree more than that (judge.py). From the H200 measurements in docs/gate-power.md:
# the CUDA-graph replay moves a few tenths of a percent between processes; the host-bound scopes have slow spells.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "device": 0.01,
    "iobinding": 0.10,
    "forward": 0.10,
    "e2e": 0.15,
}

# The statistic of one process's samples, per scope. Host-bound scopes use a low quantile: interference only ever
# adds time, so the faster calls of a process describe the code, the slower ones the neighbours.
DEFAULT_STATISTICS: dict[str, str] = {
    "device": "median",
    "iobinding": "median",
    "forward": "p20",
    "e2e": "p20",
}

# Head to head (paired.py), the sides share the host and the session: the smallest slowdown worth failing a pull
# request for, and the coarsest line a comparison may have and still gate (a coarser one is unresolved; a tolerance
# asked for must be resolved to twice itself, paired.RESOLVE_FACTOR, which the defaults are). The host-bound
# tolerances sit below the 5 % host slowdown the gate is to catch; the lines are docs/pr-gate.md's targets. A line
# equal to its limit catches a change of that size about half the time: resolving a size for sure takes about half
# its limit.
HEAD_TO_HEAD_THRESHOLDS: dict[str, float] = {
    "device": 0.01,
    "iobinding": 0.025,
    "forward": 0.025,
    "e2e": 0.03,
}
HEAD_TO_HEAD_RESOLVE: dict[str, float] = {
    "device": 0.02,
    "iobinding": 0.05,
    "forward": 0.05,
    "e2e": 0.10,
}

# Against a stored baseline, the coarsest threshold a comparison may have and still gate: a wider one (processes that
# disagree, few of them, a tolerance asked that wide) is unresolved, listed as not gating on this runner, never a
# pass; a regression beyond even a wide threshold still fails. A tolerance asked for must be resolved to twice itself
# (paired.RESOLVE_FACTOR). Memory's limit holds for NVML's figures, judged like a timing scope.
STORED_RESOLVE: dict[str, float] = {
    "device": 0.02,
    "iobinding": 0.15,
    "forward": 0.15,
    "e2e": 0.25,
    "memory": 0.15,
}

# Against a stored baseline, a check lands farther from a recording made minutes earlier than the recording's
# back-to-back processes disagree: the host's other tenants, its clocks, its two speeds (docs/gate-power.md). The
# stored verdict adds this spread between sessions (a log standard deviation) to its noise, at z, so that a scope
# gates only where it can resolve its tolerance through that drift.
# Work on the host's CPU (ONNX Runtime's CPU provider, any backend on a CPU device), measured on the H200's 16-core VM
# over three sessions' clean checks, minutes to an hour after recording (benchmarks/session_noise.py ->
# benchmarks/results/session-noise-nvidia-h200.json): one check's log offset beyond the processes' own spread.
SESSION_NOISE_ON_CPU: dict[str, float] = {
    "forward": 0.095,
    "e2e": 0.156,
}
# GPU backends, in the verdict's own terms (figures host-normalized, the noise the threshold used over the processes
# each comparison measured): the spread that makes the clean checks' standardized offsets of unit variance, over 564
# comparisons of 29 clean checks in five sessions on the H200 (6, 8, 9, 10 and 11; benchmarks/session_noise.py
# --standardized -> benchmarks/results/session-noise-gpu-nvidia-h200-6-11.json). Without it ONNX Runtime's IO
# binding met offsets of +5.0 and -3.9 standard errors in 18 comparisons, one a false alarm. Session 11 alone showed
# torch-fp16 e2e and torch-fp32 forward drifting past what sessions 6-10 had, so each figure is over all five.
# Per backend where one was measured; other GPU backends take the figures pooled over these.
SESSION_NOISE_ON_GPU: dict[str, dict[str, float]] = {
    "onnx-cuda": {"device": 0.0031, "iobinding": 0.0401, "forward": 0.0438},
    "torch-fp16": {"device": 0.0010, "forward": 0.0324, "e2e": 0.0267},
    "torch-fp32": {"forward": 0.034},
}
SESSION_NOISE_ON_GPU_POOLED: dict[str, float] = {
    "device": 0.0008,
    "iobinding": 0.0401,
    "forward": 0.0345,
}


def session_noise(scope: str, backend: str, on_cpu: bool, stored: Mapping[str, Any] | None = None) -> float:
    """The between-session spread the stored verdict adds for ``scope`` of ``backend`` (a log standard deviation):
    the one learned from this runner's own clean checks where the baseline's ``stored`` scope holds one resting on
    enough comparisons (sessions.py), else the built-in one measured on the H200."""
    from pytest_rfdetr_latency.verdict.sessions import enough

    spread = (stored or {}).get("session_spread")
    if spread and enough(spread):
        return float(spread["value"])
    if on_cpu:
        return SESSION_NOISE_ON_CPU.get(scope, 0.0)
    return SESSION_NOISE_ON_GPU.get(backend, SESSION_NOISE_ON_GPU_POOLED).get(scope, 0.0)
