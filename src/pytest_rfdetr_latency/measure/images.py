"""Seeded synthetic images: the same pixels on every machine and every run, and no data set to download."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image


def synthetic_images(count: int, size: tuple[int, int] = (640, 640), seed: int = 0) -> list[Image.Image]:
    """``count`` RGB images of ``size`` (width, height): smooth colour fields with noise, the same for one seed.

    Smooth structure plus noise rather than pure noise, so that any image codec or resize on the measured path
    sees content resembling a photograph's.
    """
    import numpy as np
    from PIL import Image

    width, height = size
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    images = []
    for _ in range(count):
        field = np.zeros((height, width, 3), dtype=np.float32)
        for _ in range(6):
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            radius = rng.uniform(0.1, 0.5) * max(width, height)
            colour = rng.uniform(0, 255, size=3).astype(np.float32)
            weight = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * radius**2))
            field += weight[..., None] * colour
        pixels = field / max(float(field.max()), 1.0) * 200.0 + rng.normal(0, 20, size=field.shape)
        images.append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
    return images
