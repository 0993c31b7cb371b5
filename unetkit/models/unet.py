"""U-Net (Ronneberger, Fischer & Brox, 2015): an encoder that halves the size and doubles the
channels `depth` times, a decoder that climbs back, and skip connections that carry each encoder
level's detail across to the decoder level of the same size.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from unetkit.models.blocks import DoubleConv, Down, OutConv, Up, Upsampling, pad_to_multiple
from unetkit.models.registry import constructor_defaults, given, register_model


@register_model
class UNet(nn.Module):
    name = "unet"
    DEFAULT_DEPTH = 4

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        base_channels: int = 64,
        depth: int = DEFAULT_DEPTH,
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

    @classmethod
    def arguments(cls, options: Any, in_channels: int, num_classes: int) -> dict[str, Any]:
        chosen = given(base_channels=options.base_channels, depth=options.depth, upsampling=options.upsampling)
        return {"in_channels": in_channels, "num_classes": num_classes, **chosen}

    @classmethod
    def options(cls, args: dict[str, Any]) -> dict[str, Any]:
        defaults = constructor_defaults(cls)
        return {key: args.get(key, defaults[key]) for key in ("base_channels", "depth", "upsampling")}

    @classmethod
    def min_input_size(cls, args: dict[str, Any]) -> int:
        """Every level halves the size, and the bottleneck needs 2x2 pixels so that BatchNorm sees
        more than one value with batch size 1."""
        return 2 ** (args.get("depth", cls.DEFAULT_DEPTH) + 1)

    @classmethod
    def probe_channels(cls, args: dict[str, Any]) -> int:
        return args.get("base_channels", 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (height, width) = pad_to_multiple(x, self.size_multiple)
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.outc(x)[..., :height, :width]
