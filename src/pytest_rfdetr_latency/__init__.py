"""pytest-rfdetr-latency: gate RF-DETR inference latency against per-GPU baselines.

Importing this package imports neither torch nor rfdetr nor onnxruntime.
"""

from __future__ import annotations

__version__ = "0.1.0"
