"""Objects in masks. A semantic mask's objects are the 4-connected components of each class but
class 0; an instance mask (each object its own id, 0 background: DSB2018 and cellpose data, with
--instance-masks) names them itself and trains as background / object, or background / object /
boundary ("boundary": each object's edge pixels, so that touching objects' interiors never touch).
Used by the border weight map (weight_map.py), the object scores of evaluate, and the cutting of
predicted objects (inference/objects.py), so all three agree on what an object is."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage.measure import label
from skimage.segmentation import find_boundaries

# The mask values (= class ids) an instance mask trains as, per mode, whether or not the masks hold
# each one: objects no thicker than their edge are all boundary and leave no value 1 in the data.
# "centres" adds class 3, each object's centre: its pixels at least CENTRE_DEPTH of the object's
# deepest distance from its edge. The distance to the edge, learnt in four ordered bands (the Deep
# Watershed Transform's discretised energy, Bai & Urtasun 2017, rather than a regressed map), so
# the one softmax head, its loss, tiling and every export stay as they are; seeds are the centres,
# which touching objects never share.
INSTANCE_VALUES = {"objects": (0, 1), "boundary": (0, 1, 2), "centres": (0, 1, 2, 3)}
INSTANCE_MODES = tuple(INSTANCE_VALUES)
INSTANCE_CLASS_NAMES = {"objects": ("background", "object"), "boundary": ("background", "object", "boundary")}
INSTANCE_CLASS_NAMES["centres"] = (*INSTANCE_CLASS_NAMES["boundary"], "centre")
# On dsb2018-dev val, 5 minutes on an AVX2 CPU: AP@0.5 0.549 (objects), 0.675 (boundary), 0.751
# (centres); benchmarks/NOTES.md, issue 21.
DEFAULT_INSTANCE_TARGET = "centres"
CENTRE_DEPTH = 0.5


def true_objects(class_ids: np.ndarray, object_classes: Sequence[int], ignore_id: int | None = None) -> np.ndarray:
    """The objects of a semantic mask: the 4-connected components of each object class, with
    ids unique across classes (ignored pixels are no object)."""
    labels = np.zeros(class_ids.shape, dtype=np.int64)
    for class_id in object_classes:
        components = label(class_ids == class_id, connectivity=1)
        labels[components > 0] = components[components > 0] + labels.max()
    if ignore_id is not None:
        labels[class_ids == ignore_id] = 0
    return labels


def mask_objects(mask: np.ndarray, class_ids: np.ndarray, instances: str | None, object_classes: Sequence[int],
                 ignore_id: int | None = None) -> np.ndarray:  # fmt: skip
    """The objects of one mask as a label image: an instance mask's own ids (relabelled 1..n),
    else the components of `class_ids` (its encoded classes)."""
    if not instances:
        return true_objects(class_ids, object_classes, ignore_id)
    return relabel(instance_labels(np.where(class_ids == ignore_id, 0, mask) if ignore_id is not None else mask))


def few_ids(array: np.ndarray) -> bool:
    """Whether an array's values are non-negative integers no larger than a few times its size (or
    uint16's range), so a bincount of them costs no more than the array: counted, not sorted."""
    integers = array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer)
    return bool(array.size and integers and int(array.min()) >= 0 and int(array.max()) <= 4 * array.size + 65536)


def value_counts(array: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """np.unique(array, return_counts=True) (the values in the array's dtype), and with `weights`
    the sum of each value's weights: by one bincount where the ids are few (few_ids), as masks' are,
    instead of sorting every pixel (an hc18-dev mask: 10 -> 1 ms)."""
    flat = array.reshape(-1)
    if not few_ids(flat):
        values, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
        summed = () if weights is None else (np.bincount(inverse.reshape(-1), weights=weights.reshape(-1)),)
        return values, counts, *summed
    codes = flat.astype(np.intp, copy=False)
    counts = np.bincount(codes)
    values = np.flatnonzero(counts)
    summed = () if weights is None else (np.bincount(codes, weights=weights.reshape(-1))[values],)
    return values.astype(array.dtype), counts[values], *summed


def relabel(objects: np.ndarray) -> np.ndarray:
    """Ids 1..n (0 stays 0), none skipped, in the order of the original ids."""
    if objects.size and not few_ids(objects):  # ids far apart (a user's mask): sort them
        ids, inverse = np.unique(objects, return_inverse=True)
        return (inverse.reshape(objects.shape) + (0 if ids[0] == 0 else 1)).astype(np.int64)
    # A lookup table of the ids present: linear in the pixels. On a 4096^2 image of 3,120 objects
    # it took 0.14-0.27 s where sorting the pixels (np.unique) took 3.9-4.3 s (issue 36).
    ids = objects.astype(np.intp, copy=False)
    present = np.bincount(ids.ravel(), minlength=1) > 0
    present[0] = False
    table = np.zeros(len(present), dtype=np.int64)
    table[present] = np.arange(1, int(present.sum()) + 1)
    return table[ids]


def instance_labels(labels: np.ndarray) -> np.ndarray:
    """An instance mask's objects: its own ids; but a mask of a single id (0/255 masks given as
    instances) holds its objects as that id's 4-connected components. Read as one object, a
    dsb2018-dev 0/255 mask of 23 nuclei was one true object, and an instance model's AP 0.000
    against it (a red-team round)."""
    ids = np.flatnonzero(np.bincount(labels.ravel())) if few_ids(labels) else np.unique(labels)
    ids = ids[ids != 0]
    if len(ids) != 1:
        return labels
    return label(labels == ids[0], connectivity=1)


def instance_classes(labels: np.ndarray, mode: str, ignore_value: int | None = None) -> np.ndarray:
    """An instance label image -> semantic values: 0 background, 1 object, and with mode
    "boundary" 2 for the pixels of an object on its edge (scikit-image's inner boundaries), with
    "centres" also 3 for its centre (object_centres).
    Pixels at `ignore_value` keep it."""
    ignored = None if ignore_value is None else labels == ignore_value
    objects = labels if ignored is None else np.where(ignored, 0, labels)
    if (split := instance_labels(objects)) is not objects:  # one id: its components are the objects
        labels = split
    values = (labels > 0).astype(np.int64)
    if mode in ("boundary", "centres"):
        values[find_boundaries(labels, connectivity=1, mode="inner") & (labels > 0)] = 2
    if mode == "centres":
        values[object_centres(labels) & (values == 1)] = 3  # an edge pixel stays edge
    if ignored is not None:
        values[ignored] = ignore_value
    return values


def object_centres(labels: np.ndarray) -> np.ndarray:
    """The pixels of each object whose distance to the nearest pixel outside it (background or
    another object) is at least CENTRE_DEPTH of the object's largest such distance."""
    labels = relabel(labels)  # ids 1..n, so find_objects' list is as long as the objects
    centres = np.zeros(labels.shape, dtype=bool)
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        own = np.pad(labels[box] == index, 1)  # padded, so the image's edge counts as outside
        depth = ndimage.distance_transform_edt(own)[1:-1, 1:-1]
        centres[box] |= depth >= CENTRE_DEPTH * depth.max()
    return centres & (labels > 0)
