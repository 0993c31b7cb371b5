"""Writing predictions: masks in the user's own values, probability maps, and overlays for people
to look at. Every file is written to a temporary name and renamed, so an interrupted run never
leaves a truncated file behind."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageDraw, ImageFont

from unetkit.runtime.atomic import atomic_write

# Distinct colours for classes 1, 2, ...; class 0 (usually background) is left uncoloured.
PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
     [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255]],
    dtype=np.float32,
)  # fmt: skip


# What each output adds to its input's stem. The mask and the overlay are PNGs for an image held in
# memory, TIFFs for slides predicted out of core and for stacks.
SUFFIXES: dict[str, str | dict[str, str]] = {
    "mask": {"image": ".png", "tiff": ".tif"},
    "overlay": {"image": "_overlay.png", "tiff": "_overlay.tif"},
    "probabilities": "_probs.tif",
    "objects": "_objects.tif",  # the label image
    "object_table": "_objects.csv",
    "geojson": "_objects.geojson",  # QuPath (object_files.py)
    "imagej": "_rois.zip",  # Fiji's ROI Manager (object_files.py)
}
OBJECT_FILES = ("geojson", "imagej")  # made from the label image and table, when asked for


def output_name(stem: str, output: str, kind: str = "image") -> str:
    """The one place an output file is named: <stem> + SUFFIXES[output], for an input of `kind`
    "image" (in memory), "large" (out of core) or "stack"."""
    suffix = SUFFIXES[output]
    return stem + (suffix["image" if kind == "image" else "tiff"] if isinstance(suffix, dict) else suffix)


@dataclass(frozen=True)
class PredictOutputs:
    """What `predict` writes beside each mask, and where: its options, passed down whole. Every
    output file is named by output_name, for planning (nothing is written when an output would
    replace a file), writing, and out of core."""

    out: Path
    overlay: bool = False
    probabilities: bool = False
    instances: bool = False
    object_files: tuple[str, ...] = ()  # of OBJECT_FILES, written with the instances
    overwrite: bool = False  # replace predict's own earlier outputs

    def names(self, stem: str, kind: str = "image") -> list[str]:
        """The files an input <stem> of `kind` (output_name) gets."""
        asked = ["mask", *["overlay"] * self.overlay, *["probabilities"] * self.probabilities]
        asked += ["objects", "object_table", *self.object_files] if self.instances else []
        return [output_name(stem, output, kind) for output in asked]

    def file(self, stem: str, output: str, kind: str = "image") -> Path:
        """Where the `output` of an input <stem> of `kind` is written."""
        return self.out / output_name(stem, output, kind)

    @staticmethod
    def every_suffix() -> list[str]:
        """What any input's outputs add to its stem, whatever was asked."""
        every = PredictOutputs(Path(), True, True, True, OBJECT_FILES)
        return sorted({name.removeprefix("x") for kind in ("image", "stack") for name in every.names("x", kind)})


def save_png(path: Path, array: np.ndarray) -> None:
    """Write atomically, so an interrupted run leaves no truncated PNG behind."""
    image = Image.fromarray(array)
    atomic_write(path, lambda temporary: image.save(temporary, format="PNG"))


def save_probabilities(path: Path, probabilities: np.ndarray) -> None:
    """(K, H, W) float32 probabilities as a K-plane TIFF, one channel per class."""
    planes = probabilities.astype(np.float32)
    atomic_write(
        path, lambda temporary: tifffile.imwrite(temporary, planes, photometric="minisblack", compression="zlib")
    )


# The legend grows a step for every this many pixels of the image's shorter side.
LEGEND_SIDE = 600


def class_colour(class_id: int) -> np.ndarray:
    return PALETTE[(class_id - 1) % len(PALETTE)]


def overlay(
    image: np.ndarray, class_ids: np.ndarray, labels: Sequence[str] | None = None, alpha: float = 0.45
) -> np.ndarray:
    """Blend a colour per class (class 0 left clear) over an (H, W, C) image in [0, 1]; with
    `labels` (one per class) a legend box is drawn in the top-left corner."""
    colours = np.zeros((max(int(class_ids.max()) + 1, len(labels or [])), 3), dtype=np.float32)
    for class_id in range(1, len(colours)):
        colours[class_id] = class_colour(class_id)
    result = np.empty((*class_ids.shape, 3), dtype=np.uint8)
    for top in range(0, class_ids.shape[0], 256):  # in stripes: whole-image float copies of a 4096^2 image cost GBs
        rows = slice(top, top + 256)
        part = image[rows, :, :3] if image.shape[2] >= 3 else np.repeat(image[rows, :, :1], 3, axis=2)
        rgb = np.clip(part, 0, 1) * 255
        ids = class_ids[rows]
        painted = ids > 0
        rgb[painted] = (1 - alpha) * rgb[painted] + alpha * colours[ids[painted]]
        result[rows] = rgb.round()
    return draw_legend(result, labels) if labels else result


def draw_legend(rgb: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """The classes' colours and names in a box at the top left, sized to the image: at a fixed 12 px
    a line it was a speck on a 4000 x 3000 photo (a red-team round); one step per LEGEND_SIDE pixels."""
    picture = Image.fromarray(rgb)
    draw = ImageDraw.Draw(picture)
    scale = max(1, round(min(rgb.shape[:2]) / LEGEND_SIDE))
    font = ImageFont.load_default() if scale == 1 else ImageFont.load_default(size=11 * scale)
    line = 12 * scale
    # Class 0 is left clear (most tasks' background): said, where it is a class of its own (CamVid's
    # sky) a gray swatch read as its colour (a red-team round).
    labels = [f"{labels[0]} (not tinted)", *labels[1:]]
    width = 18 * scale + max(draw.textlength(label, font=font) for label in labels)
    draw.rectangle([2, 2, 2 + width, 4 * scale + line * len(labels)], fill=(0, 0, 0))
    for class_id, label in enumerate(labels):
        top = 4 * scale + class_id * line
        colour = None if class_id == 0 else tuple(int(c) for c in class_colour(class_id))  # 0: an empty swatch
        draw.rectangle([5 * scale, top + scale, 13 * scale, top + 9 * scale], fill=colour, outline=(255, 255, 255))
        draw.text((17 * scale, top), label, fill=(255, 255, 255), font=font)
    return np.asarray(picture)
