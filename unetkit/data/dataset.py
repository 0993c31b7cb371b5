"""From image/mask file pairs to the tensors the model sees in training (the input contract,
Preprocess, is data/preprocess.py: prediction reads it without this module)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from unetkit.data.mask_values import IGNORE_ID, MaskValues
from unetkit.data.pairing import Pair
from unetkit.data.preprocess import Preprocess
from unetkit.data.transforms import AugmentConfig, random_patch
from unetkit.data.weight_map import border_weights
from unetkit.runtime.hardware import memory_bytes
from unetkit.runtime.threads import parallel_map


def load_pair(
    pair: Pair, mask_values: MaskValues, preprocess: Preprocess, with_objects: bool = False
) -> tuple[torch.Tensor, ...]:
    """Decode one pair into (image (C, h, w) in [0, 1], class ids (h, w) uint8), checking it on the
    way; `with_objects` adds the mask's objects (h, w) int64 (objects.mask_objects)."""
    image, mask = pair.read()
    class_ids = mask_values.encode(mask, pair.mask)
    loaded = (preprocess.resized_image(image, pair.image), preprocess.mask_tensor(class_ids))
    if not with_objects:
        return loaded
    objects = mask_values.true_objects(mask, class_ids)
    return (*loaded, preprocess.label_tensor(objects))


def decoded_bytes(pairs: Sequence[Pair], preprocess: Preprocess) -> float:
    """Memory the decoded pairs take at the model's scale (float32 image, uint8 mask), from headers."""
    from PIL import Image

    need = 0.0
    for pair in pairs:
        try:
            with Image.open(pair.image) as img:
                width, height = img.size
        except Exception:  # TIFF and friends: assume a generous 2048^2
            width = height = 2048
        need += width * height * preprocess.scale**2 * (4 * preprocess.in_channels + 1)
    return need


def class_locations(class_ids: torch.Tensor, classes: Sequence[int], seed: int, per_class: int = 256) -> dict:
    """Up to `per_class` random (y, x) positions of each listed class present in a mask: the
    centres that class-balanced patch sampling draws from."""
    flat = class_ids.reshape(-1).numpy()
    rng = np.random.default_rng(seed)
    width = class_ids.shape[-1]
    found = {}
    for class_id in classes:
        where = np.flatnonzero(flat == class_id)
        if len(where):
            picked = rng.choice(where, size=min(per_class, len(where)), replace=False)
            found[class_id] = torch.from_numpy(np.stack([picked // width, picked % width], axis=1))
    return found


def pad_collate(batch: Sequence[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """Stack images of different sizes: pad each to the batch's largest height and width, images
    with 0 (the normalised mean) and masks with IGNORE_ID, so padding counts for nothing in the
    loss (and pixel weight maps, when the items have them, with 0)."""
    height = max(item[0].shape[-2] for item in batch)
    width = max(item[0].shape[-1] for item in batch)
    images = torch.zeros(len(batch), batch[0][0].shape[0], height, width, dtype=batch[0][0].dtype)
    masks = torch.full((len(batch), height, width), IGNORE_ID, dtype=batch[0][1].dtype)
    weights = torch.zeros(len(batch), height, width) if len(batch[0]) > 2 else None
    for index, (image, mask, *weight) in enumerate(batch):
        images[index, :, : image.shape[-2], : image.shape[-1]] = image
        masks[index, : mask.shape[-2], : mask.shape[-1]] = mask
        if weights is not None:
            weights[index, : mask.shape[-2], : mask.shape[-1]] = weight[0]
    return (images, masks) if weights is None else (images, masks, weights)


CACHE_SHARE = 0.3  # of the machine's memory, for decoded pairs (--cache-gb's default)


class SegmentationDataset(Dataset):
    """Image/mask pairs as tensors.

    With `patch_size` each item is a random (augmented) patch, `patches_per_image` per image and
    epoch; without, each item is a whole image (validation), `patches_per_image` augmented views
    of it in training, as many as the recipe counts at the largest image (train/recipes.py): one
    corrected image made an epoch of one step of batch 1 under a printed "batch_size=4,
    patches_per_image=96" (a red-team round). A `sampled_classes` list makes
    `class_fraction` of the patches centre on a pixel of one of those classes present in the image
    (chosen uniformly), as nnU-Net centres a third of its patches on foreground: rare classes are
    seen in every few batches instead of every few epochs. Decoded pairs are kept in memory while
    they fit in `cache_bytes` (default 30% of the machine's memory), so only the first epoch reads
    files; beyond it every item is decoded from its file (lazy decoding). With `border_weights`
    (w0, sigma), each item also has the U-Net paper's border term (weight_map.py), computed once
    per mask at the model's scale, kept with the decoded pair and moved with every patch.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        mask_values: MaskValues,
        preprocess: Preprocess,
        patch_size: int | None = None,
        augment: AugmentConfig | None = None,
        patches_per_image: int = 1,
        cache_bytes: float | None = None,
        sampled_classes: Sequence[int] = (),
        class_fraction: float = 1 / 3,
        border_weights: tuple[float, float] | None = None,
    ) -> None:
        self.pairs = list(pairs)
        self.mask_values = mask_values
        self.preprocess = preprocess
        self.patch_size = patch_size
        self.augment = augment
        self.patches_per_image = patches_per_image
        limit = CACHE_SHARE * memory_bytes() if cache_bytes is None else cache_bytes
        self.cache = decoded_bytes(self.pairs, preprocess) <= limit
        self.sampled_classes = list(sampled_classes) if patch_size else []
        self.class_fraction = class_fraction
        self.border_weights = border_weights
        self._decoded: dict[int, tuple[torch.Tensor, torch.Tensor, dict, torch.Tensor | None]] = {}

    def __len__(self) -> int:
        return len(self.pairs) * self.patches_per_image

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._load(index)[:2]

    def _load(self, index: int) -> tuple[torch.Tensor, torch.Tensor, dict, torch.Tensor | None]:
        if index in self._decoded:
            return self._decoded[index]
        image, mask, *objects = load_pair(
            self.pairs[index], self.mask_values, self.preprocess, with_objects=self.border_weights is not None
        )
        locations = class_locations(mask, self.sampled_classes, seed=index) if self.sampled_classes else {}
        weights = None
        if self.border_weights is not None:
            weights = torch.from_numpy(border_weights(objects[0].numpy(), *self.border_weights))
        if self.cache:
            self._decoded[index] = (image, mask, locations, weights)
        return image, mask, locations, weights

    def check_all(self, workers: int | None = None) -> None:
        """Decode every pair once, in parallel threads, so bad files fail before training starts
        (and the cache is filled); without the cache nothing decoded is kept."""

        def decode(index: int) -> None:
            self._load(index)

        parallel_map(decode, range(len(self.pairs)), workers)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, ...]:
        """(image, class ids), and the pixel weights with `border_weights`."""
        image, mask, locations, weights = self._load(item % len(self.pairs))
        sample: tuple[torch.Tensor, ...] = (image, mask) if weights is None else (image, mask, weights)
        if self.patch_size is not None:
            center = None
            if locations and float(torch.rand(1)) < self.class_fraction:
                classes = sorted(locations)
                chosen = locations[classes[int(torch.randint(len(classes), (1,)))]]
                center = tuple(chosen[int(torch.randint(len(chosen), (1,)))].tolist())
            sample = random_patch(image, mask, (self.patch_size, self.patch_size), self.augment, center, weights)
        elif self.augment is not None:  # whole-image training is augmented too
            sample = random_patch(image, mask, tuple(image.shape[-2:]), self.augment, None, weights)
        return self.preprocess.normalize(sample[0]), sample[1].long(), *sample[2:]
