"""Joint image/mask augmentation, all on torch tensors and all drawn from torch's RNG (so a seed
and the saved RNG state reproduce a run exactly).

The geometric part is one resampling: a random scale, flip and 90-degree rotation become one affine
grid, the U-Net paper's elastic deformation (smooth random displacements from a coarse 3x3 grid)
is added to it, and a single grid_sample moves the image (bilinear) and the mask (nearest) together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    flips: bool = True  # left-right
    vertical_flips: bool = True  # off, with rotate90, for upright scenes (sky above road)
    rotate90: bool = True
    scale_range: tuple[float, float] = (0.8, 1.25)
    elastic_sigma_px: float = 10.0  # std of the coarse-grid displacements, in output pixels
    elastic_grid: int = 3
    brightness: float = 0.1
    contrast: float = 0.2
    gamma: float = 0.2
    colour: float = 0.0  # each channel's own gain in [1 - colour, 1 + colour]: another light's tint
    blur: float = 0.0  # Gaussian blur of up to this sigma (px), half the time: another lens or focus


# Photometric augmentation strong enough for a scene the training set never saw (another street,
# another day's light): camvid-dev's unseen street, benchmarks/NOTES.md (issue 23).
STRONG_PHOTOMETRIC = {"brightness": 0.25, "contrast": 0.4, "gamma": 0.3, "colour": 0.15, "blur": 1.5}


def random_patch_grid(
    source_hw: tuple[int, int],
    patch_hw: tuple[int, int],
    aug: AugmentConfig | None,
    center: tuple[int, int] | None = None,
) -> torch.Tensor:
    """A (1, h, w, 2) sampling grid, in grid_sample's [-1, 1] coordinates of the source image,
    for a randomly placed (and, with `aug`, randomly scaled/flipped/rotated/warped) patch; with
    `center` (y, x), the patch is centred on that pixel, moved only as far as keeps it inside."""
    src_h, src_w = source_hw
    out_h, out_w = patch_hw
    scale = 1.0
    if aug is not None and aug.scale_range != (1.0, 1.0):
        lo, hi = aug.scale_range
        scale = float(torch.empty(1).uniform_(lo, hi))  # >1 zooms in: the patch covers less source
    # Half-size of the patch in source pixels; the centre is drawn so the patch stays inside the
    # image where it fits (reflection padding covers the rest).
    half_h, half_w = out_h / scale / 2, out_w / scale / 2
    if center is None:
        cy, cx = _uniform_center(src_h, half_h), _uniform_center(src_w, half_w)
    else:
        cy, cx = _clamped_center(center[0] + 0.5, src_h, half_h), _clamped_center(center[1] + 0.5, src_w, half_w)

    ys = torch.linspace(-1, 1, out_h) * (half_h - 0.5 / scale)
    xs = torch.linspace(-1, 1, out_w) * (half_w - 0.5 / scale)
    offset_y, offset_x = torch.meshgrid(ys, xs, indexing="ij")  # source-pixel offsets from centre

    if aug is not None:
        if aug.rotate90 and out_h == out_w:
            turns = int(torch.randint(0, 4, (1,)))
            for _ in range(turns):
                offset_y, offset_x = -offset_x, offset_y
        if aug.flips:
            if torch.rand(1) < 0.5:
                offset_x = -offset_x
            if aug.vertical_flips and torch.rand(1) < 0.5:
                offset_y = -offset_y
        if aug.elastic_sigma_px > 0:
            coarse = torch.randn(1, 2, aug.elastic_grid, aug.elastic_grid) * aug.elastic_sigma_px
            field = F.interpolate(coarse, size=(out_h, out_w), mode="bicubic", align_corners=True)
            offset_y = offset_y + field[0, 0] / scale
            offset_x = offset_x + field[0, 1] / scale

    # Pixel centres -> normalised coordinates (align_corners=False convention).
    grid_y = (cy + offset_y) / src_h * 2 - 1
    grid_x = (cx + offset_x) / src_w * 2 - 1
    return torch.stack([grid_x, grid_y], dim=-1)[None]


def _uniform_center(size: int, half: float) -> float:
    if size <= 2 * half:
        return size / 2
    # An integer start keeps an unscaled, unwarped patch on exact pixel centres (no resampling blur).
    start = int(torch.randint(0, int(size - 2 * half) + 1, (1,)))
    return start + half


def _clamped_center(wanted: float, size: int, half: float) -> float:
    if size <= 2 * half:
        return size / 2
    start = min(max(round(wanted - half), 0), int(size - 2 * half))  # integer: no resampling blur
    return start + half


def apply_grid(image: torch.Tensor, mask: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample image (C, H, W) bilinearly and mask (H, W) by nearest neighbour on one grid."""
    image = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]
    mask = F.grid_sample(
        mask[None, None].float(), grid, mode="nearest", padding_mode="reflection", align_corners=False
    )[0, 0].to(mask.dtype)
    return image, mask


def jitter_intensity(image: torch.Tensor, aug: AugmentConfig) -> torch.Tensor:
    """Random blur, channel gains, gamma, contrast and brightness on a (C, H, W) image in [0, 1]."""
    if aug.blur > 0 and torch.rand(1) < 0.5:
        image = gaussian_blur(image, float(torch.empty(1).uniform_(0.3, aug.blur)))
    if aug.colour > 0:
        gains = torch.empty(image.shape[0], 1, 1).uniform_(1 - aug.colour, 1 + aug.colour)
        image = image * gains
    if aug.gamma > 0:
        gamma = float(torch.empty(1).uniform_(1 - aug.gamma, 1 + aug.gamma))
        image = image.clamp(0, 1) ** gamma
    if aug.contrast > 0:
        contrast = float(torch.empty(1).uniform_(1 - aug.contrast, 1 + aug.contrast))
        mean = image.mean()
        image = (image - mean) * contrast + mean
    if aug.brightness > 0:
        image = image + float(torch.empty(1).uniform_(-aug.brightness, aug.brightness))
    return image


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """(C, H, W) image blurred by a separable Gaussian of `sigma` px, edges reflected."""
    radius = max(1, math.ceil(2.5 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=image.dtype) / sigma) ** 2)
    taps = taps / taps.sum()
    channels = image.shape[0]
    out = F.pad(image[None], (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    out = F.conv2d(out, taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return out[0]


def random_patch(
    image: torch.Tensor,
    mask: torch.Tensor,
    patch_hw: tuple[int, int],
    aug: AugmentConfig | None,
    center: tuple[int, int] | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A training sample: a random patch of image (C, H, W) and mask (H, W), augmented if asked,
    centred on `center` (y, x) if given; with `weights` (H, W), a pixel weight map (the U-Net
    paper's), that map moved with them (bilinearly, as a last image channel) as a third item."""
    grid = random_patch_grid(tuple(image.shape[-2:]), patch_hw, aug, center)
    if weights is not None:
        image = torch.cat([image, weights[None]])
    image, mask = apply_grid(image, mask, grid)
    if weights is not None:
        image, weights = image[:-1], image[-1]
    if aug is not None:
        image = jitter_intensity(image, aug)
    return (image, mask) if weights is None else (image, mask, weights)
