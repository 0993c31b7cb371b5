"""Sample data for File > Open Sample > unetkit: an ISBI 2012 slice (bundled with the demo) and a
synthetic field of fluorescent nuclei (the benchmark sets are not shipped with the package)."""

from __future__ import annotations

import numpy as np

from unetkit.data import read_image
from unetkit.demo import DEMO_DATA


def em_slice() -> list[tuple[np.ndarray, dict, str]]:
    """Slice 25 of the demo's ISBI 2012 stack (a held-out slice: the demo never trains on it)."""
    image = read_image(DEMO_DATA / "images" / "25.png")[..., 0]
    return [(image, {"name": "ISBI slice 25"}, "image")]


def nuclei(size: int = 512, count: int = 60, seed: int = 0) -> list[tuple[np.ndarray, dict, str]]:
    """Bright, blurred, touching ellipses on a dark noisy background, as a fluorescence image of
    nuclei (uint8): what the `nuclei` model was trained on, drawn here."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    image = np.zeros((size, size), np.float32)
    for _ in range(count):
        cy, cx = rng.uniform(12, size - 12, 2)
        ry, rx = rng.uniform(7, 14, 2)
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u, v = dx * np.cos(angle) + dy * np.sin(angle), -dx * np.sin(angle) + dy * np.cos(angle)
        image[(u / rx) ** 2 + (v / ry) ** 2 <= 1] = rng.uniform(0.4, 1.0)
    image = ndimage.gaussian_filter(image, 1.5) + rng.normal(0.03, 0.02, image.shape)
    pixels = np.clip(image * 220, 0, 255).astype(np.uint8)
    return [(pixels, {"name": "nuclei (synthetic)"}, "image")]
