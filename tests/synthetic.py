"""Tiny synthetic data sets: bright shapes on a noisy background, with masks in user values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_shapes(
    root: Path,
    count: int = 8,
    size: tuple[int, int] = (48, 48),
    values: tuple[int, ...] = (0, 255),
    rgb: bool = False,
    seed: int = 0,
    mask_suffix: str = "",
) -> tuple[Path, Path]:
    """`count` images with one filled rectangle or disc per non-background value.
    Class k's shape has intensity proportional to k, so the task is learnable from pixels."""
    rng = np.random.default_rng(seed)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    height, width = size
    yy, xx = np.mgrid[:height, :width]
    for index in range(count):
        mask = np.full(size, values[0], dtype=np.uint8)
        image = rng.normal(0.15, 0.05, size)
        for k, value in enumerate(values[1:], start=1):
            cy, cx = rng.integers(8, height - 8), rng.integers(8, width - 8)
            radius = rng.integers(5, 9)
            if (index + k) % 2:
                shape = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
            else:
                shape = (abs(yy - cy) <= radius) & (abs(xx - cx) <= radius)
            mask[shape] = value
            image[shape] = 0.25 + 0.7 * k / (len(values) - 1) + rng.normal(0, 0.03, shape.sum())
        pixels = (np.clip(image, 0, 1) * 255).astype(np.uint8)
        if rgb:
            pixels = np.stack([pixels, pixels // 2 + 60, 255 - pixels], axis=-1)
        Image.fromarray(pixels).save(images / f"img{index:02d}.png")
        Image.fromarray(mask).save(masks / f"img{index:02d}{mask_suffix}.png")
    return images, masks
