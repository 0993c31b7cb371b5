"""Objects in masks. A semantic mask's objects are the 4-connected components of each class but
class 0; an instance mask (each object its own id, 0 background: DSB2018 and cellpose data, with
--instance-masks) names them itself and trains as background / object, or background / object /
boundary ("boundary": each object's edge pixels, so that touching objects' interiors never touch).
Used by the border weight map (weight_map.py), the object scores of evaluate, and the cutting of
predicted objects (inference/instances.py), so all three agree on what an object is."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from skimage.measure import label
from skimage.segmentation import find_boundaries

# The mask values (= class ids) an instance mask trains as, per mode, whether or not the masks hold
# each one: objects no thicker than their edge are all boundary and leave no value 1 in the data.
INSTANCE_VALUES = {"objects": (0, 1), "boundary": (0, 1, 2)}
INSTANCE_MODES = tuple(INSTANCE_VALUES)


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
    return relabel(np.where(class_ids == ignore_id, 0, mask) if ignore_id is not None else mask)


def relabel(objects: np.ndarray) -> np.ndarray:
    """Ids 1..n (0 stays 0), none skipped, in the order of the original ids."""
    ids, inverse = np.unique(objects, return_inverse=True)
    return (inverse.reshape(objects.shape) + (0 if ids[0] == 0 else 1)).astype(np.int64)


def instance_classes(labels: np.ndarray, mode: str, ignore_value: int | None = None) -> np.ndarray:
    """An instance label image -> semantic values: 0 background, 1 object, and with mode
    "boundary" 2 for the pixels of an object on its edge (scikit-image's inner boundaries).
    Pixels at `ignore_value` keep it."""
    values = (labels > 0).astype(np.int64)
    if mode == "boundary":
        values[find_boundaries(labels, connectivity=1, mode="inner") & (labels > 0)] = 2
    if ignore_value is not None:
        values[labels == ignore_value] = ignore_value
    return values
