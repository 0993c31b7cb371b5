"""U-Net (Ronneberger, Fischer & Brox, 2015): an encoder that halves the size and doubles the
channels `depth` times, a decoder that climbs back, and skip connections that carry each encoder
level's detail across to the decoder level of the same size.
"""

from __future__ import annotations

import torch
from torch import nn

from unetkit.models.blocks import DoubleConv, Down, OutConv, Up, Upsampling, pad_to_multiple


class UNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        base_channels: int = 64,
        depth: int = 4,
        upsampling: Upsampling = "transposed",
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        self.depth = depth
        self.size_multiple = 2**depth  # each level halves the size
        widths = [base_channels * 2**level for level in range(depth + 1)]
        # Bilinear upsampling has no learned channel reduction, so the bottleneck is halved
        # to keep the decoder's concatenations the same width as the transposed variant.
        bottom = widths[-1] // 2 if upsampling == "bilinear" else widths[-1]

        self.inc = DoubleConv(in_channels, widths[0])
        self.downs = nn.ModuleList(Down(widths[i], widths[i + 1] if i + 1 < depth else bottom) for i in range(depth))
        ups = []
        below = bottom
        for level in reversed(range(depth)):
            out = widths[level]
            if upsampling == "bilinear" and level > 0:
                out //= 2
            ups.append(Up(below, widths[level], out, upsampling))
            below = out
        self.ups = nn.ModuleList(ups)
        self.outc = OutConv(widths[0], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (height, width) = pad_to_multiple(x, self.size_multiple)
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.outc(x)[..., :height, :width]
