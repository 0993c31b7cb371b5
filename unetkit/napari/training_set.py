"""The correct-and-retrain loop's training set: a project folder of images/ and masks/ that the
Train widget's "Add to training set" writes an Image layer and its corrected Labels layer into,
and that training reads like any folder of pairs. A pair is named after the layer; a file there
is replaced only when this folder's record says unetkit wrote it and its content is still what
was written (runtime/ownership.py's rule for a training set), so a user's file of the same name
is never touched: the pair gets another name instead."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import tifffile

from unetkit.errors import UnetkitError
from unetkit.runtime.atomic import atomic_write
from unetkit.runtime.ownership import digest, record_files, recorded_files, replaceable


def pair_name(project: Path, layer_name: str, record: dict[str, str]) -> str:
    """A file stem for the layer: its name made safe, then -2, -3 ... past files that are not
    unetkit's own, unedited ones."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", layer_name).strip("._") or "image"
    for candidate in [stem, *(f"{stem}-{k}" for k in range(2, 1000))]:
        if all(replaceable(project, f"{kind}/{candidate}.tif", record) for kind in ("images", "masks")):
            return candidate
    raise UnetkitError(f"{project}: a thousand pairs named {stem}; choose another project folder")


def add_pair(project: Path, image: np.ndarray, labels: np.ndarray, layer_name: str) -> str:
    """Write `image` and its `labels` (object ids, or class ids) into the project; the pair's name."""
    labels = np.asarray(labels)
    if labels.shape != image.shape[: labels.ndim] or labels.ndim != 2:
        raise UnetkitError(
            f"{layer_name}: the labels are {labels.shape} and the image {image.shape}; add a 2-D image with labels of "
            "its size (one plane of a stack: copy it into a layer of its own first)"
        )
    if not labels.any():
        raise UnetkitError(f"{layer_name}: the labels layer is empty; paint or correct some objects first")
    record = recorded_files(project)
    name = pair_name(project, layer_name, record)
    for folder, array in (("images", np.asarray(image)), ("masks", labels.astype(np.uint16))):
        path = project / folder / f"{name}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda temporary, array=array: tifffile.imwrite(temporary, array))
        record[f"{folder}/{name}.tif"] = digest(path)
    record_files(project, record)
    return name
