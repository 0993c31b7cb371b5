"""The objects of a semantic mask: which classes hold objects, and each object as its own id.
Used by the border weight map (weight_map.py), the object scores of evaluate, and the cutting of
predicted objects (inference/instances.py), so all three agree on what an object is."""

from __future__ import annotations

import numpy as np
from skimage.measure import label


def object_classes(num_classes: int) -> list[int]:
    """The classes whose connected regions are objects: all but class 0 (the background, or a
    binary model's negative class)."""
    return list(range(1, max(num_classes, 2)))


def true_objects(class_ids: np.ndarray, num_classes: int, ignore_id: int | None = None) -> np.ndarray:
    """The objects of a semantic mask: the 4-connected components of each object class, with
    ids unique across classes (ignored pixels are no object)."""
    labels = np.zeros(class_ids.shape, dtype=np.int64)
    for class_id in object_classes(num_classes):
        components = label(class_ids == class_id, connectivity=1)
        labels[components > 0] = components[components > 0] + labels.max()
    if ignore_id is not None:
        labels[class_ids == ignore_id] = 0
    return labels
