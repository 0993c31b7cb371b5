"""The U-Net paper's weight map (Ronneberger et al. 2015, section 3): the thin gaps between
touching objects count most in the loss, so the network learns to keep them open.

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

w_c balances the classes (the loss's class weights), d1 and d2 are the distances to the nearest
and second-nearest object; the paper uses w0 = 10, sigma = 5 px. This module computes the second
term (the loss adds w_c). Each object's distances are computed in a window around it (scipy's
exact Euclidean distance transform): beyond 4 sigma from an object the term is below
w0 * exp(-8), so farther pixels are left at 0 and the cost grows with the objects, not the image.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage


def border_weights(objects: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """(H, W) float32 border term for a label image of objects (0: none, each object its id)."""
    margin = math.ceil(4 * sigma)
    nearest = np.full(objects.shape, np.inf)
    second = np.full(objects.shape, np.inf)
    for index, box in enumerate(ndimage.find_objects(objects), start=1):
        if box is None:
            continue
        window = tuple(
            slice(max(0, part.start - margin), min(size, part.stop + margin))
            for part, size in zip(box, objects.shape, strict=True)
        )
        distance = ndimage.distance_transform_edt(objects[window] != index)
        second[window] = np.minimum(second[window], np.maximum(nearest[window], distance))
        nearest[window] = np.minimum(nearest[window], distance)
    gap = nearest + second  # inf where fewer than two objects are near: exp(-inf) = 0
    return (w0 * np.exp(-(gap**2) / (2 * sigma**2))).astype(np.float32)
