"""Training setup as small builders, in the order a run needs them:

  run folder -> pairs (found, split, or the resumed run's split) -> plan (fingerprint + recipe)
  -> datasets -> model (AMP, memory layout, DDP) -> optimisation (loss, optimizer, loader,
  schedule, scaler)

Each takes the resolved options and returns what the Trainer (loop.py) holds."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from unetkit.data import AugmentConfig, MaskValues, Pair, Preprocess, SegmentationDataset, find_pairs
from unetkit.data.dataset import pad_collate
from unetkit.data.fingerprint import DataFingerprint, fingerprint_pairs
from unetkit.data.objects import DEFAULT_INSTANCE_TARGET, INSTANCE_CLASS_NAMES
from unetkit.data.pairing import describe_names, expand_planes
from unetkit.data.preprocess import IMAGE_PERCENTILES
from unetkit.data.tiff_axes import refuse_unused_axes
from unetkit.data.transforms import STRONG_PHOTOMETRIC
from unetkit.errors import UnetkitError
from unetkit.models import model_class
from unetkit.models.spec import ModelSpec
from unetkit.runtime.amp import AmpPolicy, resolve_amp
from unetkit.runtime.hardware import channels_last_is_faster
from unetkit.train.averaging import WeightAverage
from unetkit.train.config import DATA_FOLDERS, OPTIMIZERS, TrainConfig
from unetkit.train.distributed import Distributed, unwrap
from unetkit.train.init_from import start_from
from unetkit.train.losses import SegmentationLoss
from unetkit.train.options import fill_unset
from unetkit.train.recipes import apply_recipe, default_workers
from unetkit.train.schedulers import Schedule

Log = Callable[[str], None]


# --- pairs ---
def split_pairs(pairs: Sequence[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """A seeded random validation split; at least one image on each side when fraction > 0."""
    if fraction <= 0:
        return list(pairs), []
    if len(pairs) < 2:
        raise UnetkitError(
            f"{pairs[0].image}: only one image (a stack's planes stay together: one stack is one image here), "
            "nothing left to validate on; add images, pass --val-images/--val-masks, or set --val-fraction 0"
        )
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = min(len(pairs) - 1, max(1, round(fraction * len(pairs))))
    val = set(order[:n_val])
    return [p for i, p in enumerate(pairs) if i not in val], [pairs[i] for i in sorted(val)]


def training_pairs(
    cfg: TrainConfig, resumed_split: dict[str, list[str]] | None, log: Log
) -> tuple[list[Pair], list[Pair]]:
    """The training and validation pairs from the folders, a stack's planes each a pair of its
    own (expand_planes) after the split, which keeps a stack's planes on one side."""
    train, val = file_pairs(cfg, resumed_split, log)
    refuse_unused_axes(cfg.axes, [pair.image for pair in [*train, *val]])
    return expand_planes(train, cfg.axes), expand_planes(val, cfg.axes)


def file_pairs(cfg: TrainConfig, resumed_split: dict[str, list[str]] | None, log: Log) -> tuple[list[Pair], list[Pair]]:
    """The training and validation files: --val-images, or a seeded split, or on resume the run's
    own split (in the folders the run names, or where its data moved to)."""
    if not cfg.images or not cfg.masks:
        raise UnetkitError("train needs --images DIR and --masks DIR")
    if bool(cfg.val_images) != bool(cfg.val_masks):
        given, needed = ("--val-images", "--val-masks") if cfg.val_images else ("--val-masks", "--val-images")
        raise UnetkitError(f"{given} needs {needed} too")
    if resumed_split is not None:
        refuse_missing_folders(cfg)
    train_pairs = find_pairs(cfg.images, cfg.masks, cfg.mask_suffix)
    val_pairs = find_pairs(cfg.val_images, cfg.val_masks, cfg.mask_suffix) if cfg.val_images else None
    if val_pairs is not None:
        refuse_shared_files(train_pairs, val_pairs)
    if resumed_split is not None:
        return keep_split(resumed_split, train_pairs, val_pairs, log, cfg.images)
    if val_pairs is not None:
        return train_pairs, val_pairs
    return split_pairs(train_pairs, cfg.val_fraction, cfg.seed)


def refuse_missing_folders(cfg: TrainConfig) -> None:
    """On resume, a data folder the run names that is gone has most likely moved: say how to go on."""
    for option in DATA_FOLDERS:
        folder = getattr(cfg, option)
        if folder and not Path(folder).is_dir():
            raise UnetkitError(
                f"{folder}: this run's {option.replace('_', ' ')} folder is not there; if the data moved, resume "
                f"with --{option.replace('_', '-')} NEW_FOLDER (the run's split is found in it by file name)"
            )


def refuse_shared_files(train_pairs: Sequence[Pair], val_pairs: Sequence[Pair]) -> None:
    """Validation on the files it trains on measures nothing: --val-images/--val-masks naming the
    training folders (or links to them, or some of their files) are refused."""
    for side, options in (("image", "--images and --val-images"), ("mask", "--masks and --val-masks")):
        trained = {Path(getattr(pair, side)).resolve() for pair in train_pairs}
        for pair in val_pairs:
            if Path(getattr(pair, side)).resolve() in trained:
                raise UnetkitError(
                    f"{getattr(pair, side)}: this validation {side} is also a training {side} ({options} hold "
                    "the same files), so validation would score what the model trained on; give validation "
                    "folders of other images, or leave --val-images/--val-masks out to hold out --val-fraction"
                )


def keep_split(
    split: dict[str, list[str]],
    train_pool: Sequence[Pair],
    val_pool: Sequence[Pair] | None,
    log: Log,
    images: str,
) -> tuple[list[Pair], list[Pair]]:
    """On resume, the run's own train/validation split (stored as image file names, so the folders
    may move), whatever was added to or removed from them since: a redrawn split would validate
    on images trained on. The validation names are looked up in `val_pool` (--val-images), else
    beside the training ones. Folders that hold none of the run's training images are other
    data, refused."""
    pools = {"train": train_pool, "val": train_pool if val_pool is None else val_pool}
    by_name = {side: {p.image.name: p for p in pool} for side, pool in pools.items()}
    kept = {side: [by_name[side][name] for name in split[side] if name in by_name[side]] for side in pools}
    removed = [name for side in pools for name in split[side] if name not in by_name[side]]
    known = set(split["train"]) | set(split["val"])
    added = [name for name in dict.fromkeys([*by_name["train"], *by_name["val"]]) if name not in known]
    if not kept["train"]:
        raise UnetkitError(
            f"{images}: holds none of this run's {len(split['train'])} training images "
            f"({describe_names(split['train'])}), so it is not the run's data; resume with the folders it trained "
            "on (they may have moved: the names are matched), or start a new run without --resume"
        )
    if removed:
        log(f"note: {len(removed)} image(s) of this run are gone and are left out: {describe_names(removed)}")
    if added:
        log(
            f"note: {len(added)} image(s) added since the run started are not used, so the validation split "
            f"stays as it was: {describe_names(added)}; start a new run to train on them"
        )
    return kept["train"], kept["val"]


# --- plan: what the data says ---
@dataclass
class DataPlan:
    """What training learns from the training set before the first step, kept in checkpoints."""

    mask_values: MaskValues
    preprocess: Preprocess
    sampled_classes: list[int]  # class ids a third of the patches are centred on
    fingerprint: dict[str, Any] | None = None  # what the recipe read (None on resume: the run's own file stays)


def plan(
    cfg: TrainConfig,
    train_pairs: Sequence[Pair],
    resume_state: dict[str, Any] | None,
    device: torch.device,
    log: Log,
    init_state: dict[str, Any] | None = None,
) -> tuple[TrainConfig, DataPlan]:
    """Read and measure every training pair, let the recipe fill the unset options; on resume,
    the checkpoint's plan (its config is already resolved). `init_state`: --init-from's model,
    whose normalisation --normalize model keeps."""
    if resume_state is not None:
        data_plan = DataPlan(
            MaskValues.from_dict(resume_state["mask_values"]),
            Preprocess(**resume_state["preprocess"]),
            list(resume_state.get("sampled_classes", [])),
        )
        # Older checkpoints left these two unset in their config.
        cfg, _ = fill_unset(cfg, {"binary": resume_state["binary"], "workers": default_workers()})
    else:
        started = time.perf_counter()
        data = fingerprint_pairs(train_pairs, cfg.ignore_value, cfg.mask_values, **instance_modes(cfg, init_state))
        instances = data.mask_values.instances
        cfg, _ = fill_unset(cfg, {"instance_masks": instances is not None, "instance_target": instances})
        if data.instances_maybe:
            log(
                f"note: the masks may be instance label images (each object its own id: values "
                f"{data.mask_values.values[:6]}...); they train as classes; pass --instance-masks if each id is one "
                "object, --no-instance-masks to silence this"
            )
        if data.instances_detected:
            log(
                f"masks: instance label images (each object its own id), trained as {data.mask_values.values} "
                f"({' / '.join(INSTANCE_CLASS_NAMES[instances])}"
                f"{', as the --init-from model was' if model_instances(init_state) else ''}); "
                "--no-instance-masks trains their values as classes"
            )
        say_many_classes(data, cfg, log)
        cfg, summary = apply_recipe(cfg, data, device)
        log(f"{summary} ({time.perf_counter() - started:.1f}s to read and measure the training set)")
        preprocess = preprocess_for(cfg, data, init_state)
        data_plan = DataPlan(data.mask_values, preprocess, data.rarer_classes(data.mask_values), data.to_dict())
    check_plan(cfg, data_plan.mask_values)
    return cfg, data_plan


def preprocess_for(cfg: TrainConfig, data: DataFingerprint, init_state: dict[str, Any] | None = None) -> Preprocess:
    """The set's mean and std; or, normalising each image by its percentiles, none (the images
    are in [0, 1] already, and the network's first BatchNorm standardises what it sees); or
    (--normalize model) the --init-from model's own, at this run's scale."""
    if cfg.normalize == "model" and init_state is not None:  # TrainConfig.check: --normalize model needs it
        kept = Preprocess(**init_state["preprocess"])
        if kept.in_channels != data.channels:
            raise UnetkitError(
                f"--normalize model: the model normalises {kept.in_channels} channel(s) and these images have "
                f"{data.channels}; use --normalize dataset or image"
            )
        return dataclasses.replace(kept, scale=cfg.scale)
    if cfg.normalize == "image":
        zeros, ones = [0.0] * data.channels, [1.0] * data.channels
        return Preprocess(data.channels, zeros, ones, cfg.scale, percentiles=list(IMAGE_PERCENTILES))
    return Preprocess(data.channels, data.mean, data.std, cfg.scale)


def instance_modes(cfg: TrainConfig, init_state: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the fingerprint takes the masks as: instance masks trained as --instance-target's
    classes (default DEFAULT_INSTANCE_TARGET), given by --instance-masks or, when unset, detected
    from the masks (none when --mask-values names the classes). A run from an instance model keeps
    the model's kind of target where the masks fit it, however few they are."""
    from_model = model_instances(init_state)
    mode = cfg.instance_target or from_model or DEFAULT_INSTANCE_TARGET
    if cfg.instance_masks:
        return {"instances": mode, "detect": None}
    detect = cfg.instance_masks is None and cfg.mask_values is None
    return {"instances": None, "detect": mode if detect else None, "fits_model": bool(detect and from_model)}


def model_instances(init_state: dict[str, Any] | None) -> str | None:
    """The --init-from model's instance target (objects, boundary), or None."""
    values = (init_state or {}).get("mask_values")
    return values.get("instances") if isinstance(values, dict) else None


# Classes that read as a hint of instance masks when a set holds more of them than images: the
# correct-and-retrain loop's eight nuclei images trained as 57 classes and scored AP@0.5 0.16.
MANY_CLASSES = 16


def say_many_classes(data: DataFingerprint, cfg: TrainConfig, log: Log) -> None:
    """Dozens of classes from a handful of images is said plainly, with the option that reads the
    masks the other way."""
    classes = data.mask_values.num_classes
    if data.mask_values.instances or cfg.mask_values or classes <= MANY_CLASSES or data.num_images >= classes:
        return
    log(
        f"note: the masks hold {classes} values, so this trains {classes} classes from {data.num_images} images; "
        "if each value is one object (instance masks), pass --instance-masks"
    )


def check_plan(cfg: TrainConfig, mask_values: MaskValues) -> None:
    if cfg.binary and mask_values.num_classes != 2:
        # binary = true has no flag (--multiclass turns it off): it comes from a config file or TrainConfig
        raise UnetkitError(
            f"binary = true (one sigmoid output) needs masks with two values, but these have "
            f"{mask_values.num_classes}: {mask_values.values}; remove binary from the config file (or set it to "
            "false) to train a softmax over the classes"
        )
    if cfg.class_weights is not None and len(cfg.class_weights) != mask_values.num_classes:
        raise UnetkitError(
            f"--class-weights has {len(cfg.class_weights)} weight(s) but the masks have "
            f"{mask_values.num_classes} classes {mask_values.values}; give one weight per class"
        )


# --- datasets ---
def build_datasets(
    cfg: TrainConfig, data_plan: DataPlan, train_pairs: Sequence[Pair], val_pairs: Sequence[Pair]
) -> tuple[SegmentationDataset, SegmentationDataset]:
    """The training set (patches, augmentation) and the validation set (whole images); every
    file is decoded and checked here, before the first step."""
    augment = None
    if cfg.augment:
        turns = cfg.orientation != "upright"  # upright scenes are only mirrored left-right
        no_elastic = {} if cfg.elastic else {"elastic_sigma_px": 0.0}
        strong = STRONG_PHOTOMETRIC if cfg.photometric == "strong" else {}
        zoom = (1 / cfg.zoom, cfg.zoom)
        augment = AugmentConfig(vertical_flips=turns, rotate90=turns, scale_range=zoom, **no_elastic, **strong)
    cache_bytes = cfg.cache_gb * 2**30 if cfg.cache_gb is not None else None
    shared = {"mask_values": data_plan.mask_values, "preprocess": data_plan.preprocess, "cache_bytes": cache_bytes}
    train_set = SegmentationDataset(
        train_pairs,
        patch_size=cfg.patch_size or None,
        augment=augment,
        patches_per_image=cfg.patches_per_image,
        sampled_classes=data_plan.sampled_classes,
        border_weights=(cfg.border_weight, cfg.border_sigma) if cfg.border_weight else None,
        **shared,
    )
    val_set = SegmentationDataset(val_pairs, **shared)
    train_set.check_all()
    val_set.check_all()
    if not cfg.patch_size:
        check_image_sizes(cfg, train_set)
    return train_set, val_set


def check_image_sizes(cfg: TrainConfig, train_set: SegmentationDataset) -> None:
    """Whole-image training needs every image at least the network's minimum size."""
    minimum = cfg.min_input_size()
    for index, pair in enumerate(train_set.pairs):
        height, width = train_set.load(index)[0].shape[-2:]
        if min(height, width) < minimum:
            raise UnetkitError(
                f"{pair.image}: image is {width}x{height} pixels at --scale {cfg.scale:g}, smaller than "
                f"the {minimum}x{minimum} minimum of a {cfg.model} of --depth {cfg.depth}; "
                "use larger images, a larger --scale or a smaller --depth, or remove it"
            )


# --- model ---
def model_spec(cfg: TrainConfig, data_plan: DataPlan) -> ModelSpec:
    """The registered model's arguments from the options (the model says which it reads)."""
    out_channels = 1 if cfg.binary else data_plan.mask_values.num_classes
    args = model_class(cfg.model).arguments(cfg, data_plan.preprocess.in_channels, out_channels)
    return ModelSpec(cfg.model, args, data_plan.mask_values, data_plan.preprocess, bool(cfg.binary))


@dataclass
class ModelSetup:
    model: nn.Module  # wrapped in DDP under torchrun
    amp: AmpPolicy
    channels_last: bool
    memory_format: torch.memory_format
    notes: list[str]  # what --init-from adapted, for the log


def build_model(
    cfg: TrainConfig, spec: ModelSpec, dist: Distributed, init_state: dict[str, Any] | None = None
) -> ModelSetup:
    """The network with seeded initial weights (or those of --init-from's model), its AMP policy
    and memory layout, the same on every rank."""
    torch.manual_seed(cfg.seed)  # the same initial weights for the same seed
    model = spec.build()
    notes = start_from(model, spec, init_state, cfg.init_from) if init_state is not None else []
    model = model.to(dist.device)
    amp = resolve_amp(cfg.amp, dist.device)
    chosen = dist.broadcast_object(amp.name)  # `auto` times a conv: ranks could disagree
    if chosen != amp.name:
        amp = resolve_amp(chosen, dist.device)
    if cfg.channels_last == "auto":
        width = model_class(spec.name).probe_channels(spec.args)
        channels = max(16, min(64, width))
        size = min(256, cfg.patch_size or 256)
        channels_last = channels_last_is_faster(dist.device, amp.dtype, channels=channels, size=size, backward=True)
    else:
        channels_last = cfg.channels_last == "on"
    channels_last = dist.broadcast_object(channels_last)  # DDP needs one layout
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = dist.wrap(model.to(memory_format=memory_format), cfg.sync_bn)  # DDP under torchrun
    return ModelSetup(model, amp, channels_last, memory_format, notes)


# --- optimisation ---
def build_optimizer(cfg: TrainConfig, params: Any) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":  # the U-Net paper: SGD with momentum 0.99
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":  # milesial/Pytorch-UNet's choice
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    raise UnetkitError(f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")


@dataclass
class Optimisation:
    criterion: SegmentationLoss
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    sampler: DistributedSampler | None  # under torchrun: each rank's share of every epoch
    schedule: Schedule
    scaler: torch.amp.GradScaler
    average: WeightAverage | None  # --ema: the weights validated, saved and predicted with


def build_optimisation(
    cfg: TrainConfig,
    setup: ModelSetup,
    train_set: SegmentationDataset,
    dist: Distributed,
    time_progress: Callable[[int, int], float],
) -> Optimisation:
    """Loss, optimizer, loader, LR schedule (over the epochs, or over --time through
    `time_progress(step, steps_per_epoch)`), the fp16 gradient scaler and the weights' average."""
    criterion = SegmentationLoss(cfg.loss, cfg.class_weights).to(dist.device)
    optimizer = build_optimizer(cfg, setup.model.parameters())
    sampler = dist.sampler(train_set, cfg.seed)
    per_rank = len(sampler) if sampler is not None else len(train_set)
    loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=per_rank > cfg.batch_size,
        num_workers=cfg.workers,
        pin_memory=dist.device.type == "cuda",
        persistent_workers=cfg.workers > 0,
        collate_fn=None if cfg.patch_size else pad_collate,  # whole images of mixed sizes
    )
    schedule = Schedule(
        cfg.scheduler,
        optimizer,
        len(loader),
        cfg.epochs or 1,
        cfg.warmup_epochs,
        cfg.step_size,
        cfg.gamma,
        time_progress=(lambda step: time_progress(step, len(loader))) if cfg.time else None,
    )
    scaler = torch.amp.GradScaler(dist.device.type, enabled=setup.amp.use_scaler)
    average = WeightAverage(unwrap(setup.model), cfg.ema) if cfg.ema else None
    return Optimisation(criterion, optimizer, loader, sampler, schedule, scaler, average)
