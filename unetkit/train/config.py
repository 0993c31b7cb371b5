"""Every training option in one dataclass. Each field carries its help, choices and check
(unetkit/runtime/options.py), so the command line, the config files and `validate()` all come from
here: a new option is one field. `config.json` in the run folder is this, resolved (option_layers.py
says in which order the values are chosen; None means unset)."""

from __future__ import annotations

import argparse
import functools
import numbers
import os
import types
import typing
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data.objects import INSTANCE_MODES
from unetkit.data.tiff_axes import AXIS_NEED, CHANNEL_AXIS_HELP, PLANE_AXIS_HELP, AxisChoice, axis_letter
from unetkit.errors import UnetkitError
from unetkit.models import MODELS, model_class
from unetkit.runtime.amp import AMP_MODES
from unetkit.runtime.options import (
    above,
    between,
    check_fields,
    duration,
    each,
    float_list,
    int_list,
    known_fields_only,
    option,
    patch_size,
    show,
    whole,
)
from unetkit.train.losses import LOSSES
from unetkit.train.schedulers import SCHEDULERS

RECIPES = ("auto", "fast", "paper")
DATA_FOLDERS = ("images", "masks", "val_images", "val_masks")
PATH_OPTIONS = (*DATA_FOLDERS, "out", "resume")
OPTIMIZERS = ("adamw", "sgd", "rmsprop")
BY_RECIPE = "(default: chosen by --recipe)"


@known_fields_only
@dataclass
class TrainConfig:
    # data
    images: str = option("", "folder of training images", group="data")
    masks: str = option("", "folder of training masks (same file stems as the images)", group="data")
    val_images: str | None = option(
        None, "folder of validation images (default: split off --val-fraction)", group="data"
    )
    val_masks: str | None = option(None, "folder of validation masks", group="data")
    val_fraction: float = option(
        0.1,
        "share of images held out for validation, seeded",
        group="data",
        valid=lambda v: v == 0 or above(0, 1)(v) and v < 1,
        need="between 0 and 1, e.g. 0.1 (or 0 for no validation)",
    )
    mask_suffix: str | None = option(
        None, "mask name = image stem + this, e.g. _mask (default: tried automatically)", group="data"
    )
    mask_values: list[int] | None = option(
        None, "the mask values of the classes, e.g. 0,255 (default: found in the training masks)",
        group="data", parse=int_list, valid=lambda v: each(whole(0, 65535))(v) and v == sorted(v),
        need="mask values from 0 to 65535 in increasing order, e.g. 0,255: class ids follow the order, and a "
        "binary model's foreground is the larger value",
    )  # fmt: skip
    ignore_value: int | None = option(
        None, "a mask value whose pixels count for neither loss nor metrics, e.g. 255", group="data",
        valid=whole(0, 65535), need="a mask value from 0 to 65535",
    )  # fmt: skip
    channel_axis: str | None = option(
        None, CHANNEL_AXIS_HELP, group="data", valid=axis_letter, need=AXIS_NEED, parse=str.upper
    )
    plane_axis: str | None = option(
        None, PLANE_AXIS_HELP, group="data", valid=axis_letter, need=AXIS_NEED, parse=str.upper
    )
    instance_masks: bool | None = option(
        None, "the masks are instance label images (each object its own id, 0 background, e.g. 16-bit PNG or "
        "TIFF); trained as background / object, their objects kept for --border-weight and the object scores "
        "(default: detected from the masks: background the largest value, one region an id, more ids than a "
        "class mask holds; from an instance model (--init-from), whenever the masks fit it)",
        group="data", toggle=True,
    )  # fmt: skip
    instance_target: str | None = option(
        None, "for instance masks, the classes that tell touching objects apart: objects (background / object), "
        "boundary (+ each object's edge, the U-Net paper's 3 classes), centres (+ edge and each object's centre, "
        "the seeds of its objects; measured best on fluorescence nuclei) (default: centres)",
        group="data", choices=INSTANCE_MODES,
    )  # fmt: skip
    recipe: str = option(
        "auto",
        "fills the options you leave out from the data: fast (16 base channels, bilinear, resolution from the "
        "masks' geometry), paper (64 channels, transposed, full resolution), auto (paper on GPU, fast on CPU)",
        group="model", choices=RECIPES,
    )  # fmt: skip
    scale: float | None = option(
        None, f"resize images and masks by this factor for the model {BY_RECIPE}", group="data",
        valid=between(1 / 64, 16), need="a resize factor between 1/64 and 16, e.g. 0.5",
    )  # fmt: skip
    patch_size: int | None = option(
        None, f"random training crop size, or 'none' for whole images {BY_RECIPE}", group="data",
        parse=patch_size,
    )  # fmt: skip
    patches_per_image: int | None = option(
        None, "random crops (views of the whole image, with --patch-size none) per image and epoch (default: "
        "enough for ~96 patches' pixels an epoch)", group="data",
        valid=whole(1, 1000), need="1 to 1000",
    )  # fmt: skip
    augment: bool = option(
        True, "flips, rotations, scaling, elastic and intensity augmentation (--no-augment: none)", group="data",
        toggle=True,
    )  # fmt: skip
    normalize: str | None = option(
        None, "dataset: the training set's channel mean and std; image: each image's channels scaled so their "
        "1st and 99.8th percentiles become 0 and 1, as stardist and cellpose normalise fluorescence; "
        f"model: the --init-from model's own (its mean and std, or percentiles) {BY_RECIPE}: image where a "
        "channel's brightness varies threefold or more from image to image; with --init-from, the model's kind",
        group="data", choices=("dataset", "image", "model"),
    )  # fmt: skip
    elastic: bool | None = option(
        None, f"elastic deformation, the U-Net paper's augmentation {BY_RECIPE}; off in runs under 15 minutes",
        group="data", toggle=True,
    )  # fmt: skip
    orientation: str | None = option(
        None,
        "any: flips and 90-degree turns; upright: left-right flips only, for scenes with an up (default: from "
        "the masks: upright when a class sits well above or below the middle)",
        group="data", choices=("any", "upright"),
    )  # fmt: skip
    zoom: float = option(
        1.25, "augmentation zooms each image by a random factor between 1/zoom and zoom; 1: no zoom",
        group="data", valid=between(1, 4), need="1 (off) to 4, e.g. 1.25",
    )  # fmt: skip
    photometric: str | None = option(
        None, "intensity augmentation: light (brightness, contrast, gamma) or strong (also each channel's gain and "
        "blur, and wider ranges: for scenes met under other light) (default: light)", group="data",
        choices=("light", "strong"),
    )  # fmt: skip
    # model
    model: str = option("unet", "architecture", group="model", choices=MODELS)
    base_channels: int | None = option(
        None, f"channels of the first level, doubling per level {BY_RECIPE}; DumbNet's width", group="model",
        valid=whole(1, 1024), need="1 to 1024",
    )  # fmt: skip
    depth: int | None = option(
        None, f"number of down/up levels {BY_RECIPE}", group="model", valid=whole(1, 10), need="between 1 and 10"
    )
    upsampling: str | None = option(
        None, f"decoder upsampling {BY_RECIPE}", group="model", choices=("transposed", "bilinear")
    )
    encoder: str | None = option(
        None, "a timm backbone under the U-Net decoder (e.g. resnet34; `unetkit encoders` lists them): the model "
        "becomes encoder-unet", group="model",
    )  # fmt: skip
    encoder_weights: str = option(
        "none", "the encoder's starting weights: imagenet (timm's download, asked for by this), a FILE (state dict "
        "or safetensors of that encoder), or none", group="model",
    )  # fmt: skip
    encoder_lr: float | None = option(
        None, "the encoder's learning rate, as a fraction of --lr (the recipe's: 0.1 for pretrained weights, 1 from "
        "scratch)", group="model",
        valid=between(0, 1), need="a fraction from 0 (the encoder's weights kept) to 1, e.g. 0.1",
    )  # fmt: skip
    binary: bool | None = option(
        None, "use softmax over 2 classes instead of one sigmoid logit for two-value masks", group="model",
        flag=("--multiclass", False),
    )  # fmt: skip
    # optimisation
    epochs: int | None = option(
        None, "number of epochs (default 50, or as many as fit in --time)", group="optimisation",
        valid=whole(1, 1_000_000), need="a whole number of epochs, 1 or more",
    )  # fmt: skip
    batch_size: int | None = option(
        None, f"images per step {BY_RECIPE}", group="optimisation",
        valid=whole(1, 4096), need="1 or more images per step (at most 4096)",
    )  # fmt: skip
    optimizer: str = option("adamw", "", group="optimisation", choices=OPTIMIZERS)
    lr: float | None = option(
        None, "peak learning rate (default: the recipe's, 4e-3 fast, 1e-3 paper)", group="optimisation",
        valid=above(0, 10), need="a learning rate above 0 and at most 10, e.g. 1e-3",
    )  # fmt: skip
    weight_decay: float = option(1e-4, "", group="optimisation", valid=between(0), need="0 or more")
    momentum: float = option(
        0.99, "SGD momentum, the U-Net paper's", group="optimisation",
        valid=lambda v: between(0)(v) and v < 1, need="in [0, 1), e.g. 0.9",
    )  # fmt: skip
    scheduler: str = option("cosine", "learning-rate schedule", group="optimisation", choices=SCHEDULERS)
    warmup_epochs: float = option(
        1.0, "linear warmup for cosine, poly and step (onecycle has its own rise; plateau none)", group="optimisation",
        valid=between(0), need="0 or more",
    )  # fmt: skip
    step_size: int = option(
        30, "epochs between drops for the step schedule", group="optimisation",
        valid=whole(1, 1_000_000), need="1 or more epochs",
    )  # fmt: skip
    gamma: float = option(
        0.1, "LR factor of each step drop", group="optimisation", valid=above(0), need="above 0, e.g. 0.1"
    )
    loss: str = option("ce+dice", "", group="optimisation", choices=LOSSES)
    class_weights: list[float] | None = option(
        None, "one loss weight per class, e.g. 1,5 (default: 1/sqrt of each class's pixel fraction)",
        group="optimisation", parse=float_list,
        valid=each(between(0, 1e6)), need="numbers of 0 or more, one per class, e.g. 1,5",
    )  # fmt: skip
    border_weight: float | None = option(
        None, "w0 of the U-Net paper's weight map: pixels in the gaps between touching objects weigh up to this "
        f"much more in the pixel loss; 0 turns it off {BY_RECIPE}", group="optimisation",
        valid=between(0, 1000), need="0 (off) to 1000, e.g. 10 as in the paper",
    )  # fmt: skip
    border_sigma: float = option(
        5.0, "sigma (pixels at the model's scale) of the weight map's fall-off from a gap", group="optimisation",
        valid=above(0, 1000), need="above 0 pixels, e.g. 5 as in the paper",
    )  # fmt: skip
    grad_clip: float = option(
        1.0, "clip the gradient norm to this; 0 turns it off", group="optimisation",
        valid=between(0), need="0 (off) or more",
    )  # fmt: skip
    ema: float = option(
        0.0, "validate, save and predict with an exponential moving average of the weights, this decay per "
        "step, e.g. 0.99; 0: off", group="optimisation",
        valid=between(0, 0.9999), need="0 (off) or a decay below 1, e.g. 0.99",
    )  # fmt: skip
    amp: str = option(
        "auto", "mixed precision: auto picks fp16/bf16 on GPUs and bf16 on CPUs with native bf16",
        group="optimisation", choices=AMP_MODES,
    )  # fmt: skip
    channels_last: str = option(
        "auto", "NHWC memory layout; auto measures which is faster", group="optimisation",
        choices=("auto", "on", "off"),
    )  # fmt: skip
    patience: int | None = option(
        None, "stop after this many epochs without a better validation Dice", group="optimisation",
        valid=whole(1, 1_000_000), need="1 or more epochs",
    )  # fmt: skip
    time: float | None = option(
        None,
        "wall-clock budget, e.g. 10m: the LR schedule runs over the time, and the last epoch ends at the batch "
        "where the time is up (less its validation), best.pt keeps the best epoch",
        group="optimisation", parse=duration, valid=above(0), need="a duration above 0, e.g. 10m",
    )  # fmt: skip
    min_epochs: int | None = option(
        None, "with --time: train at least this many epochs even if the machine is slower than expected",
        group="optimisation",
    )  # fmt: skip
    # run
    out: str | None = option(None, "run folder for checkpoints and logs (default runs/<timestamp>)", group="run")
    resume: str | None = option(
        None, "continue from a last.pt with its saved options: --epochs, --patience, --time, --min-epochs, "
        "--device, --workers, --cache-gb, --no-progress, --no-report and --tensorboard may change, and --images/"
        "--masks (--val-images/--val-masks) may name where the data moved; any other option given with another "
        "value is refused", group="run",
    )  # fmt: skip
    init_from: str | None = option(
        None, "start the weights from a trained model (a best.pt, last.pt, .safetensors export, or a ready-made "
        "model's name: unetkit models): a new run, its optimizer, schedule, split, normalisation and mask values "
        "fresh from this data; the architecture is the model's, and its scale unless --scale is given; other "
        "classes start the output layer afresh, another channel count adapts the first convolution (both said in "
        "the log)", group="run",
    )  # fmt: skip
    seed: int = option(0, "", group="run", valid=whole(0, 2**32 - 1), need="a whole number from 0 to 4294967295")
    device: str = option("auto", "auto, cpu, cuda or cuda:N", group="run")
    workers: int | None = option(
        None, "data-loading processes (default: 0 on small CPUs, else 4)", group="run",
        valid=whole(0, 64), need="0 to 64 processes",
    )  # fmt: skip
    cache_gb: float | None = option(
        None, "keep decoded images in memory up to this many GiB, else decode each time (default: 30%% of the "
        "memory)", group="run", valid=between(0, 1e6), need="0 (decode every time) or more GiB",
    )  # fmt: skip
    progress: bool = option(True, "progress bars (--no-progress: none, e.g. in a log file)", group="run", toggle=True)
    sync_bn: bool = option(
        False, "under torchrun: BatchNorm statistics over all ranks' batches (SyncBatchNorm, CUDA only)",
        group="run", toggle=True,
    )  # fmt: skip
    report: bool = option(
        True, "report.html at the end of the run (--no-report: none; unetkit report RUN_DIR writes it later)",
        group="run", toggle=True,
    )  # fmt: skip
    tensorboard: bool = option(
        False, "also log losses, Dice/IoU per class, LR and validation images to RUN/tensorboard",
        group="run", toggle=True,
    )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def axes(self) -> AxisChoice:
        """How TIFF axes are read: --channel-axis, --plane-axis."""
        return AxisChoice(self.channel_axis, self.plane_axis)

    def min_input_size(self) -> int:
        """The smallest image side the model trains on, as the model says (unset options: its defaults)."""
        model = model_class(self.model)
        return model.min_input_size(model.arguments(self, in_channels=1, num_classes=2))

    def _depth_words(self) -> str:
        """The depth a size limit comes from, as a message names it: given, or the model's default."""
        if self.model != "unet":
            return ""
        if self.depth is not None:
            return f" of --depth {self.depth}"
        return f" of its default depth {model_class(self.model).options({})['depth']}"

    def validate(self) -> None:
        """Check every option's type and value; the first bad one is a one-line UnetkitError naming
        it. Unset options (None) pass; the resolved config is checked again. Numbers of other types
        (numpy's) become Python's, so config.json and config.toml can hold them."""
        for field in fields(self):
            value = getattr(self, field.name)
            try:
                setattr(self, field.name, option_value(field.name, value))
            except ValueError as err:
                shown = " ".join(repr(value).split())  # an array's repr spans lines
                shown = shown if len(shown) <= 60 else shown[:57] + "..."
                raise UnetkitError(
                    f"TrainConfig {field.name}={shown} is not {err}{_spelled(field.name, value)}"
                ) from None
        check_fields(self)
        _check_encoder_options(self)
        minimum = self.min_input_size()
        if self.patch_size and not (minimum <= self.patch_size <= 8192):
            raise UnetkitError(
                f"--patch-size {self.patch_size} is invalid: it must be at least {minimum} pixels (at most 8192) "
                f"for a {self.model}{self._depth_words()}, or 'none'"
            )
        if self.instance_masks and self.mask_values is not None:
            raise UnetkitError(
                "--mask-values and --instance-masks do not mix: instance masks train as --instance-target's classes"
            )
        if self.instance_target and self.instance_masks is False:
            raise UnetkitError(
                f"--instance-target {self.instance_target} needs instance masks (each object its own id); pass "
                "--instance-masks if the masks are such"
            )
        if self.normalize == "model" and not self.init_from:
            raise UnetkitError("--normalize model keeps the normalisation of the --init-from model; give --init-from")
        if self.min_epochs is not None and not (whole(1, 1_000_000)(self.min_epochs) and self.time is not None):
            raise UnetkitError(
                f"--min-epochs {show(self.min_epochs)} is invalid: it must be 1 or more epochs, and given with --time"
            )


def _check_encoder_options(cfg: TrainConfig) -> None:
    """--encoder makes the model encoder-unet (no other model takes one); its weights start a run,
    so they do not mix with --init-from's model."""
    if cfg.encoder and cfg.model == "unet":
        cfg.model = "encoder-unet"
    if cfg.encoder and cfg.model != "encoder-unet":
        raise UnetkitError(f"--encoder {cfg.encoder} is for model encoder-unet, not a {cfg.model}")
    if cfg.encoder_weights not in ("none", "") and cfg.model != "encoder-unet":
        raise UnetkitError(f"--encoder-weights {cfg.encoder_weights} needs --encoder NAME (the backbone they are for)")
    if cfg.encoder_lr is not None and cfg.model != "encoder-unet":
        raise UnetkitError(f"--encoder-lr {show(cfg.encoder_lr)} needs --encoder NAME (the backbone it is for)")
    if cfg.encoder_weights not in ("none", "") and cfg.init_from:
        raise UnetkitError(
            "--encoder-weights and --init-from do not mix: the --init-from model brings its own encoder's weights"
        )


ARCHITECTURE_OPTIONS = ("base_channels", "depth", "upsampling")  # read by some models, not all


def check_model_options(cfg: TrainConfig) -> None:
    """A new run's architecture option that its model does not read is refused, not recorded and
    ignored: `--encoder resnet18 --depth 7` trained the encoder's own depth and config.json said 7
    (a red-team round). The recipe fills only the options the model reads (recipes.apply_recipe)."""
    read = model_class(cfg.model).options({})
    unread = [name for name in ARCHITECTURE_OPTIONS if getattr(cfg, name) is not None and name not in read]
    if unread:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in unread)
        takes = ", ".join(f"--{name.replace('_', '-')}" for name in read) or "none"
        raise UnetkitError(
            f"{flags}: not read by a {cfg.model} (its architecture options: {takes}; an encoder-unet's depth and "
            f"widths are its encoder's); drop {flags}"
        )


def option_value(name: str, value: Any, text: bool = False) -> Any:
    """`value` as TrainConfig option `name`'s type, or ValueError saying what the option takes.
    An int is a float too, a bool never a number. `text`: the value comes from a config file, so a
    string is read as the command line reads it (its parser: `time = "10m"`, `mask_values =
    "0,255"`, and YAML's `lr: 1e-3`, which PyYAML reads as a string; "none", where the option's
    parser does not take it, is unset): one spelling for the command line and the files."""
    hint = _hints()[name]
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    kind = next(k for k in kinds if k is not type(None))
    if value is None and type(None) in kinds:
        return None
    if text and isinstance(value, str) and (kind is not str or _parser(name)):  # channel_axis = "c" is C
        try:
            return _parse(name, kind, value)  # first as the command line reads it: patch_size = "none" is 0
        except ValueError:
            if type(None) in kinds and value.strip().lower() == "none":
                return None
            raise
    if typing.get_origin(kind) is list:
        item = typing.get_args(kind)[0]
        items = _as_items(value)
        if items is not None and all(_is_a(v, item) for v in items):
            return [_as(v, item) for v in items]
    elif _is_a(value, kind):
        return _as(value, kind)
    unset = ' or "none"' if text else " or None"
    raise ValueError(_describe(kind) + (unset if type(None) in kinds else ""))


@functools.cache
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _parser(name: str) -> Any:
    return next(f.metadata.get("parse") for f in fields(TrainConfig) if f.name == name)


def _parse(name: str, kind: Any, text: str) -> Any:
    """Option text as the command line parses it (unetkit/cli/arguments.py): the field's own
    parser, or int/float. A switch (bool) has no text form there, so none here: "false" is not False."""
    parse = _parser(name)
    if parse is None and kind not in (int, float):
        raise ValueError(_describe(kind))
    try:
        return (parse or kind)(text)
    except (ValueError, argparse.ArgumentTypeError) as err:
        raise ValueError(f"{_describe(kind)}: {err}" if parse else _describe(kind)) from None


def _as_items(value: Any) -> list | None:
    """A list, a tuple or a 1-D NumPy array as a list; None for anything else. A tuple is the same
    list to a user: `TrainConfig(mask_values=(0, 255))` was refused."""
    if isinstance(value, np.ndarray):
        return value.tolist() if value.ndim == 1 else None
    return list(value) if isinstance(value, list | tuple) else None


def _is_a(value: Any, kind: Any) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):  # bool is an int in Python; `epochs = true` is a mistake, not 1
        return False
    if kind is int:
        return isinstance(value, numbers.Integral)
    if kind is float:
        return isinstance(value, numbers.Real)
    return isinstance(value, str | os.PathLike) and isinstance(os.fspath(value), str)


def _as(value: Any, kind: Any) -> Any:
    return os.fspath(value) if kind is str else kind(value)


def _describe(kind: Any) -> str:
    if typing.get_origin(kind) is list:
        return "a list of " + _describe(typing.get_args(kind)[0]).removeprefix("a ").replace("number", "numbers")
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text"}[kind]


def _spelled(name: str, value: Any) -> str:
    """For a string given where Python wants a number or a list: what the command line makes of it."""
    if not isinstance(value, str):
        return ""
    try:
        return f"; write {name}={option_value(name, value, text=True)!r}"
    except ValueError:
        return ""


def absolute_paths(cfg: TrainConfig, base: str | Path, names: typing.Sequence[str] = DATA_FOLDERS) -> TrainConfig:
    """A copy of `cfg` whose path options `names` are absolute, a relative one (or ~) taken against
    `base`: a run's config then names its data from any folder, and a config file's paths mean
    the same wherever it is run from."""
    absolute = {}
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, str | os.PathLike) and os.fspath(value):
            absolute[name] = os.path.abspath(Path(base) / Path(value).expanduser())
    return replace(cfg, **absolute)
