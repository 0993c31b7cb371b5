"""Prediction on images of any size in bounded memory: overlapping tiles, run in batches, their
logits blended with a Gaussian window so tile borders (where a conv net sees the least context)
count least. Memory is the tile batch plus the output, never the whole image through the model."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from tqdm.auto import tqdm

Forward = Callable[[torch.Tensor], torch.Tensor]  # (N, C, h, w) -> (N, K, h, w) float32 logits


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


def tile_boxes(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(top, left, tile height, tile width) of every tile; tiles are clipped to small images."""
    th, tw = min(tile, height), min(tile, width)
    return [(top, left, th, tw) for top in tile_starts(height, th, overlap) for left in tile_starts(width, tw, overlap)]


def blend(
    logits: torch.Tensor, weights: torch.Tensor, top: int, left: int, tile: torch.Tensor, window: torch.Tensor
) -> None:
    """Add one tile's (K, h, w) logits, weighted by `window`, into the sums at (top, left); the
    blended logits are logits / weights once every tile is in."""
    height, width = window.shape
    logits[:, top : top + height, left : left + width] += tile * window
    weights[top : top + height, left : left + width] += window


def _batches(boxes: list, size: int) -> Iterator[list]:
    for start in range(0, len(boxes), size):
        yield boxes[start : start + size]


def predict_tiled(
    forward: Forward,
    image: torch.Tensor,
    num_outputs: int,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    progress: bool = False,
) -> torch.Tensor:
    """(C, H, W) normalised image -> (num_outputs, H, W) blended logits."""
    if overlap >= tile:
        raise ValueError(f"overlap ({overlap}) must be smaller than the tile ({tile})")
    _, height, width = image.shape
    boxes = tile_boxes(height, width, tile, overlap)
    window = gaussian_window(boxes[0][2], boxes[0][3])
    logits = torch.zeros(num_outputs, height, width)
    weights = torch.zeros(height, width)
    with tqdm(total=len(boxes), desc="tiles", unit="tile", disable=not progress, leave=False) as bar:
        for batch in _batches(boxes, batch_size):
            crops = torch.stack([image[:, t : t + h, x : x + w] for t, x, h, w in batch])
            out = forward(crops).float().cpu()
            for (top, left, _, _), tile_logits in zip(batch, out, strict=True):
                blend(logits, weights, top, left, tile_logits, window)
            bar.update(len(batch))
    return logits / weights


def with_tta(forward: Forward) -> Forward:
    """Test-time augmentation: average the logits over flips (and the four 90-degree rotations
    when the input is square), each mapped back to the original orientation."""

    def augmented(x: torch.Tensor) -> torch.Tensor:
        views: list[tuple[Callable, Callable]] = [
            (lambda t: t, lambda t: t),
            (lambda t: t.flip(-1), lambda t: t.flip(-1)),
            (lambda t: t.flip(-2), lambda t: t.flip(-2)),
        ]
        if x.shape[-1] == x.shape[-2]:
            for k in (1, 2, 3):
                views.append((lambda t, k=k: t.rot90(k, (-2, -1)), lambda t, k=k: t.rot90(-k, (-2, -1))))
        total = None
        for apply, undo in views:
            out = undo(forward(apply(x)).float())
            total = out if total is None else total + out
        return total / len(views)

    return augmented
