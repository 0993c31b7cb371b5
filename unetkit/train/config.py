"""Every training option in one plain dataclass; `config.json` in the run folder is this, resolved."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from unetkit.errors import UnetkitError


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
    patches_per_image: int | None = None  # None: enough for ~96 patches an epoch
    augment: bool = True
    elastic: bool | None = None
    orientation: str | None = None  # any: flips and 90-degree turns; upright: left-right flips only
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
    lr: float | None = None  # None: the recipe's (4e-3 fast, 1e-3 paper)
    weight_decay: float = 1e-4
    momentum: float = 0.99
    scheduler: str = "cosine"
    warmup_epochs: float = 1.0
    step_size: int = 30  # epochs between LR drops for the step scheduler
    gamma: float = 0.1
    loss: str = "ce+dice"
    class_weights: list[float] | None = None  # None: 1/sqrt(class pixel fraction), from the masks
    grad_clip: float | None = 1.0
    amp: str = "auto"
    channels_last: str = "auto"  # auto | on | off
    patience: int | None = None  # early stopping: epochs without a better val Dice
    time: float | None = None  # wall-clock budget in seconds: the LR anneals over it, no epoch starts past it
    min_epochs: int | None = None  # with `time`: train at least this many epochs, even past the budget
    # run
    out: str | None = None
    resume: str | None = None
    seed: int = 0
    device: str = "auto"
    workers: int | None = None
    cache_gb: float | None = None  # decoded images kept in memory up to this; None: 30% of the machine's
    progress: bool = True
    sync_bn: bool = False  # SyncBatchNorm across DDP ranks (CUDA only)
    tensorboard: bool = False  # also log to RUN/tensorboard (needs unetkit[tensorboard])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def min_input_size(self) -> int:
        """The smallest image side the network trains on: every pooling halves it, and the
        bottleneck needs 2x2 pixels so that BatchNorm sees more than one value with batch size 1."""
        levels = (self.depth or 4) if self.model == "unet" else 1  # None: the recipes' depth, 4
        return 2 ** (levels + 1)

    def validate(self) -> None:
        """Check every option's value; the first bad one is a one-line UnetkitError naming it.
        None stands for "the recipe chooses" and passes; the resolved config is checked again."""
        for name, ok, need in self._rules():
            if not ok:
                option = "--" + name.replace("_", "-")
                raise UnetkitError(f"{option} {_show(getattr(self, name))} is invalid: it must be {need}")

    def _rules(self) -> list[tuple[str, bool, str]]:
        def positive(value: float | None) -> bool:  # False for NaN too
            return value is not None and math.isfinite(value) and value > 0

        def at_least(value: float | None, low: float) -> bool:
            return value is not None and math.isfinite(value) and value >= low

        def at_most(value: float | None, low: float, high: float) -> bool:
            return at_least(value, low) and value <= high

        minimum = self.min_input_size()
        return [
            ("depth", self.depth is None or (at_least(self.depth, 1) and self.depth <= 10), "between 1 and 10"),
            (
                "epochs",
                self.epochs is None or at_most(self.epochs, 1, 1_000_000),
                "a whole number of epochs, 1 or more",
            ),
            (
                "batch_size",
                self.batch_size is None or at_most(self.batch_size, 1, 4096),
                "1 or more images per step (at most 4096)",
            ),
            (
                "lr",
                self.lr is None or (positive(self.lr) and self.lr <= 10),
                "a learning rate above 0 and at most 10, e.g. 1e-3",
            ),
            (
                "val_fraction",
                self.val_fraction == 0 or 0 < self.val_fraction < 1,
                "between 0 and 1, e.g. 0.1 (or 0 for no validation)",
            ),
            (
                "scale",
                self.scale is None or at_most(self.scale, 1 / 64, 16),
                "a resize factor between 1/64 and 16, e.g. 0.5",
            ),
            (
                "patch_size",
                not self.patch_size or minimum <= self.patch_size <= 8192,
                f"at least {minimum} pixels (at most 8192) for a {self.model} of --depth {self.depth}, or 'none'",
            ),
            ("orientation", self.orientation in (None, "any", "upright"), "any or upright"),
            (
                "patches_per_image",
                self.patches_per_image is None or at_most(self.patches_per_image, 1, 1000),
                "1 to 1000",
            ),
            ("base_channels", self.base_channels is None or at_most(self.base_channels, 1, 1024), "1 to 1024"),
            ("weight_decay", at_least(self.weight_decay, 0), "0 or more"),
            ("momentum", at_least(self.momentum, 0) and self.momentum < 1, "in [0, 1), e.g. 0.9"),
            ("warmup_epochs", at_least(self.warmup_epochs, 0), "0 or more"),
            ("step_size", at_least(self.step_size, 1), "1 or more epochs"),
            ("gamma", positive(self.gamma), "above 0, e.g. 0.1"),
            ("grad_clip", self.grad_clip is None or at_least(self.grad_clip, 0), "0 (off) or more"),
            ("patience", self.patience is None or at_least(self.patience, 1), "1 or more epochs"),
            ("time", self.time is None or positive(self.time), "a duration above 0, e.g. 10m"),
            (
                "min_epochs",
                self.min_epochs is None or (at_least(self.min_epochs, 1) and self.time is not None),
                "1 or more epochs, and given with --time",
            ),
            ("cache_gb", self.cache_gb is None or at_most(self.cache_gb, 0, 1e6), "0 (decode every time) or more GiB"),
            ("workers", self.workers is None or at_most(self.workers, 0, 64), "0 to 64 processes"),
            ("seed", at_most(self.seed, 0, 2**32 - 1), "a whole number from 0 to 4294967295"),
            (
                "ignore_value",
                self.ignore_value is None or at_most(self.ignore_value, 0, 65535),
                "a mask value from 0 to 65535",
            ),
            (
                "class_weights",
                self.class_weights is None or all(at_most(w, 0, 1e6) for w in self.class_weights),
                "numbers of 0 or more, one per class, e.g. 1,5",
            ),
        ]


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(_show(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)
