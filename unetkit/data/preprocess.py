"""Preprocess, the input contract saved in every checkpoint: what happens to every image before
the model, in training and prediction alike, whole images and bands of a large one out of core.

    match_channels -> per-image percentiles (IMAGE_PERCENTILES) -> resize to the model's scale
    -> the training set's mean and std
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unetkit.data.io import is_photometric_rgb
from unetkit.errors import UnetkitError
from unetkit.runtime.notes import say, say_once

# An image's low and high percentiles per channel become 0 and 1 (clipped), as stardist and
# cellpose normalise fluorescence; the high end below 100 so a few hot pixels do not set the range.
# The fingerprint's brightness range (data/fingerprint.py) is measured between the same two.
IMAGE_PERCENTILES = (1.0, 99.8)


def channel_percentiles(image: np.ndarray, bounds: Sequence[float], pixels: int) -> np.ndarray:
    """(len(bounds), C): each channel's percentiles of an (H, W, C) image, from an evenly strided
    sample of about `pixels` pixels (exact percentiles of a 4096^2 image cost ~1 s a channel)."""
    step = sample_step(image.shape[0], image.shape[1], pixels)
    return np.percentile(image[::step, ::step].reshape(-1, image.shape[2]), bounds, axis=0)


def sample_step(height: int, width: int, pixels: int) -> int:
    """The stride of rows and columns that leaves about `pixels` of a height x width image."""
    return max(1, int(np.sqrt(height * width / pixels)))


def match_channels(image: np.ndarray, channels: int, path: Path) -> np.ndarray:
    """Give an (H, W, C) image the model's channel count: gray is repeated to RGB, and a colour
    photograph (photometric RGB) becomes its luminance for a gray model, each said once. Three channels
    that are not colour (a TIFF's C axis: three fluorescence stains) are refused: blended to
    luminance they would be predicted as an image the model never saw, with no word."""
    have = image.shape[2]
    if have == channels:
        return image
    if have == 1 and channels == 3:  # a gray photograph for a colour model: said, as the other way round
        say_once("gray", f"gray images are repeated to the 3 channels of this colour (RGB) model (first: {path})")
        return np.repeat(image, 3, axis=2)
    if have == 3 and channels == 1 and is_photometric_rgb(path):
        say_once(
            "luminance", f"colour (RGB) images are read as their luminance for this 1-channel model (first: {path})"
        )
        return (image @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[:, :, None]
    kind = " (channels of a TIFF's C axis, not RGB colour)" if have == 3 else ""
    raise UnetkitError(
        f"{path}: the image has {have} channel(s){kind} but the model was trained on {channels}-channel images; "
        "give it images with the channels it was trained on (e.g. save the channel it segments as its own file)"
    )


# Pixels the percentiles are estimated from: a 4096^2 image's exact percentiles cost ~1 s a channel,
# an evenly strided million pixels ~20 ms, within 0.2% of the range on dsb2018-dev.
PERCENTILE_PIXELS = 1_000_000


def percentile_scaled(image: np.ndarray, low: float, high: float, noted: Path | None = None) -> np.ndarray:
    """Each channel of an (H, W, C) image with its `low` and `high` percentiles mapped to 0 and 1,
    clipped to [0, 1]; a flat channel (no range) becomes 0. `noted`: the image's file, said if the
    image holds no signal above its noise (prediction)."""
    lo, hi = channel_percentiles(image, [low, high], PERCENTILE_PIXELS)
    if noted is not None:
        note_no_signal(hi - lo, channel_noise(image), noted)
    return range_scaled(image, lo, hi)


# An image none of whose channels spans more than NO_SIGNAL_RANGE times its pixel noise between those
# percentiles holds nothing but noise, which scaling by its percentiles stretches to full contrast:
# the shipped nuclei model found 450 nuclei in pure camera noise (a red-team round). Measured (range
# over pixel_noise): pure Poisson noise 4.9-5.2 at 3 to 2000 counts; dsb2018-dev's 64 px background
# crops a median of 4.8 (90% under 8.1); the images themselves 29.2 and up, ISBI's EM slices 10.1,
# CamVid 15.0, HC18 58.7: none of the 736 under 7 (benchmarks/NOTES.md, issue 36, nineteenth slice).
NO_SIGNAL_RANGE = 7.0
KEPT_DIFFERENCES = 0.9  # the largest tenth of the differences between neighbours are edges, not noise
TRUNCATED_STD = 0.7893  # a normal's std within its central 90%, in units of its own


def pixel_noise(channel: np.ndarray) -> float:
    """The noise of one (H, W) channel: the spread of the differences between neighbours along the
    rows (sampled rows of a large image), its largest tenth (edges) left out. A median absolute
    difference reads 0 on quantised 8-bit fluorescence, where most neighbours are equal."""
    step = max(1, channel.size // PERCENTILE_PIXELS)
    differences = np.diff(channel[::step].astype(np.float32), axis=1).ravel()
    if differences.size < 2:
        return 0.0
    size = np.abs(differences)
    kept = differences[size <= np.quantile(size, KEPT_DIFFERENCES)]
    return float(kept.std()) / TRUNCATED_STD / np.sqrt(2)  # a difference of two pixels has twice the variance


def channel_noise(image: np.ndarray) -> np.ndarray:
    """(C,): pixel_noise of each channel of an (H, W, C) image."""
    return np.array([pixel_noise(image[..., c]) for c in range(image.shape[2])])


def note_no_signal(ranges: np.ndarray, noise: np.ndarray, path: Path) -> None:
    """Say where no channel spans more than NO_SIGNAL_RANGE times its noise (`ranges`: each
    channel's brightness range between the percentiles, `noise`: its channel_noise)."""
    spans = [float(r) / n if n > 0 else (np.inf if r > 0 else 0.0) for r, n in zip(ranges, noise, strict=True)]
    if max(spans) < NO_SIGNAL_RANGE:
        say(
            f"{path}: no signal above its noise: its brightness range is {max(spans):.1f} times its pixel noise "
            "(pure noise ~5, fluorescence images with nuclei 29 or more). Scaled by its own percentiles, the noise "
            "fills the whole range, so what the model finds in it may be noise"
        )


def range_scaled(image: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Each channel of an (H, W, C) image with `lo` and `hi` (per channel) mapped to 0 and 1, clipped."""
    lo, hi = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
    span = np.where(hi > lo, hi - lo, np.inf).astype(np.float32)
    return np.clip((image - lo) / span, 0.0, 1.0).astype(np.float32)


@dataclass
class Preprocess:
    """What happens to every image before the model, for training and prediction alike.
    Saved in the checkpoint so prediction repeats it exactly."""

    in_channels: int
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.25])
    scale: float = 1.0  # resize factor (0.5 = half size) applied before the model
    # Per image, each channel's low and high percentile become 0 and 1 (clipped) before anything
    # else, as stardist and cellpose normalise fluorescence; None: the type's range only.
    percentiles: list[float] | None = None

    def resized_image(self, image: np.ndarray, path: Path, predicting: bool = False) -> torch.Tensor:
        """(H, W, C) float image in [0, 1] -> (C, h, w) tensor at the model's scale, still in
        [0, 1]: augmentation (gamma, contrast) works on this, normalisation comes after."""
        tensor = self._channels_and_range(image, path, predicting=predicting)
        if self.scale != 1.0:
            size = scaled_size(tensor.shape[-2:], self.scale)
            tensor = F.interpolate(tensor[None], size=size, mode="bilinear", antialias=True)[0]
        return tensor

    def band_tensor(self, band: np.ndarray, path: Path, ranges: np.ndarray | None) -> torch.Tensor:
        """A band of rows of a large image (out of core), read at the model's scale already: as
        image_tensor, with each channel's percentile range (2, C) measured over the whole image."""
        return self.normalize(self._channels_and_range(band, path, ranges), in_place=True)

    def _channels_and_range(
        self, image: np.ndarray, path: Path, ranges: np.ndarray | None = None, predicting: bool = False
    ) -> torch.Tensor:
        """The model's channels, scaled by the image's percentiles (or the given ranges), as a
        (C, H, W) tensor: always a copy, so normalize can work in place. `predicting`: an image of
        no signal is said (note_no_signal)."""
        image = match_channels(image, self.in_channels, path)
        if ranges is not None:
            image = range_scaled(image, *ranges)
        elif self.percentiles is not None:
            image = percentile_scaled(image, *self.percentiles, noted=path if predicting else None)
        return torch.tensor(image.transpose(2, 0, 1))

    def normalize(self, tensor: torch.Tensor, in_place: bool = False) -> torch.Tensor:
        """Subtract the training set's channel means and divide by its standard deviations."""
        mean = torch.tensor(self.mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        return tensor.sub_(mean).div_(std) if in_place else (tensor - mean) / std

    def image_tensor(self, image: np.ndarray, path: Path) -> torch.Tensor:
        """(H, W, C) float image -> the normalised (C, h, w) tensor the model takes."""
        # resized_image returns a fresh copy, so normalise it in place: one image-sized copy fewer.
        return self.normalize(self.resized_image(image, path, predicting=True), in_place=True)

    def mask_tensor(self, class_ids: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(class_ids)
        if self.scale != 1.0:
            size = scaled_size(tensor.shape, self.scale)
            tensor = F.interpolate(tensor[None, None].float(), size=size, mode="nearest-exact")
            tensor = tensor[0, 0].to(torch.uint8)
        return tensor

    def label_tensor(self, labels: np.ndarray) -> torch.Tensor:
        """An (H, W) label image at the model's scale (nearest neighbour: ids stay ids)."""
        tensor = torch.from_numpy(labels.astype(np.int64))
        if self.scale != 1.0:
            size = scaled_size(tensor.shape, self.scale)
            tensor = F.interpolate(tensor[None, None].double(), size=size, mode="nearest-exact")[0, 0].long()
        return tensor

    def to_dict(self) -> dict:
        return asdict(self)


def scaled_size(size: Sequence[int], scale: float) -> tuple[int, int]:
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
