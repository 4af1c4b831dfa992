"""What one garbage collection costs a process that holds torch and an rfdetr model (docs/pr-gate.md, eleventh
session): a full collection against one of the young generations, three times.

    python benchmarks/gc_cost.py
"""

from __future__ import annotations

import gc
import time


def main() -> None:
    import torch  # noqa: F401  (what a measuring process holds)
    from rfdetr import RFDETRMedium

    RFDETRMedium(pretrain_weights=None, device="cpu")
    for _ in range(3):
        start = time.perf_counter()
        freed = gc.collect()
        full = time.perf_counter() - start
        start = time.perf_counter()
        gc.collect(1)
        young = time.perf_counter() - start
        print(f"objects {len(gc.get_objects())}: full collection {full:.3f} s (freed {freed}), "
              f"young generations {young * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
