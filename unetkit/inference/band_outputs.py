"""What out-of-core prediction writes, fed a band of final rows at a time, top to bottom, and
never whole in memory: the mask goes straight into a tiled BigTIFF; probabilities and object
labels first into a temporary zarr array (a K-plane TIFF is written plane after plane, so its
first plane must be complete before the second begins), then into a tiled TIFF.

Objects are cut in blocks of OBJECT_ROWS rows seen with OBJECT_CONTEXT rows of context above and
below (stardist's way for big images): a block keeps the objects whose top row lies in it, so
each object is kept once, by the block that sees all of it. When a kept object reaches the last
row seen, the block waits for more rows below (up to MAX_OBJECT_CONTEXT); an object taller than
that is cut at the block's lower edge, and counted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from unetkit.core.atomic import atomic_write
from unetkit.inference.instances import object_table, save_table

OUTPUT_TILE = 256  # the written TIFFs' tiles, and the zarr chunks
# Each block sees 2x its rows: every row is cut into objects about twice. Blocks of 512 rows
# with 256 above and below: a 20,000 px wide slide's window is 20 Mpx, its watershed ~0.5 GB.
OBJECT_ROWS = 512  # rows of objects cut per block
OBJECT_CONTEXT = 256  # rows seen above and below a block, and more below while objects reach its edge,
MAX_OBJECT_CONTEXT = 1024  # up to this: objects up to this tall come out whole, taller ones are cut


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


def write_tiled_tiff(path: Path, tiles: Iterator[np.ndarray], shape: tuple[int, ...], dtype: np.dtype) -> None:
    """A tiled, zlib-compressed BigTIFF from tiles in TIFF order, written atomically; (K, H, W)
    shapes are K planes."""
    planes = {"planarconfig": "separate"} if len(shape) == 3 else {}

    def write(temporary: Path) -> None:
        with tifffile.TiffWriter(temporary, bigtiff=True) as writer:
            writer.write(
                tiles, shape=shape, dtype=dtype, tile=(OUTPUT_TILE, OUTPUT_TILE), compression="zlib",
                photometric="minisblack", **planes,
            )  # fmt: skip

    atomic_write(path, write)


class RowStore:
    """A temporary (planes, H, W) zarr array on disk, filled a band of rows at a time, and
    written in whole chunk rows (a partly written chunk would be read back and rewritten)."""

    def __init__(self, folder: Path, name: str, shape: tuple[int, int, int], dtype: np.dtype) -> None:
        import zarr

        chunks = (1, OUTPUT_TILE, OUTPUT_TILE)
        self.array = zarr.create_array(store=str(folder / name), shape=shape, chunks=chunks, dtype=dtype)
        self.pending = np.zeros((shape[0], 0, shape[2]), dtype=dtype)
        self.done = 0

    def add(self, rows: np.ndarray) -> None:
        self.pending = np.concatenate([self.pending, rows], axis=1)
        while self.pending.shape[1] >= OUTPUT_TILE:
            self._write(OUTPUT_TILE)

    def _write(self, count: int) -> None:
        self.array[:, self.done : self.done + count] = self.pending[:, :count]
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


class BandObjects:
    """Objects from bands of (K, h, W) probabilities: a label image (a RowStore) and its table,
    as `Predictor.objects` gives for a whole image."""

    def __init__(self, predictor, height: int, width: int, folder: Path) -> None:
        self.predictor, self.height = predictor, height
        self.probabilities = np.zeros((0, 0, width), np.float32)
        self.top = 0  # self.probabilities holds rows [top, top + len)
        self.labels = np.zeros((0, width), np.uint32)  # label rows not yet final, from row self.start
        self.start = 0  # the next block's first row
        self.store = RowStore(folder, "objects", (1, height, width), np.uint32)
        self.classes: list[int] = [0]  # class of each global id
        self.tables: list[dict[str, np.ndarray]] = []
        self.below = OBJECT_CONTEXT  # rows seen below the block: doubled while objects reach its edge
        self.cut = 0  # objects taller than MAX_OBJECT_CONTEXT, cut at a block's lower edge

    def add(self, probabilities: np.ndarray) -> None:
        if not self.probabilities.size:
            self.probabilities = np.zeros((len(probabilities), 0, probabilities.shape[2]), np.float32)
        self.probabilities = np.concatenate([self.probabilities, probabilities], axis=1)
        received = self.top + self.probabilities.shape[1]
        while self.start < self.height and received >= min(self.height, self.start + OBJECT_ROWS + self.below):
            self._block()

    def _block(self) -> None:
        start, stop = self.start, min(self.height, self.start + OBJECT_ROWS)
        seen_top, seen_bottom = max(0, start - OBJECT_CONTEXT), min(self.height, stop + self.below)
        seen = self.probabilities[:, seen_top - self.top : seen_bottom - self.top]
        labels, classes = self.predictor.objects_from_probabilities(seen)
        ids, reach_bottom = self._kept_ids(labels, start - seen_top, stop - seen_top)
        if reach_bottom and seen_bottom < self.height:
            if self.below < MAX_OBJECT_CONTEXT:  # see further down before keeping them
                self.below *= 2
                return
            self.cut += reach_bottom
        self.below = OBJECT_CONTEXT
        first = len(self.classes)
        new_ids = np.zeros(int(labels.max(initial=0)) + 1, np.uint32)
        new_ids[ids] = np.arange(first, first + len(ids), dtype=np.uint32)
        self.classes += classes[ids].tolist()
        # Paint the kept objects on rows [start, seen_bottom); pixels an earlier block gave away stay its.
        more = seen_bottom - start - self.labels.shape[0]
        self.labels = np.concatenate([self.labels, np.zeros((max(0, more), self.labels.shape[1]), np.uint32)])
        painted = new_ids[labels[start - seen_top :]]
        free = self.labels[: len(painted)] == 0
        self.labels[: len(painted)][free] = painted[free]
        if len(ids):
            rows = self.labels[: len(painted)]
            self._add_table(np.where(rows >= first, rows, 0), seen[:, start - seen_top :], start)
        # Rows above `stop` are final: later blocks keep only objects that start at `stop` or below.
        self.store.add(self.labels[None, : stop - start])
        self.labels = self.labels[stop - start :]
        keep_from = max(self.top, stop - OBJECT_CONTEXT)
        self.probabilities, self.top = self.probabilities[:, keep_from - self.top :], keep_from
        self.start = stop

    @staticmethod
    def _kept_ids(labels: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, int]:
        """Ids of the objects whose top row is in [start, stop), and how many of them reach the
        last row seen."""
        boxes = ndimage.find_objects(labels)
        ids = [i + 1 for i, box in enumerate(boxes) if box is not None and start <= box[0].start < stop]
        reach_bottom = sum(boxes[i - 1][0].stop == labels.shape[0] for i in ids)
        return np.array(ids, dtype=np.int64), int(reach_bottom)

    def _add_table(self, labels: np.ndarray, probabilities: np.ndarray, row: int) -> None:
        table = object_table(labels, np.asarray(self.classes), probabilities)
        for name in ("centroid_y", "bbox_min_y", "bbox_max_y"):
            table[name] = table[name] + row
        self.tables.append(table)

    def save(self, labels_path: Path, table_path: Path, class_values: list[int]) -> None:
        """The label image (uint16 while the ids fit, as in memory) and the CSV table."""
        count = len(self.classes) - 1
        self.store.save_tiff(labels_path, np.uint16 if count < 2**16 else np.uint32)
        empty = object_table(np.zeros((1, 1), np.uint32), np.zeros(1, np.int64), np.zeros((1, 1, 1), np.float32))
        table = {name: np.concatenate([t[name] for t in self.tables] or [empty[name]]) for name in empty}
        save_table(table_path, table, class_values)
