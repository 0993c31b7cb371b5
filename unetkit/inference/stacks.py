"""Predicting a stack (a TIFF of Z or T planes, data/tiff_axes.py): each plane is an ordinary
image to the model (predict batches planes as it batches images), and the outputs are stacks of
the input's plane axes, written once the last plane is in: the mask, and on request the
probabilities, an overlay, and the objects (a label stack whose ids start at 1 in every plane,
as objects are cut plane by plane: no tracking between frames, no 3-D objects) with their table,
one row per object and its plane."""

from __future__ import annotations

import csv
import tempfile
import threading
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import tifffile
import torch
import zarr

from unetkit.data.tiff_axes import TiffAxes
from unetkit.inference.objects import label_dtype, object_table, table_rows
from unetkit.inference.outputs import PredictOutputs, output_name, overlay
from unetkit.inference.slide.band_outputs import OUTPUT_TILE, names_ome_axes, output_tiles, write_tiled_tiff
from unetkit.inference.slide.large_tiff import predict_large_tiff
from unetkit.runtime.atomic import atomic_write


class StackPrediction:
    """Collects one stack's planes as they come back from the model (in any order, from any
    thread) and writes its outputs when the last one is in."""

    def __init__(self, predictor, path: Path, layout: TiffAxes, outputs: PredictOutputs) -> None:
        self.predictor, self.path, self.layout, self.outputs = predictor, path, layout, outputs
        self.planes: dict[int, dict[str, np.ndarray]] = {}
        self.lock = threading.Lock()

    def add(self, plane: int, image: np.ndarray, logits: torch.Tensor) -> bool:
        """Keep plane `plane`'s outputs; returns True when this completed (and wrote) the stack."""
        predictor, outputs = self.predictor, self.outputs
        class_ids = predictor.class_ids_from_logits(logits, predictor.options.threshold)
        kept: dict = {"mask": predictor.mask_values.decode(class_ids)}
        probabilities = predictor.probabilities(logits) if outputs.probabilities or outputs.instances else None
        if outputs.probabilities:
            kept["probabilities"] = probabilities
        if outputs.instances:  # the table now, so the probabilities need not wait for the last plane
            kept["labels"], classes = predictor.objects_from_probabilities(probabilities)
            table = object_table(kept["labels"], classes, probabilities, bool(predictor.mask_values.instances))
            kept["table"] = table_rows(table, predictor.mask_values.values)
        if outputs.overlay:
            kept["overlay"] = overlay(image, class_ids, predictor.mask_values.legend)
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
        stem, axes = self.path.stem, self.layout.plane_axes
        file = partial(self.outputs.file, stem, kind="stack")
        save_stack(file("mask"), self.stacked("mask"), axes + "YX")
        if self.outputs.overlay:
            save_stack(file("overlay"), self.stacked("overlay"), axes + "YXS")
        if self.outputs.probabilities:
            save_stack(file("probabilities"), self.stacked("probabilities").astype(np.float32), axes + "CYX")
        if self.outputs.instances:
            labels = self.stacked("labels")
            save_stack(file("objects"), labels.astype(label_dtype(labels)), axes + "YX")
            tables = (self.planes[plane]["table"] for plane in range(self.layout.planes))
            save_plane_tables(file("object_table"), self.layout, tables)
        self.planes.clear()


def save_plane_tables(path: Path, layout: TiffAxes, tables: Iterable[list[list]]) -> None:
    """The objects of every plane in one CSV, one row each: the plane (its number and its position
    on each plane axis), then the plane's table (header and rows, instances.table_rows)."""

    def write(temporary: Path) -> None:
        with open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle)
            for plane, (header, *rows) in enumerate(tables):
                if plane == 0:
                    writer.writerow(["plane", *layout.plane_axes.lower(), *header])
                where = [int(i) for i in np.unravel_index(plane, layout.plane_shape)]
                writer.writerows([plane, *where, *row] for row in rows)

    atomic_write(path, write)


def predict_large_stack(predictor, path: Path, layout: TiffAxes, outputs: PredictOutputs) -> None:
    """A stack out of core: each plane through the band engine (large_tiff.predict_large_tiff)
    into temporary 2-D TIFFs, which are then stacked a tile at a time into the outputs that
    StackPrediction writes in memory (no overlay: a picture of a slide is the slide again)."""
    file = partial(outputs.file, path.stem, kind="stack")
    with tempfile.TemporaryDirectory(dir=outputs.out, prefix=".unetkit-") as folder:
        planes = [Path(folder) / output_name(str(plane), "mask", "large") for plane in range(layout.planes)]
        for plane, target in enumerate(planes):
            predict_large_tiff(predictor, path, target, outputs, plane, layout.choice)
        axes = layout.plane_axes
        stack_tiled(file("mask"), planes, layout, axes + "YX")
        if outputs.probabilities:
            stack_tiled(file("probabilities"), sibling(planes, "probabilities"), layout, axes + "CYX")
        if outputs.instances:
            stack_tiled(file("objects"), sibling(planes, "objects"), layout, axes + "YX")
            tables = [list(csv.reader(table.open(newline=""))) for table in sibling(planes, "object_table")]
            save_plane_tables(file("object_table"), layout, tables)


def sibling(planes: list[Path], output: str) -> list[Path]:
    """The files predict_large_tiff wrote beside each plane's mask for `output`."""
    return [plane.with_name(output_name(plane.stem, output, "large")) for plane in planes]


def stack_tiled(path: Path, planes: list[Path], layout: TiffAxes, axes: str) -> None:
    """Tiled 2-D TIFFs (or K-plane ones), one per plane, as one tiled stack, a tile row at a time."""
    with tifffile.TiffFile(planes[0]) as first:
        shape, dtype = tuple(first.series[0].shape), first.series[0].dtype
    pages, (height, width) = shape[:-2], shape[-2:]

    def tiles() -> Iterator[np.ndarray]:
        for plane in planes:
            store = tifffile.imread(plane, aszarr=True)
            try:
                array = zarr.open(store, mode="r")
                for page in np.ndindex(*pages):
                    strips = (
                        np.asarray(array[(*page, slice(top, top + OUTPUT_TILE))])
                        for top in range(0, height, OUTPUT_TILE)
                    )
                    yield from output_tiles(strips, width, dtype)
            finally:
                store.close()

    write_tiled_tiff(path, tiles(), layout.plane_shape + shape, dtype, axes)


def save_stack(path: Path, array: np.ndarray, axes: str) -> None:
    """An output stack with its axes named: OME-TIFF where OME names them all, else tifffile's
    shaped TIFF (both read back with these axes by tifffile, Fiji and napari)."""
    write = partial(tifffile.imwrite, data=array, ome=names_ome_axes(axes), metadata={"axes": axes}, compression="zlib")
    atomic_write(path, lambda temporary: write(temporary))
