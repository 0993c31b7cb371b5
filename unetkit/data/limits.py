"""How many pixels one image may declare before any of them is read: one limit for every reader
(TIFF pages and series, PNG, JPEG, GIF, BMP), in memory and out of core.

A 300 KB TIFF can declare 100,000 x 100,000 pixels; reading it allocated 9.3 GiB before numpy
gave up (measured), and Pillow's own bomb check guards its formats only. The default, 2^28 pixels
(16384 x 16384: 1 GiB as 8-bit gray, 3 GiB as the float32 RGB a model reads), is what a 24 GiB
machine reads whole with room to spare; a genuine larger image, such as a whole-slide image that
predict streams out of core (20,000 x 20,000 is 1.5 times the default), raises it with the
UNETKIT_MAX_PIXELS environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path

from unetkit.errors import UnetkitError

DEFAULT_MAX_PIXELS = 2**28
# Channels an image may have: gray, RGB, and the 2-6 (up to 16) channels of fluorescence images.
MAX_CHANNELS = 16
MAX_PIXELS_VARIABLE = "UNETKIT_MAX_PIXELS"


def max_pixels() -> int:
    """The limit in force: UNETKIT_MAX_PIXELS where set (a positive whole number), else the default."""
    text = os.environ.get(MAX_PIXELS_VARIABLE, "").strip().replace("_", "")
    if not text:
        return DEFAULT_MAX_PIXELS
    if not text.isdigit() or int(text) < 1:
        raise UnetkitError(f"{MAX_PIXELS_VARIABLE}={text[:40]!r}: expected a whole number of pixels, e.g. 4294967296")
    return int(text)


def check_declared_pixels(path: Path, height: int, width: int) -> None:
    """Refuse an image whose header declares more pixels per plane than the limit."""
    if height * width > max_pixels():
        raise too_many_pixels(path, height * width, f"{width} x {height} = ")


def too_many_pixels(path: Path, pixels: int, shape: str = "") -> UnetkitError:
    return UnetkitError(
        f"{path}: the header declares {shape}{pixels:,} pixels, over the limit of {max_pixels():,} per image "
        f"(possibly a decompression bomb); for a genuine larger image set {MAX_PIXELS_VARIABLE} above it, "
        "or save it as tiles"
    )
