"""pytester's in-process runs restore ``sys.modules`` afterwards, so a C extension first imported inside one of them
(torch, onnx, onnxruntime, matplotlib...) is imported a second time by the next run, which crashes it. Everything
the plugin imports lazily during a latency run is therefore imported once here, up front."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot
import onnx  # noqa: F401
import onnxruntime  # noqa: F401
import rfdetr
import rfdetr.export._onnx.exporter  # noqa: F401
import supervision  # noqa: F401
import torch  # noqa: F401
import torchvision.transforms.functional  # noqa: F401

import pytest_rfdetr_latency.backends.onnx_backend
import pytest_rfdetr_latency.backends.torch_backend
import pytest_rfdetr_latency.exports
import pytest_rfdetr_latency.plots
import pytest_rfdetr_latency.runner  # noqa: F401
