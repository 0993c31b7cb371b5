"""Objects of an image too large for memory, from its probabilities as they arrive a band of
rows at a time: the label image (written a row block at a time) and its table, as
`Predictor.objects` gives them for a whole image.

The image is cut into blocks of OBJECT_BLOCK x OBJECT_BLOCK pixels, each seen with
OBJECT_CONTEXT pixels around it (stardist's way for big images). A block keeps the objects whose
top-left corner (bounding box) lies in it, so each object is kept once, by the block that sees
it whole. When a kept object reaches the right edge of what its block sees, the block looks
further right; when it reaches the bottom edge, the block waits for more rows (the blocks to
its left in the row stay as cut); both up to MAX_OBJECT_CONTEXT. Objects larger than that are
cut there, and counted. Blocks, not bands of rows: the watershed's memory is a block's (about
8 bytes per pixel per array), whatever the slide's width. A 20,000 px wide band with full
context took 2.7 GB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from unetkit.inference.objects import object_table, save_table
from unetkit.inference.slide.band_outputs import RowStore

OBJECT_BLOCK = 1024  # a block's side; it sees (1024 + 2 x 256)^2: every pixel is cut ~2.25 times
OBJECT_CONTEXT = 256  # pixels seen around a block
MAX_OBJECT_CONTEXT = 1024  # ...and more, up to this, while a kept object reaches the edge seen

Found = tuple[slice, slice, np.ndarray, int]  # an object: rows, columns (global), its pixels there, class


class BandObjects:
    """Feed (K, h, W) probability bands top to bottom with `add`; then `save`."""

    def __init__(self, predictor, height: int, width: int, folder: Path) -> None:
        self.predictor, self.height, self.width = predictor, height, width
        self.probabilities = np.zeros((0, 0, width), np.float32)
        self.top = 0  # self.probabilities holds rows [top, top + len)
        self.labels = np.zeros((0, width), np.uint32)  # label rows not yet final, from row self.start
        self.start = 0  # the next block row's first row
        self.below = OBJECT_CONTEXT  # rows seen below the block row: doubled while objects reach them
        self.store = RowStore(folder, "objects", (1, height, width), np.uint32)
        self.classes: list[int] = [0]  # class of each global id
        self.tables: list[dict[str, np.ndarray]] = []
        self.cut = 0  # objects larger than the context allows, cut at a block's edge
        self.two_classes = False
        self.done: dict[int, tuple[list[Found], int]] = {}  # this block row's blocks: left -> objects, cut

    def add(self, probabilities: np.ndarray) -> None:
        # Two classes: class 0's probability is 1 - class 1's and only class 1 makes objects, so
        # only class 1 is kept, and class 0 is remade per block: the buffer (up to ~2300 rows x the
        # slide's width) is the largest thing here.
        self.two_classes = len(probabilities) == 2
        probabilities = probabilities[1:] if self.two_classes else probabilities
        if not self.probabilities.size:
            self.probabilities = np.zeros((len(probabilities), 0, self.width), np.float32)
        self.probabilities = np.concatenate([self.probabilities, probabilities], axis=1)
        received = self.top + self.probabilities.shape[1]
        while self.start < self.height and received >= min(self.height, self.start + OBJECT_BLOCK + self.below):
            self._block_row()

    def _block_row(self) -> None:
        start, stop = self.start, min(self.height, self.start + OBJECT_BLOCK)
        seen_top, seen_bottom = max(0, start - OBJECT_CONTEXT), min(self.height, stop + self.below)
        rows = self.probabilities[:, seen_top - self.top : seen_bottom - self.top]
        for left in range(0, self.width, OBJECT_BLOCK):
            if left in self.done:  # cut before this row waited for more rows below
                continue
            found, reach_bottom, reach_right = self._block(rows, seen_top, (start, stop), left)
            if reach_bottom and seen_bottom < self.height and self.below < MAX_OBJECT_CONTEXT:
                self.below *= 2  # see further down, then cut this block (and those after it) again
                return
            self.done[left] = found, reach_bottom * (seen_bottom < self.height) + reach_right
        blocks = [found for found, _ in self.done.values()]
        self.cut += sum(cut for _, cut in self.done.values())
        self.below, self.done = OBJECT_CONTEXT, {}
        more = seen_bottom - start - self.labels.shape[0]
        self.labels = np.concatenate([self.labels, np.zeros((max(0, more), self.width), np.uint32)])
        for found in blocks:
            self._paint(found, rows[:, start - seen_top :], start)
        # Rows above `stop` are final: later block rows keep only objects that start at `stop` or below.
        self.store.add(self.labels[None, : stop - start])
        self.labels = self.labels[stop - start :]
        keep_from = max(self.top, stop - OBJECT_CONTEXT)
        self.probabilities, self.top = self.probabilities[:, keep_from - self.top :], keep_from
        self.start = stop

    def _block(self, rows: np.ndarray, seen_top: int, core: tuple[int, int], left: int) -> tuple[list[Found], int, int]:
        """The objects whose top-left corner is in the block of rows `core` and columns from
        `left`, how many of them reach the last row seen, and how many were cut on the right."""
        right, side = min(self.width, left + OBJECT_BLOCK), OBJECT_CONTEXT
        while True:
            first, last = max(0, left - side), min(self.width, right + side)
            labels, classes = self.predictor.objects_from_probabilities(self._classes(rows[:, :, first:last]))
            boxes = ndimage.find_objects(labels)
            kept = [
                (number, box) for number, box in enumerate(boxes, 1) if box is not None
                and core[0] <= box[0].start + seen_top < core[1] and left <= box[1].start + first < right
            ]  # fmt: skip
            reach_right = sum(box[1].stop == labels.shape[1] for _, box in kept) if last < self.width else 0
            if not reach_right or side >= MAX_OBJECT_CONTEXT:
                break
            side *= 2
        found = [
            (slice(box[0].start + seen_top, box[0].stop + seen_top), slice(box[1].start + first, box[1].stop + first),
             labels[box] == number, int(classes[number]))
            for number, box in kept
        ]  # fmt: skip
        return found, sum(box[0].stop == labels.shape[0] for _, box in kept), reach_right

    def _paint(self, found: list[Found], probabilities: np.ndarray, row: int) -> None:
        """Give each object the next id on the pending label rows (which start at `row`); pixels
        an earlier block took stay its. Then the table of these objects, on their bounding region."""
        if not found:
            return
        first = len(self.classes)
        for rows, columns, pixels, class_id in found:
            region = self.labels[rows.start - row : rows.stop - row, columns]
            free = pixels & (region == 0)
            if free.any():  # an object wholly taken by earlier blocks gets no id: ids stay consecutive
                region[free] = len(self.classes)
                self.classes.append(class_id)
        if len(self.classes) == first:
            return
        top, bottom = min(f[0].start for f in found) - row, max(f[0].stop for f in found) - row
        left, right = min(f[1].start for f in found), max(f[1].stop for f in found)
        area = self.labels[top:bottom, left:right]
        chances = self._classes(probabilities[:, top:bottom, left:right])
        instances = bool(self.predictor.mask_values.instances)
        table = object_table(np.where(area >= first, area, 0), np.asarray(self.classes), chances, instances)
        for name, offset in (("centroid_y", row + top), ("bbox_min_y", row + top), ("bbox_max_y", row + top)):
            table[name] = table[name] + offset
        for name in ("centroid_x", "bbox_min_x", "bbox_max_x"):
            table[name] = table[name] + left
        self.tables.append(table)

    def _classes(self, probabilities: np.ndarray) -> np.ndarray:
        """Every class's probabilities from the kept ones."""
        return np.concatenate([1 - probabilities, probabilities]) if self.two_classes else probabilities

    def save(self, labels_path: Path, table_path: Path, class_values: list[int]) -> None:
        """The label image (uint16 while the ids fit, as in memory) and the CSV table."""
        count = len(self.classes) - 1
        self.store.save_tiff(labels_path, np.uint16 if count < 2**16 else np.uint32)
        empty = object_table(np.zeros((1, 1), np.uint32), np.zeros(1, np.int64), np.zeros((1, 1, 1), np.float32))
        table = {name: np.concatenate([t[name] for t in self.tables] or [empty[name]]) for name in empty}
        save_table(table_path, table, class_values)
