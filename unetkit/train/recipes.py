"""Recipes: the model size, patch, batch and resolution picked for the data and the machine, for
whatever the user did not set, as nnU-Net plans from a data set fingerprint, but aimed at the
best model in the time at hand rather than the best model at any cost.

  paper: the U-Net paper's network (64 base channels, 4 levels, transposed convolutions, 31M
         parameters for one channel in, two classes out), full resolution, elastic deformation.
  fast:  16 base channels and bilinear upsampling (~1M parameters, ~16x fewer FLOPs), half
         resolution for images of 768 px and more, no elastic deformation in short runs. On the
         ISBI 2012 demo it reaches cell Dice 0.945 / membrane 0.79 in about two CPU minutes.
         Thin structures decide the resolution: on ISBI's 512 px slices, 256 px crops at full
         resolution beat whole slices at half resolution for the same compute (membrane Dice
         0.80 vs 0.77-0.78 after 90 fp32 seconds), because a membrane 2-3 px wide at full size
         is 1 px wide at half size.
  auto:  paper on a CUDA GPU, fast on a CPU.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from unetkit.data import Pair
from unetkit.train.config import TrainConfig

RECIPES = ("auto", "fast", "paper")
SHORT_RUN_SECONDS = 15 * 60  # elastic deformation pays off only in longer runs
HALF_RESOLUTION_FROM = 768  # the fast recipe halves images whose short side is at least this


@dataclass(frozen=True)
class Fingerprint:
    num_images: int
    median_height: int
    median_width: int


def fingerprint(pairs: Sequence[Pair], limit: int = 64) -> Fingerprint:
    """Image count and median size, from file headers only."""
    heights, widths = [], []
    for pair in pairs[:limit]:
        try:
            with Image.open(pair.image) as img:
                widths.append(img.width)
                heights.append(img.height)
        except Exception:  # unreadable files are reported by the data checks that follow
            continue
    if not heights:
        return Fingerprint(len(pairs), 256, 256)
    return Fingerprint(len(pairs), int(statistics.median(heights)), int(statistics.median(widths)))


def recipe_settings(name: str, data: Fingerprint, device: torch.device, time_budget: float | None) -> dict:
    if name == "auto":
        name = "paper" if device.type == "cuda" else "fast"
    short_side = min(data.median_height, data.median_width)
    if name == "paper":
        settings = {"base_channels": 64, "depth": 4, "upsampling": "transposed", "scale": 1.0, "elastic": True}
        settings["batch_size"] = 8 if device.type == "cuda" else 2
    else:
        scale = 0.5 if short_side >= HALF_RESOLUTION_FROM else 1.0
        short_run = time_budget is not None and time_budget < SHORT_RUN_SECONDS
        settings = {
            "base_channels": 16,
            "depth": 4,
            "upsampling": "bilinear",
            "scale": scale,
            "elastic": not short_run,
            "batch_size": 4,
        }
    scaled_side = int(short_side * settings["scale"])
    settings["patch_size"] = max(32, min(256, scaled_side // 16 * 16))
    settings["recipe"] = name
    return settings


def apply_recipe(cfg: TrainConfig, data: Fingerprint, device: torch.device) -> tuple[TrainConfig, str]:
    """A copy of `cfg` with every unset (None) option taken from the recipe; and a one-line
    summary of what was chosen."""
    settings = recipe_settings(cfg.recipe, data, device, cfg.time)
    chosen = {key: value for key, value in settings.items() if key != "recipe" and getattr(cfg, key) is None}
    resolved = dataclasses.replace(cfg, **chosen, recipe=settings["recipe"])
    if resolved.epochs is None and cfg.time is None:
        resolved.epochs = 50  # a timed run without --epochs runs until its time is up
    summary = ", ".join(f"{key}={value}" for key, value in chosen.items()) or "nothing (all options set)"
    return resolved, (
        f"recipe {settings['recipe']} for {data.num_images} images of median size "
        f"{data.median_width}x{data.median_height} on {device.type}: chose {summary}"
    )
