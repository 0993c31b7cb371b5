"""Bilinear resizing of an image that arrives a band of rows at a time, top to bottom, as the
out-of-core path makes it: the same numbers as `F.interpolate(mode="bilinear",
align_corners=False)` on the whole image, without the whole image.

Bilinear weights are a product of one weight per axis, so each band is first resized across
(every column is there), then each output row is mixed from its two source rows; a band's last
rows are held back until the rows below them arrive."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class RowResampler:
    """Feed (K, h, source width) bands with `add`; each call returns the (K, m, width) output
    rows that the rows seen so far determine (m may be 0)."""

    def __init__(self, source_height: int, height: int, width: int) -> None:
        self.source_height, self.height, self.width = source_height, height, width
        self.scale = source_height / height  # as PyTorch: input size / output size
        self.rows: torch.Tensor | None = None  # source rows [top, top + len), resized across
        self.top = 0
        self.received = 0  # source rows seen
        self.next = 0  # the next output row

    def add(self, band: torch.Tensor) -> torch.Tensor:
        if not band.shape[1]:
            return band.new_zeros(band.shape[0], 0, self.width)
        across = F.interpolate(band[None], size=(band.shape[1], self.width), mode="bilinear", align_corners=False)[0]
        self.rows = across if self.rows is None else torch.cat([self.rows, across], dim=1)
        self.received += band.shape[1]
        source = self.source_rows(torch.arange(self.next, self.height))
        first = source.floor().long()
        second = (first + 1).clamp_max(self.source_height - 1)
        ready = int((second < self.received).sum())  # rows are in order: a prefix is ready
        first, second = first[:ready], second[:ready]
        weight = (source[:ready] - first)[None, :, None]
        out = self.rows[:, first - self.top] * (1 - weight) + self.rows[:, second - self.top] * weight
        self.next += ready
        if self.next < self.height:  # keep the rows from the next output row's first source row on
            keep = min(int(self.source_rows(torch.tensor([self.next]))[0]), self.received)
            self.rows, self.top = self.rows[:, keep - self.top :], keep
        return out

    def source_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Where output rows sample the source, as PyTorch computes it: a float32 scale, and
        (row + 0.5) * scale - 0.5 rounded once (its kernel's fused multiply-add)."""
        scale = float(torch.tensor(self.scale, dtype=torch.float32))
        return ((rows.double() + 0.5) * scale - 0.5).float().clamp_min(0)
