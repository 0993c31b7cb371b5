"""DumbNet: the smallest network with U-Net's shape, one level deep.

Down once (3x3 stride-2 conv), up once (bilinear x2 + 3x3 conv), then a 1x1 head. No skip
connection, so it shows what the U-Net's skips add: DumbNet's masks come out blurred at edges.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from unetkit.models.blocks import ConvBNReLU, OutConv, pad_to_multiple
from unetkit.models.registry import constructor_defaults, given, register_model


@register_model
class DumbNet(nn.Module):
    name = "dumbnet"

    def __init__(self, in_channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.size_multiple = 2
        self.down = ConvBNReLU(in_channels, width, stride=2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.conv = ConvBNReLU(width, width)
        self.head = OutConv(width, num_classes)

    @classmethod
    def arguments(cls, options: Any, in_channels: int, num_classes: int) -> dict[str, Any]:
        """Its one level's width is the --base-channels option."""
        return {"in_channels": in_channels, "num_classes": num_classes, **given(width=options.base_channels)}

    @classmethod
    def options(cls, args: dict[str, Any]) -> dict[str, Any]:
        return {"base_channels": args.get("width", constructor_defaults(cls)["width"])}

    @classmethod
    def min_input_size(cls, args: dict[str, Any]) -> int:
        return 4  # one stride-2 level, then 2x2 pixels for BatchNorm

    @classmethod
    def probe_channels(cls, args: dict[str, Any]) -> int:
        return args.get("width", 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (height, width) = pad_to_multiple(x, self.size_multiple)
        x = self.conv(self.up(self.down(x)))
        return self.head(x)[..., :height, :width]
