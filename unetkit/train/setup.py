"""Training setup as small builders, in the order a run needs them, after the pairs (split.py)
and the data plan (data_plan.py):

  datasets -> model (AMP, memory layout, DDP) -> optimisation (loss, optimizer, loader,
  schedule, scaler)

Each takes the resolved options and returns what the Trainer (loop.py) holds."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from unetkit.data import AugmentConfig, Pair, SegmentationDataset
from unetkit.data.dataset import CACHE_SHARE, pad_collate
from unetkit.data.transforms import STRONG_PHOTOMETRIC
from unetkit.errors import UnetkitError
from unetkit.models import model_class
from unetkit.models.checkpoint import cpu_weights
from unetkit.models.conv3x3 import probe_choices, restore_probe_choices, without_probes
from unetkit.models.spec import ModelSpec
from unetkit.runtime.allocator import keep_freed_memory
from unetkit.runtime.amp import AmpPolicy, resolve_amp
from unetkit.runtime.hardware import channels_last_is_faster, cpu_description, memory_bytes
from unetkit.train.averaging import WeightAverage
from unetkit.train.budget import TimeBudget
from unetkit.train.config import OPTIMIZERS, TrainConfig
from unetkit.train.data_plan import DataPlan
from unetkit.train.distributed import Distributed, processes_on_this_machine, unwrap
from unetkit.train.encoder_weights import load_encoder_weights, parameter_groups, pretrained
from unetkit.train.fused_adamw import FusedAdamW
from unetkit.train.init_from import start_from
from unetkit.train.losses import SegmentationLoss
from unetkit.train.schedulers import Schedule


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
    # torchrun's processes on one machine each keep their own cache: each takes its share (a review)
    share = CACHE_SHARE * memory_bytes() / processes_on_this_machine()
    cache_bytes = cfg.cache_gb * 2**30 if cfg.cache_gb is not None else share
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
    machine: str  # what the speed choices were timed on (machine_of), read once


def build_model(
    cfg: TrainConfig,
    spec: ModelSpec,
    dist: Distributed,
    init_state: dict[str, Any] | None = None,
    resume_state: dict[str, Any] | None = None,
) -> ModelSetup:
    """The network with seeded initial weights (or those of --init-from's model, or its encoder's
    --encoder-weights; a resumed run's come from its checkpoint), its AMP policy and memory
    layout, the same on every rank; a resumed run on the same CPU or GPU keeps its timed choices
    (speed_choices)."""
    torch.manual_seed(cfg.seed)  # the same initial weights for the same seed
    model = spec.build()
    notes = start_from(model, spec, init_state, cfg.init_from) if init_state is not None else []
    if pretrained(cfg.encoder_weights) and resume_state is None:
        notes.append(load_encoder_weights(model, cfg.encoder_weights))
    model = model.to(dist.device)
    if dist.device.type == "cpu":
        keep_freed_memory()  # activation maps and gradients from the heap (runtime/allocator.py)
    kept, machine = (resume_state or {}).get("speed_choices"), machine_of(dist.device)
    if kept is not None and kept.get("machine") == machine:
        restore_probe_choices(kept["conv3x3"])
        amp = replace(resolve_amp(kept["amp"], dist.device), reason=kept["amp_reason"] + KEPT)
        channels_last = kept["channels_last"]
    else:
        amp, channels_last = timed_choices(cfg, spec, dist)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = dist.wrap(model.to(memory_format=memory_format), cfg.sync_bn)  # DDP under torchrun
    return ModelSetup(model, amp, channels_last, memory_format, notes, machine)


def machine_of(device: torch.device) -> str:
    """What the speed choices were timed on: the CPU (its model, flags and threads) or the GPU. On
    another, a resume times them again: bf16 kept from an AMX CPU runs ~10x slower than fp32 on
    one with AVX2 alone."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_description()


KEPT = " (kept from the resumed run)"  # said once however often a run was resumed

# A parameter's training state: its fp32 weight, gradient and AdamW's two moments.
BYTES_PER_TRAINED_PARAMETER = 16
MAPS_MEASURED_AT = 128  # the side the kept activation maps are counted at (they grow with the pixels)


def check_training_fits(
    cfg: TrainConfig, spec: ModelSpec, device: torch.device, largest_side: int = 0, samples: int = 0
) -> None:
    """Refuse in one line, before any weight is allocated, a run whose training state passes the
    device's memory: the weights, gradients and optimizer state (`--depth 9 --base-channels 32`,
    8.6e9 parameters, was killed for memory with no message), then those plus the activation maps
    a batch keeps for its backward pass (`--patch-size 512 --batch-size 512` asked for ~80 GiB and
    ended in an allocator's traceback: red-team rounds). The parameters are counted on the meta
    device, which holds no numbers, and only once they fit are the maps counted for real; the maps
    at bf16's 2 bytes unless --amp off, so only a run that cannot fit in any precision is refused.
    `largest_side`: the training images' (whole-image training); `samples`: an epoch's, which a
    batch cannot pass (one 4000^2 image was refused at the batch of 4 it never fills: a red-team
    round)."""
    try:
        skeleton = laid_out_on_meta(spec)
    except Exception:  # a model that cannot be built or run there (an encoder's own code) is not checked
        return
    parameters = sum(p.numel() for p in skeleton.parameters())
    sharing = 1 if device.type == "cuda" else processes_on_this_machine()
    have = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else memory_bytes() // sharing
    weights = BYTES_PER_TRAINED_PARAMETER * parameters
    where = f"this {device.type.upper()} has {have / 2**30:,.1f} GiB" + (
        f" for each of the {sharing} torchrun processes that share it" if sharing > 1 else ""
    )
    if weights > have:
        shape = ", ".join(f"{key} {value}" for key, value in spec.args.items() if key in ("depth", "base_channels"))
        raise UnetkitError(
            f"a {spec.name} ({shape}) has {parameters / 1e6:,.0f}M parameters: training needs {weights / 2**30:,.1f} "
            f"GiB for its weights, gradients and optimizer state alone, and {where}; use a smaller --depth or "
            "--base-channels"
        )
    side = cfg.patch_size or round(largest_side * cfg.scale)
    if not side:
        return
    try:
        maps = kept_maps(skeleton, spec.in_channels)  # the weights fit: they may be laid out for real now
    except Exception:
        return
    batch = min(cfg.batch_size or 1, samples) if samples else cfg.batch_size or 1
    per_sample = maps * (side / MAPS_MEASURED_AT) ** 2 * (1.0 if cfg.amp == "off" else 0.5)
    if weights + batch * per_sample <= have:
        return
    what = f"{side}x{side} patches" if cfg.patch_size else f"whole images (up to {side} px a side)"
    # The counted maps are a floor: HC18 at 512 px, batch 16, counted 2.5 / 5.0 GiB (bf16 / fp32)
    # and peaked at 6.2 / 8.4 GiB of RSS (~1.7x fp32's count). The batch offered keeps fp32's count
    # within a quarter of the memory, so its peak leaves room for the data and other programs.
    fits = int((have - weights) // (4 * maps * (side / MAPS_MEASURED_AT) ** 2))
    fits = fits or int(weights + per_sample <= have)  # one that passes this floor, where a quarter allows none
    fix = f"--batch-size {fits} or less" if fits else "a smaller --patch-size or --scale"
    besides = f", besides {weights / 2**30:,.1f} GiB of weights and optimizer state" if weights > 2**26 else ""
    asked = f"--batch-size {batch}" if batch == cfg.batch_size else f"a batch of {batch} (all an epoch's samples)"
    raise UnetkitError(
        f"{asked} of {what} keeps at least {batch * per_sample / 2**30:,.1f} GiB of activation maps for "
        f"the backward pass{besides}, and {where}; use {fix}"
    )


def laid_out_on_meta(spec: ModelSpec) -> nn.Module:
    """The network's modules on the meta device: shapes without memory, so its parameters are
    counted before a model too large for the machine allocates anything."""
    with torch.device("meta"):
        return spec.build().train()


def kept_maps(skeleton: nn.Module, in_channels: int) -> float:
    """The bytes of activation maps (fp32) one training forward of one MAPS_MEASURED_AT-sided sample
    keeps for its backward pass (the weights left out), on the CPU: run on the meta device, the
    forward imported torch's meta kernels and sympy, ~1 s of every `unetkit train`'s start (a
    1-epoch run 8.9 -> 7.8 s; the forward here: 0.05 s for the recipe's 1M-parameter U-Net, 0.5 s
    for the paper's 31M). The weights are laid out uninitialised and zeroed: only shapes count."""
    model = skeleton.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            tensor.zero_()
    weights = {id(p) for p in model.parameters()}
    kept: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in weights:
            kept[id(tensor)] = tensor.numel() * tensor.element_size()
        return tensor

    x = torch.zeros(1, in_channels, MAPS_MEASURED_AT, MAPS_MEASURED_AT)
    with without_probes(), torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        model(x)
    return float(sum(kept.values()))


def counted(spec: ModelSpec) -> tuple[int, float]:
    """The network's parameters and its kept activation maps (see kept_maps)."""
    skeleton = laid_out_on_meta(spec)
    return sum(p.numel() for p in skeleton.parameters()), kept_maps(skeleton, spec.in_channels)


def timed_choices(cfg: TrainConfig, spec: ModelSpec, dist: Distributed) -> tuple[AmpPolicy, bool]:
    """--amp and --channels-last as given, or where `auto` as timed on this device: rank 0's."""
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
    return amp, dist.broadcast_object(channels_last)  # DDP needs one layout


def speed_choices(setup: ModelSetup, device: torch.device) -> dict[str, Any]:
    """What this run timed and chose for speed, as its checkpoint keeps it for a resume: the AMP
    dtype, the layout and the 3x3 convolutions' kernels (models/conv3x3.py). Each rounds
    differently, and timed afresh the marginal ones went either way between processes, so a resumed
    run that timed again computed unlike the run it continued (a red-team round, benchmarks/NOTES.md)."""
    return {"device": device.type, "machine": setup.machine, "amp": setup.amp.name,
            "amp_reason": setup.amp.reason.removesuffix(KEPT),
            "channels_last": setup.channels_last, "conv3x3": probe_choices()}  # fmt: skip


# --- optimisation ---
def build_optimizer(cfg: TrainConfig, params: Any) -> torch.optim.Optimizer:
    params = list(params)  # weights, or groups of them; a generator would be used up by a look
    if cfg.optimizer == "adamw":
        # One fused kernel over all the weights where PyTorch has it (CPU, CUDA), instead of a
        # loop of elementwise ops per tensor: the paper's U-Net's step ~8% sooner on an
        # AMX CPU. Its rounding differs in the last bits; at equal epochs (isbi2012, 3 seeds) no
        # score moved beyond the seed's spread (benchmarks/NOTES.md, issue 36).
        if fused_kernel_exists(params):
            return FusedAdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":  # the U-Net paper: SGD with momentum 0.99
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":  # milesial/Pytorch-UNet's choice
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    raise UnetkitError(f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")


def fused_kernel_exists(params: list) -> bool:
    """Whether every weight lives where PyTorch has a fused AdamW (CPU, CUDA) and is a float."""
    tensors = [p for item in params for p in (item["params"] if isinstance(item, dict) else [item])]
    return bool(tensors) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in tensors)


@dataclass
class Optimisation:
    criterion: SegmentationLoss
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    sampler: DistributedSampler | None  # under torchrun: each rank's share of every epoch
    schedule: Schedule
    scaler: torch.amp.GradScaler
    average: WeightAverage | None  # --ema: the weights validated, saved and predicted with

    def state_dict(self, model: nn.Module) -> dict[str, Any]:
        """What a checkpoint keeps to resume the optimisation; under --ema also the optimizer's own
        weights (`model`'s: the checkpoint's "model" is the average) and the average's age."""
        raw = {"training_model": cpu_weights(model), "ema_updates": self.average.updates} if self.average else {}
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict(), **raw}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        """Resume from a checkpoint's `state`: `model`'s weights (the optimizer's own), the average,
        the optimizer, the schedule and the scaler."""
        model.load_state_dict(state.get("training_model", state["model"]))
        if self.average is not None:
            self.average.restore(state["model"], state.get("ema_updates", 0))
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


def build_optimisation(
    cfg: TrainConfig,
    setup: ModelSetup,
    train_set: SegmentationDataset,
    dist: Distributed,
    budget: TimeBudget,
) -> Optimisation:
    """Loss, optimizer, loader, LR schedule (over the epochs, or over --time through
    the `budget`: its progress), the fp16 gradient scaler and the weights' average."""
    criterion = SegmentationLoss(cfg.loss, cfg.class_weights).to(dist.device)
    optimizer = build_optimizer(cfg, parameter_groups(unwrap(setup.model), cfg.lr, cfg.encoder_lr))
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
        time_progress=(lambda step: budget.progress(step, len(loader))) if budget.limit else None,
    )
    scaler = torch.amp.GradScaler(dist.device.type, enabled=setup.amp.use_scaler)
    average = WeightAverage(unwrap(setup.model), cfg.ema) if cfg.ema else None
    return Optimisation(criterion, optimizer, loader, sampler, schedule, scaler, average)
