"""Every training option in one plain dataclass; `config.json` in the run folder is this, resolved."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class TrainConfig:
    # data
    images: str = ""
    masks: str = ""
    val_images: str | None = None  # explicit validation folders; otherwise a seeded split
    val_masks: str | None = None
    val_fraction: float = 0.1
    mask_suffix: str | None = None  # None: try "", "_mask", "_label", ...
    mask_values: list[int] | None = None  # None: discovered from the training masks
    ignore_value: int | None = None  # a mask value that marks "don't care" pixels
    # Options left at None are chosen by the recipe (see recipes.py) from the data and machine.
    recipe: str = "auto"  # auto | fast | paper
    scale: float | None = None  # resize images and masks by this factor before the model
    patch_size: int | None = None  # random training crops; 0 trains on whole images
    patches_per_image: int = 1
    augment: bool = True
    elastic: bool | None = None
    # model
    model: str = "unet"
    base_channels: int | None = None
    depth: int | None = None
    upsampling: str | None = None
    binary: bool | None = None  # None: one sigmoid logit when the masks have two values
    # optimisation
    epochs: int | None = None  # None: 50, or as many as fit in `time`
    batch_size: int | None = None
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.99
    scheduler: str = "cosine"
    warmup_epochs: float = 1.0
    step_size: int = 30  # epochs between LR drops for the step scheduler
    gamma: float = 0.1
    loss: str = "ce+dice"
    class_weights: list[float] | None = None
    grad_clip: float | None = 1.0
    amp: str = "auto"
    channels_last: str = "auto"  # auto | on | off
    patience: int | None = None  # early stopping: epochs without a better val Dice
    time: float | None = None  # wall-clock budget in seconds: the LR anneals over it, no epoch starts past it
    # run
    out: str | None = None
    resume: str | None = None
    seed: int = 0
    device: str = "auto"
    workers: int | None = None
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
