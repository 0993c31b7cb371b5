"""Whole-slide prediction out of core: a large TIFF is read a band of tile rows at a time
(tifffile's zarr store decodes only the tiles or strips asked for), its overlapping tiles run
and blend in tiling.py's engine, and the mask is written a tile row at a time into a tiled
BigTIFF. Neither the image, nor the logits, nor the mask is ever whole in memory: the peak is a
band of tile height x image width (image, logits and weights) plus the model.

Rows of the blended logits are final once no later tile row reaches them (below the next tile
row's top), so each band is normalised, classified and written, then dropped; probabilities and
objects are written from the same bands (band_outputs.py, band_objects.py). A model trained at
a scale reads the pyramid level of that size, and its logits are resized to full size band by
band (row_resample.py), so every output has the image's size, as in memory."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unetkit.data.io import MAX_CHANNELS, PixelRule, pixel_maximum, tiff_marks_alpha, unreadable
from unetkit.data.preprocess import PERCENTILE_PIXELS, channel_noise, match_channels, note_no_signal, sample_step
from unetkit.data.tiff_axes import FILE_AXES, AxisChoice, TiffAxes, tiff_layout
from unetkit.errors import UnetkitError
from unetkit.inference.outputs import PredictOutputs, output_name
from unetkit.inference.slide.band_objects import MAX_OBJECT_CONTEXT, BandObjects
from unetkit.inference.slide.band_outputs import RowStore, output_tiles, write_tiled_tiff, writes_settled_on_error
from unetkit.inference.slide.row_resample import RowResampler
from unetkit.inference.tiling import Blend, crop, forward_batches, tile_boxes, tile_starts
from unetkit.models.heads import predicted_classes
from unetkit.runtime.progress import tell

LARGE_PIXELS = 64 * 2**20  # "auto" predicts TIFFs above this many pixels out of core (a 8192^2 image)
TIFF_SUFFIXES = (".tif", ".tiff")
MAX_CHUNK_ROWS = 4096  # taller strips are read through a memory map (uncompressed) or refused
# A band's pixels become the model's input this many columns at a time, so its float32 copies
# (4 bytes a channel a pixel, 123 MiB for a 512 x 20,000 RGB band) are never whole in memory.
BAND_COLUMNS = 2048


def out_of_core(path: Path, mode: str, axes: AxisChoice = FILE_AXES) -> bool:
    """Whether `path` is predicted out of core: mode "on" (any TIFF), "auto" (TIFFs whose planes
    are large) or "off"."""
    if mode == "off":
        return False
    if path.suffix.lower() not in TIFF_SUFFIXES:
        if mode == "on":
            raise UnetkitError(f"{path}: --out-of-core on reads TIFF files only; convert it or use --out-of-core auto")
        return False
    try:
        layout = tiff_layout(path, axes)
    except Exception:  # unreadable or refused here: the in-memory reader names the problem
        return False
    return mode == "on" or layout.length("Y") * layout.length("X") > LARGE_PIXELS


class PlaneRows:
    """Plane `plane` of a stack's lazily decoded series (zarr, or a memory map) as the (H, W[, C])
    array the band engine reads rows of: only the rows asked for are decoded."""

    def __init__(self, series, layout: TiffAxes, plane: int) -> None:
        self.fixed = layout.fixed_at(plane)
        self.series, self.axes = series, layout.axes
        kept = [a for a in layout.axes if a not in self.fixed]  # Y, X and the channel axis, in the file's order
        self.order = [kept.index("Y"), kept.index("X")] + [i for i, a in enumerate(kept) if a not in "YX"]
        self.shape = tuple(layout.length(kept[i]) for i in self.order)
        self.ndim, self.dtype = len(self.shape), series.dtype

    def __getitem__(self, rows: slice) -> np.ndarray:
        index = tuple(self.fixed.get(a, rows if a == "Y" else slice(None)) for a in self.axes)
        return np.transpose(np.asarray(self.series[index]), self.order)


def choose_level(path: Path, scale: float) -> int:
    """The pyramid level whose size matches the model's scale (level 0 at scale 1)."""
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        series = tiff.series[0]
        base, sizes = series.shape[:2], [level.shape[:2] for level in series.levels]
    for index, size in enumerate(sizes):
        wanted = [side * scale for side in base]
        if all(abs(have - want) <= max(1.0, 0.01 * want) for have, want in zip(size, wanted, strict=True)):
            return index
    levels = ", ".join(f"{w} x {h}" for h, w in sizes)
    wanted = f"{round(base[1] * scale)} x {round(base[0] * scale)}"
    raise UnetkitError(
        f"{path}: the model runs at scale {scale:g} (its --scale, times predict's --zoom), so out of core it reads a "
        f"pyramid level of {wanted} pixels; "
        f"this TIFF has {levels}. Save it with such a level, or use --out-of-core off if it fits in memory"
    )


@contextmanager
def opened_pixels(
    path: Path, level: int = 0, plane: int | None = None, axes: AxisChoice = FILE_AXES
) -> Iterator[tuple[Any, PixelRule]]:
    """A lazily decoded (H, W[, C]) array of the first series' `level` (of its plane `plane`, for
    a stack) and read_image's pixel rule for it (checked on the first row, before anything is
    written); the file is closed afterwards."""
    import tifffile
    import zarr

    store = tifffile.imread(path, aszarr=True, level=level)
    try:
        pixels = zarr.open(store, mode="r")
        layout = tiff_layout(path, axes)
        if plane is None and channels_first(layout):
            plane = 0  # one image whose channels come before its rows (CYX, planar RGB): read as a stack's plane
        if plane is not None:
            rows = pixels.chunks[layout.axes.index("Y")]
            pixels = PlaneRows(memory_mapped(path, level, rows) if rows > MAX_CHUNK_ROWS else pixels, layout, plane)
        elif pixels.ndim == 3 and pixels.shape[2] > MAX_CHANNELS + 1 or pixels.ndim not in (2, 3):
            raise UnetkitError(
                f"{path}: out-of-core prediction reads (height, width[, channels]) TIFFs; this one is "
                f"{tuple(pixels.shape)}; save it as one 2-D image (channels last)"
            )
        elif pixels.chunks[0] > MAX_CHUNK_ROWS:
            pixels = memory_mapped(path, level, pixels.chunks[0])
        with tifffile.TiffFile(path) as tif:
            rule = PixelRule(pixel_range(pixels, path), tiff_marks_alpha(tif))
        rule.apply(rows_of(pixels, 0, 1, path), path)  # a channel count the model cannot take: refused now
        yield pixels, rule
    finally:
        store.close()


def channels_first(layout: TiffAxes) -> bool:
    """Whether a TIFF of one image (no plane axes) stores its channels before its rows, as
    ImageJ's CYX and planar-configured RGB (SYX) do, where zarr's array is not (H, W[, C])."""
    stored = "".join(a for a, n in zip(layout.axes, layout.shape, strict=True) if n > 1 or a in "YX")
    return layout.planes == 1 and bool(layout.channel_axes) and not stored.startswith("YX")


def memory_mapped(path: Path, level: int, rows: int):
    """A file stored in strips this tall (often one strip: the default of uncompressed writers)
    would be decoded whole for every band; uncompressed, it is read through a memory map."""
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        mappable = tiff.series[0].levels[level].keyframe.is_memmappable
    if not mappable:
        raise UnetkitError(
            f"{path}: stored compressed in strips of {rows} rows, so reading it a band at a time would decode "
            "all of it for every band; save it tiled (e.g. tifffile.imwrite(..., tile=(512, 512))), or use "
            "--out-of-core off if it fits in memory"
        )
    try:
        return tifffile.memmap(path, mode="r", level=level)
    except (ValueError, OSError) as err:  # a header that promises more than the file holds
        raise unreadable(path, err) from None


def pixel_range(pixels, path: Path = Path("image")) -> float:
    """The value that maps to 1.0, by read_image's rule (for integers wider than 16 bits, one
    pass over the image finds the largest value); 1.0 for floats."""
    rows = range(0, pixels.shape[0], 1024)
    return pixel_maximum(pixels.dtype, lambda: max(int(rows_of(pixels, top, top + 1024, path).max()) for top in rows))


def rows_of(pixels, top: int, bottom: int, path: Path, columns: slice = slice(None)) -> np.ndarray:
    """Rows [top, bottom) (of `columns`) as stored; a file cut short or whose header lies is one
    line, as in memory (tifffile, zarr, the codecs and mmap each raise their own kind of error)."""
    try:
        return np.asarray(pixels[top:bottom] if columns == slice(None) else pixels[top:bottom, columns])
    except Exception as err:
        raise unreadable(path, err) from None


def band_image(pixels, top: int, bottom: int, rule: PixelRule, path: Path = Path("image")) -> np.ndarray:
    """Rows [top, bottom) as float32 (h, W, C) in [0, 1], by read_image's rule."""
    return rule.apply(rows_of(pixels, top, bottom, path), path, first_row=top)


def read_columns(pixels) -> int:
    """How many columns band_input reads at a time: BAND_COLUMNS rounded to whole stored tiles
    where the file is tiled (each tile decoded once); a file in strips is read whole rows at a time
    (a strip is decoded whole whatever columns are asked for)."""
    chunks = getattr(pixels, "chunks", None)
    if chunks is None or chunks[1] >= pixels.shape[1]:
        return pixels.shape[1]
    return max(1, BAND_COLUMNS // chunks[1]) * chunks[1]


def band_input(preprocess, pixels, top: int, bottom: int, read: tuple, out: torch.Tensor | None = None) -> torch.Tensor:
    """The model's normalised (C, h, W) input for rows [top, bottom) (into `out` where given: one
    buffer for every band of a slide, as Blend keeps its own, so glibc's heap does not fragment
    band after band). `read` is (rule, path, ranges); the rows are read (decoded) once, a stored
    tile's columns at a time where the file is tiled, and converted BAND_COLUMNS at a time by the
    same rule and preprocessing as band_image."""
    rule, path, ranges = read
    width, columns = pixels.shape[1], read_columns(pixels)
    x = torch.empty(preprocess.in_channels, bottom - top, width) if out is None else out[:, : bottom - top]
    for start in range(0, width, columns):
        raw = rows_of(pixels, top, bottom, path, slice(start, start + columns) if columns < width else slice(None))
        for left in range(0, raw.shape[1], BAND_COLUMNS):
            piece = rule.apply(raw[:, left : left + BAND_COLUMNS], path, first_row=top)
            x[:, :, start + left : start + left + piece.shape[1]] = preprocess.band_tensor(piece, path, ranges)
    return x


def classes_of(logits: torch.Tensor, threshold: float) -> np.ndarray:
    """(K, h, W) logits -> (h, W) uint8 class ids (predicted_classes)."""
    return predicted_classes(logits[None], threshold, torch.uint8)[0].numpy()


def logit_bands(predictor, pixels, rule: PixelRule, path: Path, each=None) -> Iterator[torch.Tensor | np.ndarray]:
    """(K, h, W) blended logits of `pixels` (already at the model's scale), a band of final rows
    at a time, top to bottom; always in tiles (--tile, --overlap), run and blended by tiling.py's
    engine a tile row at a time (batches stay within a tile row, so sums may differ from in
    memory by rounding). `each`: what is made of each band's logits instead (Blend.take)."""
    options = predictor.options
    # Per-image percentiles come from the whole image first (image_percentiles), then scale each band.
    preprocess = predictor.preprocess
    bounds = preprocess.percentiles
    ranges = image_percentiles(pixels, rule, path, bounds, preprocess.in_channels) if bounds else None
    height, width = pixels.shape[:2]
    forward, tile, batch_size = predictor.slide_plan(width)
    th = min(tile, height)
    tops = tile_starts(height, th, options.overlap)
    row = tile_boxes(th, width, tile, options.overlap)  # the tiles of one tile row, from its top
    blended = Blend(predictor.num_outputs, width, row[0][2:])
    done, total = 0, len(tops) * len(row)
    buffer = torch.empty(preprocess.in_channels, th, width)
    for index, top in enumerate(tops):
        x = band_input(preprocess, pixels, top, top + th, (rule, path, ranges), buffer)
        pieces = (((top, left, h, w), crop(x, (0, left, h, w))) for _, left, h, w in row)
        for box, logits in forward_batches(forward, pieces, batch_size):
            blended.add(box, logits)
            done += 1
            tell(predictor.progress, done, total, "tiles")
        final = tops[index + 1] if index + 1 < len(tops) else height  # no later tile reaches above it
        yield blended.take(final - blended.top, each)


def image_percentiles(pixels, rule: PixelRule, path: Path, bounds: list[float], channels: int) -> np.ndarray:
    """(2, C): each channel's `bounds` percentiles over the whole image, read a band at a time from
    the same strided sample of rows and columns as percentile_scaled takes in memory (of the
    pyramid level read, for a model at a scale, where memory takes the full-size image)."""
    height, width = pixels.shape[:2]
    step = sample_step(height, width, PERCENTILE_PIXELS)
    band = step * max(1, 256 // step)  # a multiple of the step: every band starts on a sampled row
    sampled, first_rows = [], []
    for top in range(0, height, band):
        read = match_channels(band_image(pixels, top, top + band, rule, path), channels, path)
        # Copies: a view would keep its whole band alive until the last band is read.
        sampled.append(read[::step, ::step].copy())
        first_rows.append(read[:1].copy())  # whole, for the noise between neighbours (note_no_signal)
    ranges = np.percentile(np.concatenate(sampled).reshape(-1, channels), bounds, axis=0)
    note_no_signal(ranges[1] - ranges[0], channel_noise(np.concatenate(first_rows)), path)
    return ranges


def resized_bands(bands: Iterator[torch.Tensor], source_height: int, size: tuple[int, int]) -> Iterator[torch.Tensor]:
    """Bands of logits at a pyramid level -> bands at the image's full size (bilinear, as
    Predictor.logits resizes a scaled model's logits)."""
    resampler = RowResampler(source_height, *size)
    for band in bands:
        out = resampler.add(band)
        if out.shape[1]:
            yield out


def level_to_read(preprocess, path: Path, plane: int | None) -> int:
    """The pyramid level out-of-core prediction reads (choose_level); what it cannot do, refused."""
    if plane is not None and preprocess.scale != 1.0:
        raise UnetkitError(
            f"{path}: the model runs at scale {preprocess.scale:g} (its --scale, times --zoom), and out of core a "
            "stack is read at full size only (no pyramid levels); use --out-of-core off if its planes fit in memory"
        )
    return 0 if plane is not None else choose_level(path, preprocess.scale)


def predict_large_tiff(
    predictor, path: Path, out: Path, outputs: PredictOutputs, plane: int | None = None, axes: AxisChoice = FILE_AXES
) -> Path:
    """Write the mask of the TIFF `path` (of its plane `plane`, for a stack) to `out` (a tiled
    BigTIFF, zlib), out of core, and beside it the outputs asked for (the probabilities, K
    planes; the objects, a label image and its table), named by output_name after `out`'s stem,
    all at the image's full size. Models at a scale read the matching pyramid level."""
    layout = tiff_layout(path, axes)
    height, width = layout.length("Y"), layout.length("X")
    level = level_to_read(predictor.preprocess, path, plane)
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        opened_pixels(path, level, plane, axes) as (pixels, rule),
        tempfile.TemporaryDirectory(dir=out.parent, prefix=".unetkit-") as folder,
        writes_settled_on_error(),  # exits first: before the folder goes
    ):
        match_channels(band_image(pixels, 0, 1, rule, path), predictor.preprocess.in_channels, path)  # before writing
        store = RowStore(Path(folder), "probabilities", (predictor.num_outputs + predictor.binary, height, width),
                         np.float32) if outputs.probabilities else None  # fmt: skip
        objects = BandObjects(predictor, height, width, Path(folder)) if outputs.instances else None
        write_mask(predictor, (pixels, rule, path), out, (height, width), store, objects)
        if store:
            store.save_tiff(out.with_name(output_name(out.stem, "probabilities")))
        if objects:
            labels, table = (out.with_name(output_name(out.stem, output)) for output in ("objects", "object_table"))
            objects.save(labels, table, predictor.mask_values.values)
            if objects.cut:
                print(f"{path}: {objects.cut} object(s) larger than {MAX_OBJECT_CONTEXT} px were cut at block edges",
                      file=sys.stderr)  # fmt: skip
    return out


def write_mask(predictor, read: tuple, out: Path, size: tuple[int, int], store, objects) -> None:
    """The mask at `size`, band by band from `read` (pixels, rule, path), and from the same bands
    the probabilities (`store`) and objects asked for. The mask alone takes each band's class ids
    as its logits are blended (Blend.take's `each`): a 4-class model's 20,000 px band of logits
    (225 MB) is never whole."""
    pixels, rule, path = read
    threshold, dtype = predictor.options.threshold, predictor.mask_values.decode(np.zeros(1, np.uint8)).dtype
    alone = not (store or objects) and pixels.shape[:2] == size
    bands = logit_bands(predictor, pixels, rule, path, partial(classes_of, threshold=threshold) if alone else None)
    if pixels.shape[:2] != size:
        bands = resized_bands(bands, pixels.shape[0], size)

    def masks() -> Iterator[np.ndarray]:
        for band in bands:
            if not alone:  # before the yield: the TIFF writer stops pulling once it has its last tile
                chances = predictor.probabilities(band[None]) if store or objects else None
                if store:
                    store.add(chances)
                if objects:
                    objects.add(chances)
                band = classes_of(band, threshold)
            yield predictor.mask_values.decode(band)

    try:
        write_tiled_tiff(out, output_tiles(masks(), size[1], dtype), size, dtype)
    finally:
        bands.close()  # the tile bar goes now, not when the generators are collected
