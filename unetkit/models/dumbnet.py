"""DumbNet: the smallest network with U-Net's shape, one level deep.

Down once (3x3 stride-2 conv), up once (bilinear x2 + 3x3 conv), then a 1x1 head. No skip
connection, so it shows what the U-Net's skips add: DumbNet's masks come out blurred at edges.
"""

from __future__ import annotations

import torch
from torch import nn

from unetkit.models.blocks import ConvBNReLU, OutConv, pad_to_multiple


class DumbNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.size_multiple = 2
        self.down = ConvBNReLU(in_channels, width, stride=2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.conv = ConvBNReLU(width, width)
        self.head = OutConv(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (height, width) = pad_to_multiple(x, self.size_multiple)
        x = self.conv(self.up(self.down(x)))
        return self.head(x)[..., :height, :width]
