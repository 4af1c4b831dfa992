"""The measurement scopes: what a timed call covers.

``e2e``        what a user's call costs: ``predict()`` on an image, or preprocess + ``run()`` + decode for ONNX.
``forward``    the model on a ready input tensor, launched normally (kernel launches and copies included).
``iobinding``  ONNX Runtime CUDA with the input already on the GPU and outputs left there (IO binding).
``device``     GPU time with the launch gaps removed: the forward replayed as a CUDA graph.
"""

from __future__ import annotations

ALL_SCOPES: tuple[str, ...] = ("e2e", "forward", "iobinding", "device")

# Every measured scope gates by default, each against its own data-derived threshold (stats.DEFAULT_THRESHOLDS):
# a noisy scope with a wide threshold still catches gross host-side regressions that no GPU-only scope can see.
DEFAULT_GATING_SCOPES: tuple[str, ...] = ALL_SCOPES
