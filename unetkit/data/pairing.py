"""Matching image files to mask files by file stem."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unetkit.data.io import IMAGE_EXTENSIONS, read_pair, read_pair_scaled
from unetkit.data.tiff_axes import FILE_AXES, AxisChoice, count_planes, stack_layout, unnamed_pages_hint
from unetkit.errors import UnetkitError

# Tried in order when no suffix is given: Carvana names its masks "<stem>_mask.gif", others "_label".
COMMON_MASK_SUFFIXES = ("", "_mask", "_masks", "_label", "_labels", "_gt", "_seg", "-mask", "-label")


@dataclass(frozen=True)
class Pair:
    image: Path
    mask: Path
    plane: int | None = None  # one plane of an image stack and its mask stack; None: 2-D files
    axes: AxisChoice = FILE_AXES  # --channel-axis / --plane-axis

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """(image, mask), read and checked (read_pair)."""
        return read_pair(self.image, self.mask, self.plane, self.axes)

    def read_scaled(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(image, mask, the image's raw value of 1.0: 255 for 8-bit), read and checked (read_pair_scaled)."""
        return read_pair_scaled(self.image, self.mask, self.plane, self.axes)

    @property
    def name(self) -> str:
        return self.image.stem

    @property
    def label(self) -> str:
        """The image's file name, and its plane for a stack: how reports and scores name it."""
        return self.image.name if self.plane is None else f"{self.image.name} plane {self.plane}"


def file_names(pairs: Sequence[Pair]) -> list[str]:
    """The image file names of `pairs`, once each (a stack's planes share one): how a run's split is kept."""
    return list(dict.fromkeys(pair.image.name for pair in pairs))


def expand_planes(pairs: Sequence[Pair], axes: AxisChoice = FILE_AXES) -> list[Pair]:
    """Each stack pair (tiff_axes.py, its axes read by `axes`) as one pair per plane, in order;
    2-D pairs as they are. A mask stack must have its image's planes."""
    expanded: list[Pair] = []
    for pair in pairs:
        layout, mask_planes = stack_layout(pair.image, axes), count_planes(pair.mask, axes.for_masks)
        planes = layout.planes if layout else 1
        if planes != mask_planes:
            hint = unnamed_pages_hint(layout, mask_planes) if layout else ""
            raise UnetkitError(
                f"{pair.mask}: the mask has {mask_planes} plane(s) but its image {pair.image.name} has {planes}; "
                f"a stack's mask is a stack of the same planes (one 2-D mask per image plane){hint}"
            )
        chosen = [None] if planes == 1 else range(planes)
        expanded += [Pair(pair.image, pair.mask, plane, axes) for plane in chosen]
    return expanded


def list_images(folder: str | Path, what: str = "images") -> list[Path]:
    """Image files directly inside a folder, sorted by name; an error if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UnetkitError(f"{folder}: {what} folder not found; check the path")
    named = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    for path in named:
        if path.is_symlink() and not path.exists():  # else it would be "missing", and its mask "without image"
            raise UnetkitError(
                f"{path}: a symbolic link to {os.readlink(path)}, which does not exist; fix or remove the link"
            )
    files = [p for p in named if p.is_file()]
    if not files:
        raise UnetkitError(
            f"{folder}: no {what} found (looked for {', '.join(IMAGE_EXTENSIONS)}); "
            "point to the folder that holds the files"
        )
    return files


def _by_stem(files: list[Path], folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in files:
        if path.stem in found:
            raise UnetkitError(
                f"{folder}: {found[path.stem].name} and {path.name} have the same name; "
                "keep one of them so each image pairs with exactly one mask"
            )
        found[path.stem] = path
    return found


def describe_names(names: list[str], limit: int = 3) -> str:
    """The first few names and how many more, for one-line messages."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@dataclass
class Matching:
    """The outcome of pairing two folders, kept whole so `unetkit check` can report every problem."""

    pairs: list[Pair]
    suffix: str
    images_without_masks: list[str]
    masks_without_images: list[str]


def match_folders(images_dir: Path, masks_dir: Path, mask_suffix: str | None = None) -> Matching:
    """Pair images and masks by stem (plus `mask_suffix`, the best-matching common suffix if not given)."""
    if Path(images_dir).resolve() == Path(masks_dir).resolve():
        return _match_in_one_folder(Path(images_dir), mask_suffix)
    images = _by_stem(list_images(images_dir, "images"), images_dir)
    masks = _by_stem(list_images(masks_dir, "masks"), masks_dir)
    suffixes = COMMON_MASK_SUFFIXES if mask_suffix is None else (mask_suffix,)
    suffix = max(suffixes, key=lambda s: sum(stem + s in masks for stem in images))  # first wins ties
    return _matching(images, masks, suffix)


def _matching(images: dict[str, Path], masks: dict[str, Path], suffix: str) -> Matching:
    mask_stems = {stem + suffix for stem in images}
    return Matching(
        pairs=[Pair(images[stem], masks[stem + suffix]) for stem in sorted(images) if stem + suffix in masks],
        suffix=suffix,
        images_without_masks=[images[stem].name for stem in sorted(images) if stem + suffix not in masks],
        masks_without_images=[masks[stem].name for stem in sorted(masks) if stem not in mask_stems],
    )


def _match_in_one_folder(folder: Path, mask_suffix: str | None) -> Matching:
    """Masks beside their images (`<stem>_mask.png` next to `<stem>.png`): the suffix splits the
    folder's files into masks and images; without one, the folders cannot be told apart."""
    files = _by_stem(list_images(folder, "images"), folder)
    suffixes = [s for s in (COMMON_MASK_SUFFIXES if mask_suffix is None else (mask_suffix,)) if s]

    def split(suffix: str) -> tuple[dict[str, Path], dict[str, Path]]:
        masks = {stem: path for stem, path in files.items() if stem.endswith(suffix)}
        return {stem: path for stem, path in files.items() if stem not in masks}, masks

    splits = {suffix: split(suffix) for suffix in suffixes}
    best = max(suffixes, key=lambda s: sum(stem + s in splits[s][1] for stem in splits[s][0]), default="")
    images, masks = splits[best] if best else (files, {})
    if not best or not any(stem + best in masks for stem in images):
        raise UnetkitError(
            f"{folder}: --images and --masks are the same folder, and no file in it is named like a mask "
            f"of another (e.g. <name>_mask.png beside <name>.png); put the masks in their own folder, "
            "or name the mask suffix with --mask-suffix"
        )
    return _matching(images, masks, best)


def find_pairs(images_dir: str | Path, masks_dir: str | Path, mask_suffix: str | None = None) -> list[Pair]:
    """Pair every image with its mask; any image or mask left over is an error naming it."""
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    matching = match_folders(images_dir, masks_dir, mask_suffix)
    hint = f" (mask names are '<image name>{matching.suffix}')" if matching.suffix else ""
    if matching.images_without_masks:
        missing = matching.images_without_masks
        raise UnetkitError(
            f"{images_dir}: {len(missing)} image(s) have no mask in {masks_dir}{hint}: "
            f"{describe_names(missing)}; add their masks, remove them, or set --mask-suffix"
        )
    if matching.masks_without_images:
        orphans = matching.masks_without_images
        raise UnetkitError(
            f"{masks_dir}: {len(orphans)} mask(s) have no image in {images_dir}{hint}: "
            f"{describe_names(orphans)}; add their images or remove them"
        )
    return matching.pairs
