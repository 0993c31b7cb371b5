"""Whole-slide prediction out of core: a large TIFF is read a band of tile rows at a time
(tifffile's zarr store decodes only the tiles or strips asked for), its overlapping tiles run
and blend exactly as in tiling.py, and the mask is written a tile row at a time into a tiled
BigTIFF. Neither the image, nor the logits, nor the mask is ever whole in memory: the peak is a
band of tile height x image width (image, logits and weights) plus the model.

Rows of the blended logits are final once no later tile row reaches them (below the next tile
row's top), so each band is normalised, classified and written, then dropped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from unetkit.core.atomic import atomic_write
from unetkit.errors import UnetkitError
from unetkit.inference.tiling import gaussian_window, tile_starts, with_tta
from unetkit.metrics import predicted_classes

LARGE_PIXELS = 64 * 2**20  # "auto" predicts TIFFs above this many pixels out of core (a 8192^2 image)
OUTPUT_TILE = 256  # the written mask's TIFF tiles
TIFF_SUFFIXES = (".tif", ".tiff")


def tiff_shape(path: Path) -> tuple[int, ...] | None:
    """The first series' shape of a TIFF file (no pixels read), or None for other files."""
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            return tuple(tiff.series[0].shape)
    except Exception:  # unreadable here: the in-memory reader names the problem
        return None


def out_of_core(path: Path, mode: str) -> bool:
    """Whether `path` is predicted out of core: mode "on" (any TIFF), "auto" (large TIFFs) or "off"."""
    if mode == "off":
        return False
    shape = tiff_shape(path)
    if shape is None:
        if mode == "on" and path.suffix.lower() not in TIFF_SUFFIXES:
            raise UnetkitError(f"{path}: --out-of-core on reads TIFF files only; convert it or use --out-of-core auto")
        return False
    return mode == "on" or shape[0] * shape[1] > LARGE_PIXELS


def open_pixels(path: Path):
    """A lazily decoded (H, W[, C]) array of the first series, and the value that maps to 1.0."""
    import tifffile
    import zarr

    pixels = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    if pixels.ndim == 3 and pixels.shape[2] not in (1, 2, 3, 4) or pixels.ndim not in (2, 3):
        raise UnetkitError(
            f"{path}: out-of-core prediction reads (height, width[, channels]) TIFFs; this one is "
            f"{tuple(pixels.shape)}; save it as one 2-D image (channels last)"
        )
    if np.issubdtype(pixels.dtype, np.integer):
        return pixels, float(np.iinfo(pixels.dtype).max) if pixels.dtype.itemsize <= 2 else 65535.0
    return pixels, 1.0


def band_image(pixels, top: int, bottom: int, maximum: float) -> np.ndarray:
    """Rows [top, bottom) as float32 (h, W, C) in [0, 1], alpha dropped, like read_image."""
    band = np.asarray(pixels[top:bottom])
    band = band[:, :, None] if band.ndim == 2 else band
    if band.shape[2] in (2, 4):
        band = band[:, :, :-1]
    image = band.astype(np.float32)
    image /= maximum
    return image


def mask_rows(predictor, path: Path, threshold: float, progress: bool) -> Iterator[np.ndarray]:
    """The mask, in the user's values, a band of final rows at a time, top to bottom."""
    options = predictor.options
    pixels, maximum = open_pixels(path)
    height, width = pixels.shape[:2]
    if predictor.preprocess.scale != 1.0:
        raise UnetkitError(
            f"{path}: out-of-core prediction runs models trained at --scale 1 (this one: "
            f"{predictor.preprocess.scale:g}); use --out-of-core off, or resize the slide first"
        )
    th, tw = min(options.tile, height), min(options.tile, width)
    tops, lefts = tile_starts(height, th, options.overlap), tile_starts(width, tw, options.overlap)
    window = gaussian_window(th, tw)
    forward = with_tta(predictor._forward) if options.tta else predictor._forward
    logits = torch.zeros(predictor.num_outputs, 0, width)
    weights = torch.zeros(0, width)
    done = 0  # rows [0, done) are written; logits/weights hold rows [done, done + len)
    bar = tqdm(total=len(tops) * len(lefts), desc="tiles", unit="tile", disable=not progress, leave=False)
    for index, top in enumerate(tops):
        x = predictor.preprocess.image_tensor(band_image(pixels, top, top + th, maximum), path)
        grow = top + th - done - weights.shape[0]
        if grow > 0:
            logits = torch.cat([logits, torch.zeros(logits.shape[0], grow, width)], dim=1)
            weights = torch.cat([weights, torch.zeros(grow, width)])
        row = top - done
        for start in range(0, len(lefts), options.batch_size):
            batch = lefts[start : start + options.batch_size]
            out = forward(torch.stack([x[:, :, left : left + tw] for left in batch])).float().cpu()
            for left, tile_logits in zip(batch, out, strict=True):
                logits[:, row : row + th, left : left + tw] += tile_logits * window
                weights[row : row + th, left : left + tw] += window
            bar.update(len(batch))
        final = (tops[index + 1] if index + 1 < len(tops) else height) - done
        class_ids = predicted_classes((logits[:, :final] / weights[:final])[None], threshold)[0]
        yield predictor.mask_values.decode(class_ids.numpy().astype(np.uint8))
        logits, weights, done = logits[:, final:], weights[final:], done + final
    bar.close()


def output_tiles(rows: Iterator[np.ndarray], width: int, dtype: np.dtype) -> Iterator[np.ndarray]:
    """Regroup bands of rows into OUTPUT_TILE x OUTPUT_TILE tiles in TIFF order (row by row, the
    last ones padded)."""
    pending = np.zeros((0, width), dtype=dtype)

    def tile_row(block: np.ndarray) -> Iterator[np.ndarray]:
        for left in range(0, width, OUTPUT_TILE):
            tile = np.zeros((OUTPUT_TILE, OUTPUT_TILE), dtype=dtype)
            part = block[:, left : left + OUTPUT_TILE]
            tile[: part.shape[0], : part.shape[1]] = part
            yield tile

    for band in rows:
        pending = np.concatenate([pending, band])
        while pending.shape[0] >= OUTPUT_TILE:
            yield from tile_row(pending[:OUTPUT_TILE])
            pending = pending[OUTPUT_TILE:]
    if pending.shape[0]:
        yield from tile_row(pending)


def predict_large_tiff(predictor, path: Path, out: Path, threshold: float = 0.5, progress: bool = True) -> Path:
    """Write the mask of the TIFF `path` to `out` (a tiled BigTIFF, zlib), out of core."""
    import tifffile

    shape = tiff_shape(path)
    dtype = predictor.mask_values.decode(np.zeros(1, dtype=np.uint8)).dtype
    tiles = output_tiles(mask_rows(predictor, path, threshold, progress), shape[1], dtype)

    def write(temporary: Path) -> None:
        with tifffile.TiffWriter(temporary, bigtiff=True) as writer:
            writer.write(tiles, shape=shape[:2], dtype=dtype, tile=(OUTPUT_TILE, OUTPUT_TILE), compression="zlib")

    atomic_write(out, write)
    return out
