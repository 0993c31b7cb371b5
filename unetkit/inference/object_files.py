"""Objects out to the tools people count them in: a GeoJSON FeatureCollection for QuPath
(File > Import objects) and an ImageJ ROI set (.zip) for Fiji's ROI Manager, made from what
`predict --instances` wrote: the label image (<stem>_objects.tif, 2-D or a stack, of any size)
and its table (<stem>_objects.csv). Reading them back, rather than taking the objects from the
model, gives one path for images in memory, stacks and slides predicted out of core; each object
is read through its bounding box alone, so a slide's label image is never read whole.

Outlines trace the label image (scikit-image's marching squares at 0.5 around the object's
pixels, collinear points dropped), in pixel units with the origin at the image's top-left
corner, as QuPath and ImageJ both take them: a pixel (row r, column c) is the square from (c, r)
to (c + 1, r + 1), and every pixel of the object, none other, has its centre inside the outline.
GeoJSON keeps holes (interior rings) and objects of several pieces (MultiPolygon); an ImageJ
polygon ROI holds one ring, so the ROI set has each object's largest piece without its holes.
"""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import roifile
import tifffile
import zarr
from scipy import ndimage
from skimage.measure import find_contours

from unetkit.inference.outputs import class_colour, output_name
from unetkit.runtime.atomic import atomic_write

WHOLE_PIXELS = 2**26  # label images up to this many pixels are read whole, larger ones per object
Ring = np.ndarray  # (N, 2) x, y vertices of a closed outline, the first repeated last


def write_object_files(labels_path: Path, table_path: Path, formats: tuple[str, ...], instance_model: bool) -> None:
    """<stem>_objects.geojson and/or <stem>_rois.zip beside the label image and table predict wrote."""
    if not formats:
        return
    with table_path.open(newline="") as table:
        rows = list(csv.DictReader(table))
    with label_array(labels_path) as labels:
        objects = [(row, object_rings(labels, row)) for row in rows]
    stem = labels_path.name.removesuffix(output_name("", "objects"))
    if "geojson" in formats:
        collection = {"type": "FeatureCollection", "features": [
            qupath_feature(stem, row, rings, instance_model) for row, rings in objects if rings
        ]}  # fmt: skip
        target = labels_path.with_name(output_name(stem, "geojson"))
        atomic_write(target, lambda temporary: temporary.write_text(json.dumps(collection)))
    if "imagej" in formats:
        rois = [imagej_roi(row, rings) for row, rings in objects if rings]
        target = labels_path.with_name(output_name(stem, "imagej"))
        # A list, even an empty one, makes a .zip (a single ImagejRoi would make a .roi)
        atomic_write(target, lambda temporary: roifile.roiwrite(temporary, rois, mode="w"))


@contextmanager
def label_array(path: Path) -> Iterator[Any]:
    """The label image, (planes..., H, W): in memory when small, else a zarr view read per crop."""
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        if int(np.prod(series.shape)) <= WHOLE_PIXELS:
            yield series.asarray()
            return
        with series.aszarr() as store:
            yield zarr.open(store, mode="r")


def object_rings(labels, row: dict[str, str]) -> list[list[Ring]]:
    """The object's pieces, each [outer ring, *hole rings], in image pixel coordinates."""
    where = plane_position(row, labels.ndim - 2)
    top, left = int(row["bbox_min_y"]), int(row["bbox_min_x"])
    crop = np.asarray(labels[(*where, slice(top, int(row["bbox_max_y"])), slice(left, int(row["bbox_max_x"])))])
    return outline_rings(crop == int(row["id"]), top, left)


def plane_position(row: dict[str, str], plane_axes: int) -> tuple[int, ...]:
    """The object's plane as an index on each plane axis of the label stack (the table's columns
    after `plane`, as stacks.save_plane_tables writes them); () for a 2-D image."""
    if not plane_axes:
        return ()
    names = list(row)
    return tuple(int(row[name]) for name in names[1 : 1 + plane_axes])


def outline_rings(mask: np.ndarray, top: int, left: int) -> list[list[Ring]]:
    """Each 8-connected piece of `mask` (largest first) as [outer ring, *holes]."""
    pieces, count = ndimage.label(mask, structure=np.ones((3, 3)))
    sizes = np.bincount(pieces.ravel())[1:]
    result = []
    for piece in np.argsort(-sizes) + 1:
        region = pieces == piece
        filled = ndimage.binary_fill_holes(region)
        holes, hole_count = ndimage.label(filled & ~region)
        rings = [traced_ring(filled, top, left)]
        rings += [traced_ring(holes == hole, top, left) for hole in range(1, hole_count + 1)]
        result.append(rings)
    return result if count else []


def traced_ring(region: np.ndarray, top: int, left: int) -> Ring:
    """The one outline of a filled, connected region: marching squares at 0.5 on the zero-padded
    region ('high': diagonal neighbours belong to it, as in ndimage.label above), shifted so
    pixel centres sit at half-integers (module docstring)."""
    # Imported here: skimage's _polygon imports scipy.signal, 0.45 s of every `unetkit predict`'s start-up.
    from skimage.measure import approximate_polygon

    contour = max(find_contours(np.pad(region, 1).astype(np.float32), 0.5, fully_connected="high"), key=len)
    contour = approximate_polygon(contour, tolerance=0)  # collinear points only: the outline is exact
    return np.stack([contour[:, 1] - 1 + 0.5 + left, contour[:, 0] - 1 + 0.5 + top], axis=1)


def qupath_feature(stem: str, row: dict[str, str], rings: list[list[Ring]], instance_model: bool) -> dict:
    """A QuPath detection: its outline, class (name and colour) and the table's measurements."""
    polygons = [[np.round(ring, 2).tolist() for ring in piece] for piece in rings]
    geometry = {"type": "Polygon", "coordinates": polygons[0]}
    if len(polygons) > 1:
        geometry = {"type": "MultiPolygon", "coordinates": polygons}
    if "plane" in row:  # QuPath's ImagePlane: the plane index on Z, or T for a time-lapse
        # A time-lapse's frame k is t=k at z=0: QuPath looked for z-slices that do not exist.
        z = row.get("z", 0 if "t" in row else row["plane"])
        geometry["plane"] = {"c": -1, "z": int(z), "t": int(row.get("t", 0))}
    value = int(row["mask_value"])
    name = "object" if instance_model else f"value {value}"
    measurements = {key: float(row[key]) for key in ("area", "centroid_x", "centroid_y", "mean_probability")}
    # in the outline's frame, pixel centres at half-integers: the table's pixel indices sat each
    # centroid half a pixel up and left of its outline in QuPath (a red-team round)
    measurements["centroid_x"] += 0.5
    measurements["centroid_y"] += 0.5
    key = f"unetkit {stem} {row.get('plane', '')} {row['id']}"
    return {
        "type": "Feature",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, key)),  # the same objects get the same ids again
        "geometry": geometry,
        "properties": {
            "objectType": "detection",
            "name": f"{row['id']}",
            "classification": {"name": name, "color": [int(c) for c in class_colour(int(row["class"]))]},
            "measurements": {"id": float(row["id"]), **measurements},
        },
    }


def imagej_roi(row: dict[str, str], rings: list[list[Ring]]) -> roifile.ImagejRoi:
    """A polygon ROI of the object's largest piece, named by its id; in a stack, at its plane
    (roifile takes positions from 0 and stores them from 1, as ImageJ counts)."""
    outer = rings[0][0][:-1]  # ImageJ closes a polygon itself
    plane = {}
    if "plane" in row:
        plane = {"position": int(row["plane"])}
        plane |= {axis: int(row[axis]) for axis in ("z", "t") if axis in row}
    name = f"{row['id']}" if "plane" not in row else f"{row['plane']}-{row['id']}"
    return roifile.ImagejRoi.frompoints(outer, name=name, **plane)
