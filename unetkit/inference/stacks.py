"""Predicting a stack (a TIFF of Z or T planes, data/tiff_axes.py): each plane is an ordinary
image to the model (predict batches planes as it batches images), and the outputs are stacks of
the input's plane axes, written once the last plane is in: the mask, and on request the
probabilities, an overlay, and the objects (a label stack whose ids start at 1 in every plane,
as objects are cut plane by plane: no tracking between frames, no 3-D objects) with their table,
one row per object and its plane."""

from __future__ import annotations

import csv
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import torch

from unetkit.core.atomic import atomic_write
from unetkit.data.tiff_axes import TiffAxes
from unetkit.inference.instances import object_table
from unetkit.inference.outputs import overlay

# OME-TIFF names these axes; any other plane axis (tifffile's Q or I for pages without names) is
# written as tifffile's shaped TIFF, which keeps the axes too.
OME_AXES = "TCZYXS"


@dataclass(frozen=True)
class StackOutputs:
    """Which outputs a stack gets (predict's options), and where: <stem>.tif and its siblings."""

    out: Path
    threshold: float = 0.5
    overlay: bool = False
    probabilities: bool = False
    instances: bool = False

    def names(self, stem: str) -> list[str]:
        names = [f"{stem}.tif"]
        names += [f"{stem}_overlay.tif"] if self.overlay else []
        names += [f"{stem}_probs.tif"] if self.probabilities else []
        return names + ([f"{stem}_objects.tif", f"{stem}_objects.csv"] if self.instances else [])


class StackPrediction:
    """Collects one stack's planes as they come back from the model (in any order, from any
    thread) and writes its outputs when the last one is in."""

    def __init__(self, predictor, path: Path, layout: TiffAxes, outputs: StackOutputs) -> None:
        self.predictor, self.path, self.layout, self.outputs = predictor, path, layout, outputs
        self.planes: dict[int, dict[str, np.ndarray]] = {}
        self.lock = threading.Lock()

    def add(self, plane: int, image: np.ndarray, logits: torch.Tensor) -> bool:
        """Keep plane `plane`'s outputs; returns True when this completed (and wrote) the stack."""
        predictor, outputs = self.predictor, self.outputs
        class_ids = predictor.class_ids_from_logits(logits, outputs.threshold)
        kept = {"mask": predictor.mask_values.decode(class_ids)}
        if outputs.probabilities or outputs.instances:
            kept["probabilities"] = predictor.probabilities(logits)
        if outputs.instances:
            kept["labels"], kept["classes"] = predictor.objects_from_probabilities(kept["probabilities"])
        if outputs.overlay:
            legend = [f"value {value}" for value in predictor.mask_values.values]
            kept["overlay"] = overlay(image, class_ids, legend)
        with self.lock:
            self.planes[plane] = kept
            complete = len(self.planes) == self.layout.planes
        if complete:
            self.write()
        return complete

    def stacked(self, key: str) -> np.ndarray:
        """Plane outputs as one array whose first axes are the input's plane axes."""
        planes = np.stack([self.planes[index][key] for index in range(self.layout.planes)])
        return planes.reshape(self.layout.plane_shape + planes.shape[1:])

    def write(self) -> None:
        stem, out, axes = self.path.stem, self.outputs.out, self.layout.plane_axes
        save_stack(out / f"{stem}.tif", self.stacked("mask"), axes + "YX")
        if self.outputs.overlay:
            save_stack(out / f"{stem}_overlay.tif", self.stacked("overlay"), axes + "YXS")
        if self.outputs.probabilities:
            save_stack(out / f"{stem}_probs.tif", self.stacked("probabilities").astype(np.float32), axes + "CYX")
        if self.outputs.instances:
            labels = self.stacked("labels")
            dtype = np.uint16 if labels.max(initial=0) < 2**16 else np.uint32
            save_stack(out / f"{stem}_objects.tif", labels.astype(dtype), axes + "YX")
            self.save_table(out / f"{stem}_objects.csv")
        self.planes.clear()

    def save_table(self, path: Path) -> None:
        """The objects of every plane, one row each: the plane (its number and its position on
        each plane axis), then object_table's columns with the class's mask value."""
        values = self.predictor.mask_values.values
        axes = self.layout.plane_axes

        def write(temporary: Path) -> None:
            with open(temporary, "w", newline="") as handle:
                writer = csv.writer(handle)
                for plane in range(self.layout.planes):
                    kept = self.planes[plane]
                    table = object_table(kept["labels"], kept["classes"], kept.get("probabilities"))
                    if plane == 0:
                        columns = list(table)
                        writer.writerow(["plane", *axes.lower(), *columns[:2], "mask_value", *columns[2:]])
                    where = [int(i) for i in np.unravel_index(plane, self.layout.plane_shape)]
                    for row in zip(*(table[name] for name in columns), strict=True):
                        cells = [round(float(v), 4) if isinstance(v, float | np.floating) else int(v) for v in row]
                        writer.writerow([plane, *where, *cells[:2], values[cells[1]], *cells[2:]])

        atomic_write(path, write)


def save_stack(path: Path, array: np.ndarray, axes: str) -> None:
    """An output stack with its axes named: OME-TIFF where OME names them all, else tifffile's
    shaped TIFF (both read back with these axes by tifffile, Fiji and napari)."""
    ome = all(axis in OME_AXES for axis in axes) and len(set(axes)) == len(axes)
    atomic_write(
        path,
        lambda temporary: tifffile.imwrite(
            temporary, array, ome=ome, metadata={"axes": axes}, compression="zlib", photometric=None
        ),
    )
