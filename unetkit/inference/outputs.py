"""Writing predictions: masks in the user's own values, and overlays for people to look at."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from unetkit.atomic import atomic_write

# Distinct colours for classes 1, 2, ...; class 0 (usually background) is left uncoloured.
PALETTE = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
        [0, 128, 128],
        [220, 190, 255],
    ],
    dtype=np.float32,
)


def save_png(path: Path, array: np.ndarray) -> None:
    """Write atomically, so an interrupted run leaves no truncated PNG behind."""
    image = Image.fromarray(array)
    atomic_write(path, lambda temporary: image.save(temporary, format="PNG"))


def overlay(image: np.ndarray, class_ids: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a colour per class (class 0 left clear) over an (H, W, C) image in [0, 1]."""
    rgb = image[:, :, :3] if image.shape[2] >= 3 else np.repeat(image[:, :, :1], 3, axis=2)
    rgb = np.clip(rgb, 0, 1) * 255
    colours = np.zeros((int(class_ids.max()) + 1, 3), dtype=np.float32)
    for class_id in range(1, len(colours)):
        colours[class_id] = PALETTE[(class_id - 1) % len(PALETTE)]
    painted = class_ids > 0
    blended = rgb.copy()
    blended[painted] = (1 - alpha) * rgb[painted] + alpha * colours[class_ids[painted]]
    return blended.round().astype(np.uint8)
