"""Recipes: the model size, patch, batch, resolution, learning rate and class weights picked from
the data set fingerprint (unetkit/data/fingerprint.py) and the machine, for whatever the user did
not set, as nnU-Net plans from its fingerprint, but aimed at the best model in the time at hand
rather than the best model at any cost.

  paper: the U-Net paper's network (64 base channels, 4 levels, transposed convolutions, 31M
         parameters for one channel in, two classes out), elastic deformation.
  fast:  16 base channels and bilinear upsampling (~1M parameters, ~16x fewer FLOPs), LR 4e-3,
         no elastic deformation in short runs.
  auto:  paper on a CUDA GPU, fast on a CPU.
Both take the data's rules below: resolution, patch, normalisation, orientation, sampling, class
and border weights. (The paper recipe kept full resolution and 256 px patches whatever the data
until issue 23: on HC18 that plan scored head Dice 0.79 where the data's scale scores 0.97.) The
rules were measured with the fast recipe on CPUs; on a GPU they are unmeasured.

The resolution is the largest of two needs, measured on the masks:
- thin structures keep their pixels: the thinnest class (median distance to its edge, among
  classes with at least THIN_SHARE of the pixels) stays >= THIN_HALF_WIDTH pixels at the model's
  scale. ISBI membranes (2.0 px, 22% of the pixels) keep full resolution: on ISBI, 256 px crops
  at full size beat whole slices at half size for the same compute (membrane Dice 0.80 vs
  0.77-0.78 after 90 fp32 seconds), because a 2-3 px membrane is 1 px wide at half size. A thin
  class rarer than that does not hold the whole model at full size: CamVid's poles (1 px, 1% of
  the pixels) did, and on camvid-dev's unseen street 5 minutes scored mIoU 0.22-0.27 at full size
  (256 px crops, poles at IoU 0), 0.31 at half size, 0.37 at 3/8 and 0.35 at 1/4 (whole frames,
  3.5x the epochs of half size; poles 0.05, no class at 0): what the epochs buy outweighs the
  pixels a rare thin class loses (benchmarks/NOTES.md, issue 23);
- large objects fit in half a patch: the largest object (median over the masks of the biggest
  region's longer side) of the classes but the background, a class of over half the pixels (in
  a street scene no class is: its road is an object too), spans at most half a patch side, so a patch
  sees it whole with context around it, and the 4-level U-Net's receptive field (~180 px) spans
  it. HC18 heads span ~450 of 800 px: head Dice after 5 fp32 minutes on a 2-core AVX2 CPU was
  0.840 at scale 0.5 and 0.963 at 0.25 (256 px patches at full resolution: 0.79, issue 10);
  the time is all in the model's convolutions, so a quarter of the pixels is 4x the epochs.
Then the scale is rounded down to a multiple of 1/8, so that nearby data sets get the same plan.
Images that are no larger than one 256x256 patch at that scale train whole (batches padded to the
largest); larger ones train on patches, a third of them centred on the rarer classes, of 128 px
where the largest object fits in half of that (SMALL_PATCH_SIDE), else 256.

Normalisation (both recipes): one mean and std a channel over the set, unless some channel's
brightness range (1st to 99.8th percentile) is BRIGHTNESS_SPREAD times wider in the 95th-percentile
image than in the 5th (DataFingerprint.brightness_spread), as in fluorescence whose exposure or
staining varies from image to image: then each image's channels are scaled by their own
percentiles, as stardist and cellpose do. The train splits spread 1.2-1.4 (ISBI 1.36, HC18 1.33,
CamVid 1.24) and keep the mean and std (per-image percentiles not measured there); dsb2018-dev
spreads 7.3, and with 128 px patches per-image percentiles scored AP@0.5 0.856 against 0.835 in
10 minutes (with the older 256 px recipe they had lost, -0.011); dsb2018-dev-spread, the same
images dimmed 1 to 100-fold: 0.845 against 0.668 in 5 minutes (benchmarks/NOTES.md, issue 22).
Images that do not fill the range they are read in (UNIT_RANGE: 12-bit data in 16-bit files, float
counts in the thousands) are scaled by their own percentiles too, as the augmentation assumes.

Border weights (both recipes): the U-Net paper's weight map (w0 = 10, data/weight_map.py) for data
sets whose objects a person would count: two classes (cells and membranes, nuclei and
background) or instance masks trained without an edge class; off for scene classes and for the
edge and centre classes of instance targets, which separate touching objects themselves. On the
demo's validation slices 22-24 (130 s runs) it moved the adapted Rand error of the cells from
0.070 to 0.062 with cell Dice unchanged (0.949); with a single object per image (HC18) it weighs
nothing.

Class weights (both recipes) are 1/sqrt(pixel fraction), normalised to a pixel-weighted mean of 1
and capped at MAX_CLASS_WEIGHT times the smallest: ISBI's membranes (22% of pixels) get 1.9x the
cells' weight, the hand-set 2:1 the demo used before; CamVid's poles 6.5x the road's.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from unetkit.data.fingerprint import DataFingerprint
from unetkit.data.mask_values import MaskValues
from unetkit.models.registry import model_class
from unetkit.train.config import ARCHITECTURE_OPTIONS, RECIPES, TrainConfig
from unetkit.train.encoder_weights import pretrained
from unetkit.train.option_layers import fill_unset

__all__ = ["RECIPES", "apply_recipe"]
# A pretrained encoder learns at a tenth of the decoder's rate (--encoder-lr), as fine-tuning an
# ImageNet backbone usually does; not measurable here (no ImageNet weights offline). An hc18-dev
# encoder on isbi2012 scored the same at 0, 0.1 and 1 (membrane Dice 0.802-0.814, one run each;
# benchmarks/NOTES.md, issue 37).
PRETRAINED_ENCODER_LR = 0.1
SHORT_RUN_SECONDS = 15 * 60  # elastic deformation pays off only in longer runs
PATCH_SIDE = 256
# Where every object fits in half of it, patches are this small, and four times as many of them
# make an epoch: as many pixels, four times the optimizer steps. dsb2018-dev (nuclei up to 43 px),
# 10 CPU minutes: AP@0.5 0.824 with 256 px patches, 0.834 and 0.835 with 128 px (two runs),
# validation Dice 0.736 -> 0.748 (benchmarks/NOTES.md, issue 21).
SMALL_PATCH_SIDE = 128
THIN_HALF_WIDTH = 2.0  # px at the model's scale for the thinnest class
THIN_SHARE = 0.05  # thin classes rarer than this do not hold the resolution up (docstring)
MAX_CLASS_WEIGHT = 10.0
BORDER_WEIGHT = 10.0  # the U-Net paper's w0
UPRIGHT_SHIFT = 0.15  # a class's mean height this far from the middle marks an upright data set
# Images this many times brighter than others: each is normalised on its own. Between the sets that
# keep the mean and std (1.2-1.4) and dsb2018-dev (7.3), where per-image percentiles won.
BRIGHTNESS_SPREAD = 3.0
# The light photometric augmentation (data/transforms.py) works in read_image's units, where 1.0 is
# the type's maximum: a shift of 0.1 and a gamma on [0, 1]. Images whose median brightness range
# (DataFingerprint.brightness_range) lies outside these bounds are scaled by their own percentiles
# first (a red-team round on HC18 images, 20 s runs, train loss against the 8-bit images' 0.15:
# 16-bit data spanning 100-140, 0.63-0.70; a float TIFF of 0-4000, whose gamma clamps it to two
# values, 0.61; each 0.06-0.08 without augmentation). The benchmark sets span 0.5-1.0.
UNIT_RANGE = (0.05, 1.5)
# A run started from a trained model (--init-from) steps more gently: 8 dsb2018-dev images, 1 minute,
# from the nuclei model: AP@0.5 0.845 at the fast recipe's 4e-3, 0.860 at 1e-3 (benchmarks/NOTES.md).
FINE_TUNE_LR = 1e-3
PATCHES_PER_EPOCH = 96  # small sets crop several patches per image so an epoch is worth its overhead


def data_scale(data: DataFingerprint, patch: int = PATCH_SIDE) -> float:
    """The resize factor that keeps thin structures and fits large objects (module docstring)."""
    if not data.geometry:
        return 1.0
    total = sum(data.value_pixels.values()) or 1
    common = [g for v, g in data.geometry.items() if data.value_pixels.get(v, 0) / total >= THIN_SHARE]
    thinnest = min((g.half_width for g in common), default=math.inf)
    largest = largest_object(data)
    fit = patch / 2 / largest if largest > 0 else 1.0
    keep_thin = THIN_HALF_WIDTH / thinnest if thinnest > 0 else 1.0
    scale = min(1.0, max(fit, keep_thin))
    return max(1, math.floor(scale * 8)) / 8


def largest_object(data: DataFingerprint) -> float:
    """The largest object's extent in pixels: the largest of the classes' extents (the median over
    the masks of each one's biggest region's longer side) but the background's; 0 without geometry."""
    total = sum(data.value_pixels.values()) or 1
    dominant = max(data.value_pixels, key=data.value_pixels.get, default=None)
    background = dominant if dominant is not None and data.value_pixels[dominant] / total > 0.5 else None
    extents = [g.extent for v, g in data.geometry.items() if v != background and v in data.value_pixels]
    return max(extents, default=0.0)


def data_normalisation(data: DataFingerprint) -> str:
    """ "image" (each image's channels by their own percentiles) where some channel's brightness
    spreads BRIGHTNESS_SPREAD-fold or more over the set (DataFingerprint.brightness_spread), or
    where the images do not fill the unit range they are read in (UNIT_RANGE), else "dataset" (one
    mean and std a channel), as the module docstring measures."""
    spread = max(data.brightness_spread, default=1.0) >= BRIGHTNESS_SPREAD
    low, high = UNIT_RANGE
    return "image" if spread or any(not low <= r <= high for r in data.brightness_range) else "dataset"


def data_orientation(data: DataFingerprint) -> str:
    """ "upright" when a class of at least 1% of the pixels sits well above or below the middle on
    average (CamVid: sky at 0.2 of the height, road at 0.8), so vertical flips and 90-degree turns
    would show the model scenes it never meets; else "any" (microscopy, ultrasound: ~0.5)."""
    total = sum(data.value_pixels.values()) or 1
    common = [v for v, n in data.value_pixels.items() if n / total >= 0.01 and v in data.value_height]
    shifted = any(abs(data.value_height[v] - 0.5) > UPRIGHT_SHIFT for v in common)
    return "upright" if shifted else "any"


def class_weights(data: DataFingerprint, mask_values: MaskValues) -> list[float]:
    """1/sqrt(pixel fraction) per class, pixel-weighted mean 1, capped (module docstring); a class
    never seen in the masks gets the cap."""
    fractions = data.class_fractions(mask_values)
    present = [f for f in fractions if f > 0]
    if not present:
        return [1.0] * len(fractions)
    raw = [1 / math.sqrt(f) if f > 0 else math.inf for f in fractions]
    cap = MAX_CLASS_WEIGHT * min(r for r in raw)
    raw = [min(r, cap) for r in raw]
    mean = sum(f * r for f, r in zip(fractions, raw, strict=True))
    return [round(r / mean, 4) for r in raw]


def patch_side(data: DataFingerprint, scale: float, minimum: int, small_patches: bool = False) -> int:
    """0 (whole images) when every image at the model's scale is no larger than one patch and
    every image reaches the network's minimum size; else the patch side, at most PATCH_SIDE and
    no larger than the images. HC18 at scale 0.25 (200x135): whole images reached head Dice 0.969
    in 5 minutes against 0.960-0.964 for 128 px crops, which cut the heads."""
    height, width = data.median_height * scale, data.median_width * scale
    # The largest image decides: batches are padded to it (one 4000x3000 image among small ones
    # must not make every batch that big).
    if data.largest_pixels * scale**2 <= PATCH_SIDE**2 and data.smallest_side * scale >= minimum:
        return 0
    side = min(PATCH_SIDE, int(min(height, width)) // 16 * 16)
    if small_patches and small_objects(data, scale):
        side = min(side, SMALL_PATCH_SIDE)
    return max(minimum, side)


def small_objects(data: DataFingerprint, scale: float) -> bool:
    """Whether the largest object (largest_object: a median over the masks of each one's
    largest, so some masks hold larger ones) fits in half a SMALL_PATCH_SIDE patch at the
    model's scale."""
    return 0 < largest_object(data) * scale <= SMALL_PATCH_SIDE / 2


def recipe_settings(name: str, data: DataFingerprint, device: torch.device, time_budget: float | None) -> dict:
    """The recipe's choice of every option it fills but the patch (see apply_recipe)."""
    if name == "auto":
        name = "paper" if device.type == "cuda" else "fast"
    if name == "paper":
        settings = {"base_channels": 64, "depth": 4, "upsampling": "transposed", "elastic": True}
        settings.update(batch_size=8 if device.type == "cuda" else 2, lr=1e-3)
    else:
        short_run = time_budget is not None and time_budget < SHORT_RUN_SECONDS
        settings = {
            "base_channels": 16,
            "depth": 4,
            "upsampling": "bilinear",
            "elastic": not short_run,
            "batch_size": 4,
            # The budget holds ~10-40 epochs: 4e-3 learned faster than 2e-3 in the same 90 s on
            # ISBI (cell Dice +0.01; benchmarks/NOTES.md).
            "lr": 4e-3,
        }
    settings["scale"] = data_scale(data)
    settings["normalize"] = data_normalisation(data)
    settings["patches_per_image"] = max(1, round(PATCHES_PER_EPOCH / max(1, data.num_images)))
    settings["orientation"] = data_orientation(data)
    # Strong photometric augmentation lost on camvid-dev's unseen street in 5 minutes (mIoU 0.243
    # against 0.308 with light, whole frames at half size): the short run underfits (NOTES, issue 23).
    settings["photometric"] = "light"
    settings["recipe"] = name
    return settings


def encoder_lr(cfg: TrainConfig) -> float | None:
    """The encoder's learning rate, a fraction of --lr: pretrained weights learn at PRETRAINED_ENCODER_LR,
    a backbone from scratch at the decoder's rate; None for models without an encoder."""
    if cfg.model != "encoder-unet" and not cfg.encoder:  # (--encoder makes the model encoder-unet on validation)
        return None
    return PRETRAINED_ENCODER_LR if pretrained(cfg.encoder_weights) else 1.0


def default_workers() -> int:
    """Data-loading processes: none on small CPUs, where they take cores from the model's convolutions."""
    return 0 if torch.get_num_threads() <= 4 else 4


def recipe_choices(cfg: TrainConfig, data: DataFingerprint, device: torch.device) -> dict[str, Any]:
    """Every option the recipe can fill, for this data, machine and the user's own options."""
    choices = recipe_settings(cfg.recipe, data, device, cfg.time)
    # The patch fits the images at the scale and depth that will be used, the user's if given.
    depth = cfg.depth if cfg.depth is not None else choices["depth"]
    minimum = dataclasses.replace(cfg, depth=depth).min_input_size()
    scale = cfg.scale if cfg.scale is not None else choices["scale"]
    choices["patch_size"] = patch_side(data, scale, minimum, small_patches=True)
    larger = patch_side(data, scale, minimum)
    if cfg.patch_size is None and choices["patch_size"] and larger > choices["patch_size"]:  # as many pixels
        choices["patches_per_image"] *= round((larger / choices["patch_size"]) ** 2)
    whole = cfg.patch_size == 0 or (cfg.patch_size is None and not choices["patch_size"])
    if whole:  # views of whole images: at most ~96 patches' pixels an epoch, counted at the largest
        # image, every view of which is all of it (2 images of 12 Mpx made epochs of 96; one 2000^2
        # image beside two of 64^2, counted at the median, an epoch of ~10 minutes against --time 30s);
        # and one view without augmentation, where the others would be copies (red-team rounds)
        pixels = data.largest_pixels * scale**2
        fewer = round(choices["patches_per_image"] * PATCH_SIDE**2 / max(1.0, pixels)) if cfg.augment else 1
        choices["patches_per_image"] = max(1, min(choices["patches_per_image"], fewer))
    if cfg.init_from and choices["recipe"] == "fast":
        choices["lr"] = FINE_TUNE_LR
    choices["class_weights"] = class_weights(data, data.mask_values)
    # The weight map separates touching objects; the edge and centre classes of instance targets do
    # that themselves (dsb2018-dev val, 10 minutes, centres: AP@0.5 0.816 with w0 10, 0.824 without,
    # object / centre pixel Dice 0.76 / 0.78 -> 0.82 / 0.84; benchmarks/NOTES.md, issue 21).
    edges = data.mask_values.instances in ("boundary", "centres")
    choices["border_weight"] = BORDER_WEIGHT if data.mask_values.countable and not edges else 0.0
    choices["binary"] = data.mask_values.num_classes == 2  # one sigmoid logit for two classes
    choices["instance_masks"] = data.mask_values.instances is not None  # as the fingerprint read the masks
    choices["instance_target"] = data.mask_values.instances
    choices["workers"] = default_workers()
    choices["encoder_lr"] = encoder_lr(cfg)
    if cfg.time is None:
        choices["epochs"] = 50  # a timed run without --epochs runs until its time is up
    return choices


def apply_recipe(cfg: TrainConfig, data: DataFingerprint, device: torch.device) -> tuple[TrainConfig, str]:
    """A copy of `cfg` with every unset (None) option taken from the recipe (option_layers.py's last
    layer); and a one-line summary of what was chosen."""
    choices = recipe_choices(cfg, data, device)
    name = choices.pop("recipe")
    read = model_class(cfg.model).options({})
    choices = {key: value for key, value in choices.items() if key not in ARCHITECTURE_OPTIONS or key in read}
    resolved, chosen = fill_unset(dataclasses.replace(cfg, recipe=name), choices)
    said = [f"{key}={value}" for key, value in chosen.items() if value is not None]
    summary = ", ".join(said) or "nothing (all options set)"
    return resolved, f"recipe {name} for {data.describe()} on {device.type}: chose {summary}"
