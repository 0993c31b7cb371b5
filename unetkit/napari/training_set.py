"""The correct-and-retrain loop's training set: a project folder of images/ and masks/ that the
Correct widget's "Add to training set" (and the Train widget, for its layers) writes an Image
layer and its corrected Labels layer into, and that training reads like any folder of pairs. The
folder holds only what it wrote (a folder of the user's own files is refused). A pair is named
after the layer; a file there is replaced only when this folder's record says unetkit wrote it,
its content is still what was written (runtime/ownership.py's rule for a training set) and the
new pair is of the same image; else the pair gets another name."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import tifffile

from unetkit.errors import UnetkitError
from unetkit.runtime.atomic import atomic_write
from unetkit.runtime.ownership import TRAINING_SET_RECORD, digest, record_files, recorded_files, replaceable


def pair_name(project: Path, layer_name: str, record: dict[str, str], image: np.ndarray) -> str:
    """A file stem for the layer: its name made safe, then -2, -3 ... past files that are not
    unetkit's own, unedited ones, and past another image's pair: a correction of the same image
    replaces its last one, but "cell 1" and "cell/1" (both cell_1), or two viewers' "Image 1",
    replaced each other's pair (a red-team round)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", layer_name).strip("._") or "image"
    for candidate in [stem, *(f"{stem}-{k}" for k in range(2, 1000))]:
        if not all(replaceable(project, f"{kind}/{candidate}.tif", record) for kind in ("images", "masks")):
            continue
        written = project / "images" / f"{candidate}.tif"
        if not written.is_file() or np.array_equal(tifffile.imread(written), image):
            return candidate
    raise UnetkitError(f"{project}: a thousand pairs named {stem}; choose another project folder")


def project_folder(text: str) -> tuple[Path, dict[str, str]]:
    """The project folder a widget's field names, and its record, or one line why it cannot be: an
    empty field (it meant the working folder), a file, or a folder of pairs unetkit did not write.
    A user's data folder chosen as the project got corrections written beside its own files, so
    training refused the same names twice, and a run folder inside it (a red-team round)."""
    if not text.strip():
        raise UnetkitError("choose a project folder for the training set: a new or empty folder, or one it made")
    project = Path(text.strip()).expanduser().absolute()
    record = recorded_files(project)
    for folder in (project, project / "images", project / "masks"):
        if folder.exists() and not folder.is_dir():
            raise UnetkitError(f"{folder}: is a file, not a folder; choose another project folder")
        foreign = foreign_files(project, folder, record) if folder.is_dir() else []
        if foreign:
            raise UnetkitError(
                f"{folder / foreign[0]}: the project folder holds files that Add to training set did not write; "
                "choose a new or empty project folder (your files stay as they are)"
            )
    return project, record


def foreign_files(project: Path, folder: Path, record: dict[str, str]) -> list[str]:
    """The names in `folder` (the project or its images/ or masks/) that the training set did not
    write: at the top only its record and the folders it makes belong, below only recorded files.
    Hidden files (a Finder's .DS_Store) are no one's data and are passed over."""
    if folder == project:
        own = {TRAINING_SET_RECORD, "images", "masks", "runs"}
        return sorted(p.name for p in folder.iterdir() if p.name not in own and not p.name.startswith("."))
    kind = folder.name
    return sorted(p.name for p in folder.iterdir() if f"{kind}/{p.name}" not in record and not p.name.startswith("."))


def add_pair(project: Path, image: np.ndarray, labels: np.ndarray, layer_name: str) -> str:
    """Write `image` and its `labels` (object ids, or class ids) into the project; the pair's name.
    A (C, y, x) image (a layer of a multi-channel model's channels, as Predict reads it) is written
    channels last with its axes named, so training reads its channels as channels."""
    project, record = project_folder(str(project))
    labels, image = np.asarray(labels), np.asarray(image)
    channels_first = image.ndim == 3 and labels.ndim == 2 and image.shape[1:] == labels.shape != image.shape[:2]
    if channels_first:
        image = np.moveaxis(image, 0, -1)
    if labels.ndim != 2 and labels.shape == image.shape[: labels.ndim]:
        raise UnetkitError(
            f"{layer_name}: a stack of {labels.shape[0]} planes; a training pair is one 2-D image: add the plane "
            "shown (the Correct widget does) or copy it, and its labels, into layers of their own"
        )
    if labels.shape != image.shape[: labels.ndim] or labels.ndim != 2:
        raise UnetkitError(
            f"{layer_name}: the labels are {labels.shape} and the image {image.shape}; add a 2-D image with labels of "
            "its size"
        )
    if not labels.any():
        raise UnetkitError(f"{layer_name}: the labels layer is empty; paint or correct some objects first")
    name = pair_name(project, layer_name, record, image)
    axes = {"metadata": {"axes": "YXC"}} if channels_first else {}  # else a (y, x, 2) array reads as pages
    for folder, array, named in (("images", image, axes), ("masks", mask_of(labels, layer_name), {})):
        path = project / folder / f"{name}.tif"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # a file on the way (NotADirectoryError), no permission
            raise UnetkitError(f"{path.parent}: {err.strerror}; choose another project folder") from None
        atomic_write(path, lambda temporary, array=array, named=named: tifffile.imwrite(temporary, array, **named))
        record[f"{folder}/{name}.tif"] = digest(path)
    record_files(project, record)
    return name


def pairs_in(project: Path) -> list:
    """The project's pairs as training finds them (data.find_pairs: hidden files are none)."""
    from unetkit.data import find_pairs

    images, masks = project / "images", project / "masks"
    try:
        return find_pairs(images, masks) if images.is_dir() and masks.is_dir() else []
    except UnetkitError:  # an unpaired file: the training run says which, in its own words
        return []


def mask_of(labels: np.ndarray, layer_name: str) -> np.ndarray:
    """The labels as a uint16 mask, whose 65,535 ids a mask file holds; a negative id, or one past
    that, is refused (uint16 made id 65,536 background and -1 id 65,535, unsaid: a red-team round)."""
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high > np.iinfo(np.uint16).max:
        bad = low if low < 0 else high
        raise UnetkitError(
            f"{layer_name}: the labels hold id {bad}, and a mask holds ids 0 to 65535; renumber them from 1 "
            "(e.g. skimage.segmentation.relabel_sequential)"
        )
    return labels.astype(np.uint16)
