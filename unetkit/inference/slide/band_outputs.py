"""What out-of-core prediction writes, fed a band of final rows at a time, top to bottom, and
never whole in memory: the mask goes straight into a tiled BigTIFF; probabilities and object
labels first into a temporary zarr array (a K-plane TIFF is written plane after plane, so its
first plane must be complete before the second begins), then into a tiled TIFF. The objects
are band_objects.py's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import tifffile
import torch

from unetkit.errors import UnetkitError
from unetkit.runtime.atomic import atomic_write

OUTPUT_TILE = 256  # the written TIFFs' tiles, and the zarr chunks
# Tiles are compressed by torch's threads, idle meanwhile (tifffile takes one on a 2-core CPU),
# 128 tiles at a time (8 MiB): an 8192^2 mask wrote in 0.35 -> 0.22 s on 2 cores.
COMPRESS_BUFFER = 128 * OUTPUT_TILE**2


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


def write_tiled_tiff(
    path: Path, tiles: Iterator[np.ndarray], shape: tuple[int, ...], dtype: np.dtype, axes: str | None = None
) -> None:
    """A tiled, zlib-compressed BigTIFF from tiles in TIFF order, written atomically; (K, H, W)
    shapes are K pages, as save_probabilities writes them in memory; with `axes` (a stack's, e.g.
    ZCYX), an OME-TIFF of a page per plane."""
    ome = bool(axes) and names_ome_axes(axes)
    layout = {"metadata": {"axes": axes}} if axes else {}

    def write(temporary: Path) -> None:
        with tifffile.TiffWriter(temporary, bigtiff=True, ome=ome) as writer:
            writer.write(
                tiles, shape=shape, dtype=dtype, tile=(OUTPUT_TILE, OUTPUT_TILE), compression="zlib",
                photometric="minisblack", maxworkers=torch.get_num_threads(), buffersize=COMPRESS_BUFFER, **layout,
            )  # fmt: skip

    atomic_write(path, write)


def names_ome_axes(axes: str) -> bool:
    """Whether OME-TIFF can name these axes (each of T, C, Z, Y, X, S once); tifffile's shaped
    TIFF keeps any others (Q, I: pages without names), and both read back with their axes."""
    return all(axis in "TCZYXS" for axis in axes) and len(set(axes)) == len(axes)


def settle_zarr_writes() -> None:
    """Wait for the chunk writes zarr still runs after one of them failed: zarr gathers a write's
    chunks in its own event loop and does not cancel the others, which then wrote into the
    temporary folder while it was removed ("Directory not empty") and were reported at exit as 25
    "Task was destroyed but it is pending!" (a red-team finding, on a full disk)."""
    import asyncio

    try:
        from zarr.core.sync import sync
    except ImportError:  # another zarr: nothing known to wait for
        return

    async def the_others() -> None:
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        await asyncio.gather(*others, return_exceptions=True)

    sync(the_others())


@contextmanager
def writes_settled_on_error() -> Iterator[None]:
    """Whatever stops a slide's outputs (Ctrl-C, an error), zarr's chunk writes still under way end
    (settle_zarr_writes) before the temporary folder is removed: a Ctrl-C during --instances left
    a traceback ("Directory not empty") and the folder (a red-team finding)."""
    try:
        yield
    except BaseException:
        settle_zarr_writes()
        raise


class RowStore:
    """A temporary (planes, H, W) zarr array on disk, filled a band of rows at a time, and
    written in whole chunk rows (a partly written chunk would be read back and rewritten)."""

    def __init__(self, folder: Path, name: str, shape: tuple[int, int, int], dtype: np.dtype) -> None:
        import zarr

        chunks = (1, OUTPUT_TILE, OUTPUT_TILE)
        self.folder = folder
        self.array = zarr.create_array(store=str(folder / name), shape=shape, chunks=chunks, dtype=dtype)
        self.pending = np.zeros((shape[0], 0, shape[2]), dtype=dtype)
        self.done = 0

    def add(self, rows: np.ndarray) -> None:
        self.pending = np.concatenate([self.pending, rows], axis=1)
        while self.pending.shape[1] >= OUTPUT_TILE:
            self._write(OUTPUT_TILE)

    def _write(self, count: int) -> None:
        try:
            self.array[:, self.done : self.done + count] = self.pending[:, :count]
        except OSError as err:  # a full disk: one line, once zarr's other writes of these rows have ended
            settle_zarr_writes()
            raise UnetkitError(
                f"{self.folder.parent}: cannot write the temporary {self.array.shape[0]}-plane store of the outputs "
                f"({err.strerror or err}); free disk space there or choose another output folder"
            ) from None
        self.pending, self.done = self.pending[:, count:], self.done + count

    def save_tiff(self, path: Path, dtype: np.dtype | None = None) -> None:
        """Everything added, as a tiled TIFF ((H, W) for one plane), read back a chunk row at a time."""
        if self.pending.shape[1]:
            self._write(self.pending.shape[1])
        planes, height, width = self.array.shape
        dtype = np.dtype(dtype or self.array.dtype)

        def tiles() -> Iterator[np.ndarray]:
            for plane in range(planes):
                strips = (np.asarray(self.array[plane, top : top + OUTPUT_TILE]).astype(dtype) for top in
                          range(0, height, OUTPUT_TILE))  # fmt: skip
                yield from output_tiles(strips, width, dtype)

        write_tiled_tiff(path, tiles(), (planes, height, width) if planes > 1 else (height, width), dtype)
