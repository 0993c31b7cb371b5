"""From class probabilities to objects: a label image with one id per object, and a table of
the objects (area, centroid, bounding box, mean probability).

A pixel map answers "which pixels"; people who count cells ask "which objects". Thresholding
alone merges touching objects wherever one pixel of the gap between them is missed, so each
object class is split by seeded watershed (the field's answer on top of U-Net's border
weights): cores are the pixels the model is surest of (probability above `seed`), and each
core floods the pixels above `flood` downhill in probability, so two cores meet in the
low-probability gap between touching objects. Foreground without a core stays one object.
Objects smaller than `min_size` pixels go, holes up to `max_hole` pixels are filled. The
probabilities are smoothed first (`smooth`), so that one object's ragged core is one seed.

The rule's numbers are chosen on a run's validation images at the end of training (see
unetkit/runs/object_rule.py) and kept in the checkpoint. Runs on the whole stitched
probability map, so objects across tile borders stay whole.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage
from skimage.measure import label, regionprops_table
from skimage.morphology import remove_small_holes
from skimage.segmentation import watershed

from unetkit.data.mask_values import MaskValues
from unetkit.data.objects import relabel
from unetkit.models.spec import ObjectRule  # kept in checkpoints, so checked with their other keys
from unetkit.runtime.atomic import atomic_write

# Objects are scored, and their rule chosen, for models of at most this many classes: a street
# scene's dozen classes are regions, not things a person counts (runs/object_rule.py, evaluate).
MAX_OBJECT_CLASSES = 4


def split_objects(
    probabilities: np.ndarray,
    rule: ObjectRule,
    object_classes: Sequence[int] | None = None,
    instances: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(K, H, W) class probabilities -> (H, W) uint32 label image (0: no object) and, for each
    label id, its class (index 0 unused). `object_classes`: default every class but 0.
    `instances`: the mode of a model trained on instance masks (data/objects.py), whose one
    object class is 1 (instance_landscape)."""
    if instances:
        core, extent, region = instance_landscape(probabilities, rule, instances)
        objects = split_region(core, extent, region, rule)
        return objects.astype(np.uint32), np.array([0] + [1] * int(objects.max()), dtype=np.int64)
    labels = np.zeros(probabilities.shape[1:], dtype=np.uint32)
    classes = [0]
    object_classes = list(object_classes or range(1, len(probabilities)))
    winner = probabilities.argmax(axis=0) if len(probabilities) > 2 else None
    # A class's holes are filled over pixels no object class won: filled over another class's
    # object, they took it, and its id was left with no pixels (red-team finding on CamVid).
    fillable = None if winner is None else ~np.isin(winner, object_classes)
    for class_id in object_classes:
        core = smoothed(probabilities[class_id], rule)
        region = core > rule.flood if winner is None else winner == class_id
        objects = split_region(core, core, region, rule, fillable)
        count = int(objects.max())
        labels[objects > 0] = objects[objects > 0] + len(classes) - 1
        classes += [class_id] * count
    return labels, np.array(classes, dtype=np.int64)


def instance_landscape(probabilities: np.ndarray, rule: ObjectRule, mode: str) -> tuple[np.ndarray, ...]:
    """(core, extent, region) of an instance model's probabilities: seeds where `core` is above
    the seed threshold flood down `extent` over `region`, the pixels whose object probability
    (anything but background) is above the flood threshold. "objects": core and extent are the
    object class; "boundary": cores are the object class, which touching objects' interiors never
    share; "centres": cores are the centre class, and flooding goes down the object's depth
    (centre, then object, then boundary)."""
    p = [smoothed(plane, rule) for plane in probabilities]
    foreground = 1 - p[0]
    if mode == "centres":
        return p[3], p[3] + 0.5 * p[1], foreground > rule.flood
    return p[1], foreground, foreground > rule.flood


def smoothed(plane: np.ndarray, rule: ObjectRule) -> np.ndarray:
    """A probability plane smoothed by the rule's Gaussian sigma, so one object's ragged core is
    one seed."""
    return ndimage.gaussian_filter(plane, rule.smooth) if rule.smooth else plane


def split_region(
    core: np.ndarray, extent: np.ndarray, region: np.ndarray, rule: ObjectRule, fillable: np.ndarray | None = None
) -> np.ndarray:
    """Seeded watershed of one class's region: cores where `core` is above the seed threshold,
    flooding down `extent`; consecutive ids from 1. A connected part of the region without a core
    is one object. Holes are filled where `fillable` (default: anywhere)."""
    if rule.max_hole > 0:
        filled = remove_small_holes(region, max_size=rule.max_hole)
        region = filled if fillable is None else region | (filled & fillable)
    seeds = label(region & (core > rule.seed), connectivity=1)
    parts, count = label(region, connectivity=1, return_num=True)
    objects = whole_parts(seeds, parts, count)
    # Flooding stays inside a part, so a part with one core is that core's object whole, and only
    # parts with several cores need the watershed: the same labels as one watershed of the whole
    # region. On a 4096^2 EM mosaic 543 of 4,722 parts held several cores (64% of the pixels): the
    # watershed took 10.4 s instead of 19.0, and 2.9 s started from the cores' edges (flood), the
    # labels identical (benchmarks/NOTES.md, issue 36).
    shared = np.bincount(part_of_each_seed(seeds, parts), minlength=count + 1) > 1
    shared[0] = False
    if shared.any():
        where = shared[parts]
        objects[where] = flood(seeds, extent, where)[where]
    if rule.min_size > 1:  # what scikit-image's remove_small_objects does to labels, without its warning
        # of a lone label: silencing that is not thread-safe, and object_rule.py scores rules in threads
        objects[(np.bincount(objects.ravel()) < rule.min_size)[objects]] = 0
    return relabel(objects)


def flood(seeds: np.ndarray, extent: np.ndarray, where: np.ndarray) -> np.ndarray:
    """scikit-image's seeded watershed of `where`, down `extent`, started from the cores' edges: a
    core's inner pixels (its four neighbours in the same core) are its own and flood nothing, so they
    stay out of the watershed's queue, with the same labels (55% of the region's pixels on EM)."""
    inner = inner_pixels(seeds)
    outer = where & ~inner
    flooded = watershed(-extent, np.where(outer, seeds, 0), mask=outer)
    flooded[inner] = seeds[inner]
    return flooded


def inner_pixels(seeds: np.ndarray) -> np.ndarray:
    """The pixels of a core whose four neighbours (those inside the image) are of the same core."""
    inner = seeds > 0
    inner[1:] &= seeds[1:] == seeds[:-1]
    inner[:-1] &= seeds[:-1] == seeds[1:]
    inner[:, 1:] &= seeds[:, 1:] == seeds[:, :-1]
    inner[:, :-1] &= seeds[:, :-1] == seeds[:, 1:]
    return inner


def part_of_each_seed(seeds: np.ndarray, parts: np.ndarray) -> np.ndarray:
    """The part (connected piece of the region) each seed id lies in; seeds lie inside the region."""
    inside = seeds > 0
    part = np.zeros(int(seeds.max(initial=0)) + 1, dtype=np.int64)
    part[seeds[inside]] = parts[inside]
    return part[1:]


def whole_parts(seeds: np.ndarray, parts: np.ndarray, count: int) -> np.ndarray:
    """Each part as one object: its core's id where it has one (ids 1..cores), else a new id after
    the cores' (in the part's order); 0 outside the region."""
    number = int(seeds.max(initial=0))
    ids = np.arange(count + 1, dtype=np.int64) + number  # a part without a core: its own id, after the cores
    ids[0] = 0
    ids[part_of_each_seed(seeds, parts)] = np.arange(1, number + 1)  # parts of several cores: the watershed's
    return ids[parts]


def object_table(
    labels: np.ndarray, classes: np.ndarray, probabilities: np.ndarray, instances: bool = False
) -> dict[str, np.ndarray]:
    """One row per object: id, class, area, centroid, bounding box and the mean probability of
    its class over its pixels (scikit-image's regionprops_table). An instance model's object is
    every class but background (its boundary and centre too), so its probability is 1 - P(background):
    the object class's alone read 0.39 for the median dsb2018 nucleus, where the model gave 0.95."""
    if instances:
        own_probability = 1 - probabilities[0]
    else:
        own_probability = np.take_along_axis(probabilities, classes[labels][None], axis=0)[0]
    table = regionprops_table(
        labels, intensity_image=own_probability, properties=("label", "area", "centroid", "bbox", "intensity_mean")
    )
    names = {"label": "id", "centroid-0": "centroid_y", "centroid-1": "centroid_x", "bbox-0": "bbox_min_y"}
    names.update({"bbox-1": "bbox_min_x", "bbox-2": "bbox_max_y", "bbox-3": "bbox_max_x"})
    names["intensity_mean"] = "mean_probability"
    rows = {names.get(key, key): value for key, value in table.items()}
    rows["area"] = rows["area"].astype(np.int64)
    return {"id": rows.pop("id"), "class": classes[table["label"]], **rows}


def save_labels(path: Path, labels: np.ndarray) -> None:
    """A label image as TIFF (label_dtype)."""
    atomic_write(
        path, lambda temporary: tifffile.imwrite(temporary, labels.astype(label_dtype(labels)), compression="zlib")
    )


def label_dtype(labels: np.ndarray) -> type:
    """uint16 while the ids fit, else uint32."""
    return np.uint16 if labels.max(initial=0) < 2**16 else np.uint32


def save_table(path: Path, table: dict[str, np.ndarray], class_values: list[int]) -> None:
    """The object table as CSV, with each object's class as the user's mask value."""

    def write(temporary: Path) -> None:
        with open(temporary, "w", newline="") as handle:
            csv.writer(handle).writerows(table_rows(table, class_values))

    atomic_write(path, write)


def table_rows(table: dict[str, np.ndarray], class_values: list[int]) -> list[list]:
    """The CSV's header and rows: object_table's columns, the class's mask value after the class."""
    table = with_mask_values(table, class_values)
    rows = [list(table)]
    for row in zip(*table.values(), strict=True):
        rows.append([round(float(v), 4) if isinstance(v, float | np.floating) else int(v) for v in row])
    return rows


def with_mask_values(table: dict[str, np.ndarray], class_values: list[int]) -> dict[str, np.ndarray]:
    """object_table's columns with each object's mask value after its class (the CSV's, napari's features)."""
    columns = list(table)
    values = {"mask_value": np.asarray(class_values, dtype=np.int64)[np.asarray(table["class"], dtype=np.int64)]}
    return {**{c: table[c] for c in columns[:2]}, **values, **{c: table[c] for c in columns[2:]}}


def object_classes_note(mask_values: MaskValues) -> str | None:
    """What a model of several classes cuts objects of (predict --instances, napari's objects):
    each class but the first value, taken as the background. Unsaid, a street model gave no sky
    objects (CamVid's 0 is the sky; a red-team round). None for binary and instance models."""
    if mask_values.instances is not None or mask_values.num_classes <= 2:
        return None
    cut = ", ".join(str(value) for value in mask_values.values[1:])
    return f"objects are cut of the values {cut}; value {mask_values.values[0]} is the background (no objects)"
