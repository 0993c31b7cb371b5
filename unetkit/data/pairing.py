"""Matching image files to mask files by file stem."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from unetkit.data.io import IMAGE_EXTENSIONS
from unetkit.errors import UnetkitError

# Tried in order when no suffix is given: Carvana names its masks "<stem>_mask.gif", others "_label".
COMMON_MASK_SUFFIXES = ("", "_mask", "_masks", "_label", "_labels", "_gt", "_seg", "-mask", "-label")


@dataclass(frozen=True)
class Pair:
    image: Path
    mask: Path

    @property
    def name(self) -> str:
        return self.image.stem


def list_images(folder: str | Path, what: str = "images") -> list[Path]:
    """Image files directly inside a folder, sorted by name; an error if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UnetkitError(f"{folder}: {what} folder not found; check the path")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
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


def _describe(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def find_pairs(images_dir: str | Path, masks_dir: str | Path, mask_suffix: str | None = None) -> list[Pair]:
    """Pair every image with the mask of the same stem (plus `mask_suffix`, found if not given)."""
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    images = _by_stem(list_images(images_dir, "images"), images_dir)
    masks = _by_stem(list_images(masks_dir, "masks"), masks_dir)

    suffixes = COMMON_MASK_SUFFIXES if mask_suffix is None else (mask_suffix,)
    best_suffix, best_hits = suffixes[0], -1
    for suffix in suffixes:
        hits = sum(stem + suffix in masks for stem in images)
        if hits > best_hits:
            best_suffix, best_hits = suffix, hits
    suffix = best_suffix

    unmatched_images = [images[s].name for s in images if s + suffix not in masks]
    mask_stems = {s + suffix for s in images}
    unmatched_masks = [masks[s].name for s in masks if s not in mask_stems]
    hint = f" (mask names are '<image name>{suffix}')" if suffix else ""
    if unmatched_images:
        raise UnetkitError(
            f"{images_dir}: {len(unmatched_images)} image(s) have no mask in {masks_dir}{hint}: "
            f"{_describe(unmatched_images)}; add their masks, remove them, or set --mask-suffix"
        )
    if unmatched_masks:
        raise UnetkitError(
            f"{masks_dir}: {len(unmatched_masks)} mask(s) have no image in {images_dir}{hint}: "
            f"{_describe(unmatched_masks)}; add their images or remove them"
        )
    return [Pair(images[stem], masks[stem + suffix]) for stem in sorted(images)]
