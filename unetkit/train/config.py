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
    scale: float = 1.0  # resize images and masks by this factor before the model
    patch_size: int | None = 256  # random training crops; None trains on whole images
    patches_per_image: int = 1
    augment: bool = True
    elastic: bool = True
    # model
    model: str = "unet"
    base_channels: int = 64
    depth: int = 4
    upsampling: str = "transposed"
    binary: bool | None = None  # None: one sigmoid logit when the masks have two values
    # optimisation
    epochs: int = 50
    batch_size: int = 4
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
    max_minutes: float | None = None  # stop after the epoch that crosses this wall-clock budget
    # run
    out: str | None = None
    resume: str | None = None
    seed: int = 0
    device: str = "auto"
    workers: int | None = None
    progress: bool = True
    sync_bn: bool = False  # SyncBatchNorm across DDP ranks (CUDA only)
    tensorboard: bool = False  # also log to RUN/tensorboard (needs unetkit[tensorboard])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
