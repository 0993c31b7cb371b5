"""The one tiling engine: prediction on images of any size in bounded memory, as overlapping tiles
(tile_boxes), run in batches (forward_batches), their logits blended with a Gaussian window
(Blend) so tile borders (where a conv net sees the least context) count least. Memory is the
tile batch plus the output, never the whole image through the model. A whole image
(predict_tiled), a folder's images batched together (batched.py) and a large TIFF read a band at
a time (large_tiff.py) all tile, run and blend here."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import numpy as np
import torch

from unetkit.runtime.progress import Progress, tell

Forward = Callable[[torch.Tensor], torch.Tensor]  # (N, C, h, w) -> (N, K, h, w) float32 logits
Box = tuple[int, int, int, int]  # a tile: top, left, height, width
Key = TypeVar("Key")  # what a piece is known by: its tile, or (image, tile)


def gaussian_window(height: int, width: int, sigma_fraction: float = 0.125) -> torch.Tensor:
    """(height, width) weights, 1 at the centre, falling to ~0.03 at the tile edges (sigma = tile/8,
    as nnU-Net); clamped above 0 so every pixel keeps some weight."""

    def axis(n: int) -> torch.Tensor:
        position = torch.arange(n, dtype=torch.float32) - (n - 1) / 2
        return torch.exp(-0.5 * (position / max(1.0, sigma_fraction * n)) ** 2)

    window = axis(height)[:, None] * axis(width)[None, :]
    return (window / window.max()).clamp_min(1e-3)


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis: step tile - overlap, the last tile flush with the edge."""
    if size <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, size - tile, step))
    return starts + [size - tile]


def tile_boxes(height: int, width: int, tile: int, overlap: int) -> list[Box]:
    """(top, left, tile height, tile width) of every tile; tiles are clipped to small images."""
    th, tw = min(tile, height), min(tile, width)
    return [(top, left, th, tw) for top in tile_starts(height, th, overlap) for left in tile_starts(width, tw, overlap)]


# Blend.take's rows at a time where only what is made of them is kept: a 4-class 20,000 px piece's
# quotient and indices are 20 and 10 MB (four times that at 256 rows; benchmarks/NOTES.md, issue 36).
TAKE_ROWS = 64


class Blend:
    """Overlapping tiles' logits blended into one image: each tile's (K, h, w) logits weighted by the
    Gaussian window and summed, and the sums divided by the summed windows when rows are taken.
    It holds a band of rows from image row `top` on, growing as tiles reach further down, so the
    same code serves a whole image (taken at once) and an image read a band at a time out of core
    (rows taken as soon as no later tile reaches them).

    The summed windows are not held: they are summed again from the tiles' boxes, a piece of rows
    at a time, when rows are taken (in the order the tiles came, so to the same bits). Held, they
    were a band of 4-byte weights beside the sums: 61 MB of a 20,000 px slide's ~1 GB peak."""

    def __init__(self, num_outputs: int, width: int, tile_hw: tuple[int, int], height: int = 0) -> None:
        self.window = gaussian_window(*tile_hw)
        self.logits = torch.zeros(num_outputs, height, width)
        self.boxes: list[Box] = []  # the tiles added that reach rows still held
        self.top = 0  # the image row of the first row held
        self.rows = height  # rows held; the buffers may be taller (kept from band to band)

    def add(self, box: Box, logits: torch.Tensor) -> None:
        """Add one tile's (K, h, w) logits at `box` (top, left, h, w in image rows and columns)."""
        top, left = box[0] - self.top, box[1]
        height, width = self.window.shape
        self._hold(top + height)
        self.logits[:, top : top + height, left : left + width].addcmul_(logits, self.window)
        self.boxes.append(box)

    def _hold(self, rows: int) -> None:
        grow = rows - self.logits.shape[1]
        if grow > 0:  # only while the first tile rows arrive: later bands reuse the same buffer
            # A new buffer and a copy of the rows held, not torch.cat with zeros: cat held a second
            # band of zeros beside its result, and a 4-class 20,000 px band peaked 300 MB higher.
            held, self.logits = self.logits, self.logits.new_zeros(self.logits.shape[0], rows, self.logits.shape[2])
            self.logits[:, : held.shape[1]] = held
        self.rows = max(self.rows, rows)

    def weights(self, start: int, end: int) -> torch.Tensor:
        """The summed windows of held rows [start, end), (end - start, W)."""
        summed = torch.zeros(end - start, self.logits.shape[2])
        height, width = self.window.shape
        for top, left, _, _ in self.boxes:
            first, last = max(start, top - self.top), min(end, top - self.top + height)
            if first < last:
                window = self.window[first - (top - self.top) : last - (top - self.top)]
                summed[first - start : last - start, left : left + width] += window
        return summed

    def take(
        self, rows: int | None = None, each: Callable[[torch.Tensor], np.ndarray] | None = None
    ) -> torch.Tensor | np.ndarray:
        """The first `rows` rows held (default: all) as blended (K, rows, W) logits; they are dropped.
        With `each`, what it makes of the blended rows, TAKE_ROWS at a time, stacked: the band's
        logits are never whole (a 4-class model's 20,000 px band is 225 MB)."""
        rows = self.rows if rows is None else rows
        if each is None:
            blended = self.logits[:, :rows] / self.weights(0, rows)
        else:
            ends = [(top, min(top + TAKE_ROWS, rows)) for top in range(0, rows, TAKE_ROWS)]
            blended = np.concatenate([each(self.logits[:, top:end] / self.weights(top, end)) for top, end in ends])
        rest = self.rows - rows
        if rest:
            self._move_up(rows, rest)
        else:  # nothing left (a whole image, the last band): the buffer goes, and its memory
            self.logits = self.logits.new_zeros(self.logits.shape[0], 0, self.logits.shape[2])
        self.rows, self.top = rest, self.top + rows
        self.boxes = [box for box in self.boxes if box[0] + self.window.shape[0] > self.top]
        return blended

    def _move_up(self, rows: int, rest: int) -> None:
        """Rows [rows, rows + rest) become rows [0, rest), in place, and the rows below are zeroed.
        In place because a new band per tile row, 20,000 px wide, left glibc's heap fragmented:
        1,067 MiB peak for a 20,000^2 slide (benchmarks/NOTES.md, issue 36). Where the rows kept
        overlap their destination, they move `rows` at a time, top first (each piece's source lies
        below every row written before it): a copy of them all was a band's worth more memory."""
        held = self.logits[:, : self.rows]
        for start in range(0, rest, rows):
            end = min(start + rows, rest)
            held[:, start:end] = held[:, rows + start : rows + end]
        held[:, rest:] = 0


def crop(image: torch.Tensor, box: Box) -> torch.Tensor:
    """The (C, h, w) piece of a (C, H, W) image under `box` (top, left, h, w)."""
    top, left, height, width = box
    return image[:, top : top + height, left : left + width]


def forward_batches(
    forward: Forward, pieces: Iterable[tuple[Key, torch.Tensor]], batch_size: int
) -> Iterator[tuple[Key, torch.Tensor]]:
    """(key, (C, h, w) model input) pieces of one shape through `forward`, `batch_size` at a time:
    (key, (K, h, w) float32 logits on the CPU) for each, in order. Every tiled path runs its tiles here."""
    batch: list[tuple[Key, torch.Tensor]] = []
    for piece in itertools.chain(pieces, [None]):  # None: the end, which runs the last, smaller batch
        if piece is not None:
            batch.append(piece)
        if batch and (piece is None or len(batch) == batch_size):
            out = forward(torch.stack([x for _, x in batch])).float().cpu()
            yield from zip((key for key, _ in batch), out, strict=True)
            batch = []


def predict_tiled(
    forward: Forward,
    image: torch.Tensor,
    num_outputs: int,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    progress: Progress | None = None,
) -> torch.Tensor:
    """(C, H, W) normalised image -> (num_outputs, H, W) blended logits; `progress` hears the tiles done."""
    if overlap >= tile:
        raise ValueError(f"overlap ({overlap}) must be smaller than the tile ({tile})")
    _, height, width = image.shape
    boxes = tile_boxes(height, width, tile, overlap)
    blended = Blend(num_outputs, width, boxes[0][2:], height)
    tiles = forward_batches(forward, ((box, crop(image, box)) for box in boxes), batch_size)
    for done, (box, logits) in enumerate(tiles, 1):
        blended.add(box, logits)
        tell(progress, done, len(boxes), "tiles")
    return blended.take()


def with_tta(forward: Forward, upright: bool = False) -> Forward:
    """Test-time augmentation: average the logits over flips (and the four 90-degree rotations
    when the input is square), each mapped back to the original orientation. An `upright` model
    (trained without vertical flips or turns: a street's sky stays above its road) sees only the
    left-right mirror, the one view its training showed it."""

    def augmented(x: torch.Tensor) -> torch.Tensor:
        views: list[tuple[Callable, Callable]] = [
            (lambda t: t, lambda t: t),
            (lambda t: t.flip(-1), lambda t: t.flip(-1)),
        ]
        if not upright:
            views.append((lambda t: t.flip(-2), lambda t: t.flip(-2)))
        if x.shape[-1] == x.shape[-2] and not upright:
            for k in (1, 2, 3):
                views.append((lambda t, k=k: t.rot90(k, (-2, -1)), lambda t, k=k: t.rot90(-k, (-2, -1))))
        total = None
        for apply, undo in views:
            out = undo(forward(apply(x)).float())
            total = out if total is None else total + out
        return total / len(views)

    return augmented
