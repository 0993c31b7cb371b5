"""From image/mask file pairs to the tensors the model sees."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from unetkit.data.io import read_image, read_mask
from unetkit.data.mask_values import MaskValues
from unetkit.data.pairing import Pair
from unetkit.data.transforms import AugmentConfig, random_patch
from unetkit.errors import UnetkitError


def match_channels(image: np.ndarray, channels: int, path: Path) -> np.ndarray:
    """Give an (H, W, C) image the model's channel count: gray is repeated to RGB, RGB becomes
    luminance for a gray model."""
    have = image.shape[2]
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return np.repeat(image, 3, axis=2)
    if have == 3 and channels == 1:
        return (image @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[:, :, None]
    raise UnetkitError(
        f"{path}: image has {have} channels but the model takes {channels}; convert the images to gray or RGB"
    )


@dataclass
class Preprocess:
    """What happens to every image before the model, for training and prediction alike.
    Saved in the checkpoint so prediction repeats it exactly."""

    in_channels: int
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.25])
    scale: float = 1.0  # resize factor (0.5 = half size) applied before the model

    def resized_image(self, image: np.ndarray, path: Path) -> torch.Tensor:
        """(H, W, C) float image in [0, 1] -> (C, h, w) tensor at the model's scale, still in
        [0, 1]: augmentation (gamma, contrast) works on this, normalisation comes after."""
        image = match_channels(image, self.in_channels, path)
        tensor = torch.tensor(image.transpose(2, 0, 1))  # always a copy, so normalize can work in place
        if self.scale != 1.0:
            size = scaled_size(tensor.shape[-2:], self.scale)
            tensor = F.interpolate(tensor[None], size=size, mode="bilinear", antialias=True)[0]
        return tensor

    def normalize(self, tensor: torch.Tensor, in_place: bool = False) -> torch.Tensor:
        """Subtract the training set's channel means and divide by its standard deviations."""
        mean = torch.tensor(self.mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        return tensor.sub_(mean).div_(std) if in_place else (tensor - mean) / std

    def image_tensor(self, image: np.ndarray, path: Path) -> torch.Tensor:
        """(H, W, C) float image -> the normalised (C, h, w) tensor the model takes."""
        # resized_image returns a fresh copy, so normalise it in place: one image-sized copy fewer.
        return self.normalize(self.resized_image(image, path), in_place=True)

    def mask_tensor(self, class_ids: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(class_ids)
        if self.scale != 1.0:
            size = scaled_size(tensor.shape, self.scale)
            tensor = F.interpolate(tensor[None, None].float(), size=size, mode="nearest-exact")
            tensor = tensor[0, 0].to(torch.uint8)
        return tensor

    def to_dict(self) -> dict:
        return asdict(self)


def scaled_size(size: Sequence[int], scale: float) -> tuple[int, int]:
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def load_pair(pair: Pair, mask_values: MaskValues, preprocess: Preprocess) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one pair into (image (C, h, w) in [0, 1], class ids (h, w) uint8), checking it on the way."""
    image = read_image(pair.image)
    mask = read_mask(pair.mask)
    if image.shape[:2] != mask.shape:
        raise UnetkitError(
            f"{pair.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {pair.image.name} "
            f"is {image.shape[1]}x{image.shape[0]}; masks must be the same size as their images"
        )
    class_ids = mask_values.encode(mask, pair.mask)
    return preprocess.resized_image(image, pair.image), preprocess.mask_tensor(class_ids)


def channel_stats(pairs: Sequence[Pair], limit: int = 64) -> tuple[int, list[float], list[float]]:
    """Channel count (1 for gray, else 3) and per-channel mean/std of up to `limit` images."""
    images = [read_image(p.image) for p in pairs[:limit]]
    channels = 1 if all(img.shape[2] == 1 for img in images) else 3
    pixels = np.concatenate(
        [match_channels(img, channels, p.image).reshape(-1, channels) for img, p in zip(images, pairs, strict=True)]
    )
    mean = pixels.mean(axis=0)
    std = np.maximum(pixels.std(axis=0), 1e-3)
    return channels, [float(m) for m in mean], [float(s) for s in std]


def fits_in_memory(pairs: Sequence[Pair], preprocess: Preprocess, fraction: float = 0.3) -> bool:
    """Whether the decoded data set takes less than `fraction` of the machine's memory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return len(pairs) <= 256
    from PIL import Image

    need = 0
    for pair in pairs:
        try:
            with Image.open(pair.image) as img:
                width, height = img.size
        except Exception:  # TIFF and friends: assume a generous 2048^2
            width = height = 2048
        need += width * height * preprocess.scale**2 * (4 * preprocess.in_channels + 1)
    return need < fraction * total


class SegmentationDataset(Dataset):
    """Image/mask pairs as tensors.

    With `patch_size` each item is a random (augmented) patch, `patches_per_image` per image and
    epoch; without, each item is a whole image (validation). Decoded pairs are kept in memory when
    they fit, so only the first epoch reads files.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        mask_values: MaskValues,
        preprocess: Preprocess,
        patch_size: int | None = None,
        augment: AugmentConfig | None = None,
        patches_per_image: int = 1,
        cache: bool | None = None,
    ) -> None:
        self.pairs = list(pairs)
        self.mask_values = mask_values
        self.preprocess = preprocess
        self.patch_size = patch_size
        self.augment = augment
        self.patches_per_image = patches_per_image if patch_size else 1
        self.cache = fits_in_memory(self.pairs, preprocess) if cache is None else cache
        self._decoded: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.pairs) * self.patches_per_image

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index in self._decoded:
            return self._decoded[index]
        sample = load_pair(self.pairs[index], self.mask_values, self.preprocess)
        if self.cache:
            self._decoded[index] = sample
        return sample

    def check_all(self) -> None:
        """Decode every pair once, so bad files fail before training starts (and fill the cache)."""
        for index in range(len(self.pairs)):
            self.load(index)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.load(item % len(self.pairs))
        if self.patch_size is not None:
            image, mask = random_patch(image, mask, (self.patch_size, self.patch_size), self.augment)
        elif self.augment is not None:  # whole-image training is augmented too
            image, mask = random_patch(image, mask, tuple(image.shape[-2:]), self.augment)
        return self.preprocess.normalize(image), mask.long()
