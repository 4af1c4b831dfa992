"""pytester's in-process runs restore ``sys.modules`` afterwards; a C extension such as torch must therefore be
imported before them, or the next run re-imports it and crashes. Import the heavy stack once, up front."""

import onnxruntime  # noqa: F401
import rfdetr  # noqa: F401
import torch  # noqa: F401
