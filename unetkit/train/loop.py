"""Training, start to finish: config -> data -> model -> loss -> optimizer/scheduler -> epochs
(train, validate, checkpoint) -> run folder."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from unetkit.atomic import ensure_folder, remove_stale_temporaries
from unetkit.data import (
    AugmentConfig,
    MaskValues,
    Pair,
    Preprocess,
    SegmentationDataset,
    find_pairs,
)
from unetkit.data.dataset import pad_collate
from unetkit.data.fingerprint import fingerprint_pairs
from unetkit.data.pairing import describe_names
from unetkit.errors import UnetkitError
from unetkit.hardware import channels_last_is_faster, cpu_description, resolve_device
from unetkit.losses import SegmentationLoss
from unetkit.metrics import SegmentationMetrics, predicted_classes
from unetkit.models import create_model
from unetkit.train.amp import AmpPolicy, resolve_amp
from unetkit.train.checkpoint import load_checkpoint, save_checkpoint
from unetkit.train.config import TrainConfig
from unetkit.train.config_file import write_config_toml
from unetkit.train.distributed import quiet, setup_distributed, unwrap
from unetkit.train.interrupt import InterruptFlag
from unetkit.train.recipes import apply_recipe
from unetkit.train.run_files import plot_curves, write_json, write_metrics_csv
from unetkit.train.run_lock import RunLock
from unetkit.train.schedulers import Schedule

if TYPE_CHECKING:
    from unetkit.train.tensorboard import TensorBoardLog

OPTIMIZERS = ("adamw", "sgd", "rmsprop")
# Options a resumed run may change; everything else comes from the checkpoint's config.
RESUMABLE_OVERRIDES = ("epochs", "patience", "time", "min_epochs", "progress", "workers", "device", "cache_gb")


@dataclass
class RunResult:
    out: Path
    best_checkpoint: Path
    last_checkpoint: Path
    history: list[dict[str, float]]
    best_dice: float


def split_pairs(pairs: Sequence[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """A seeded random validation split; at least one image on each side when fraction > 0."""
    if fraction <= 0:
        return list(pairs), []
    if len(pairs) < 2:
        raise UnetkitError(
            f"{pairs[0].image.parent}: only one image, nothing left to validate on; "
            "add images, pass --val-images/--val-masks, or set --val-fraction 0"
        )
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = min(len(pairs) - 1, max(1, round(fraction * len(pairs))))
    val = set(order[:n_val])
    return [p for i, p in enumerate(pairs) if i not in val], [pairs[i] for i in sorted(val)]


def build_optimizer(cfg: TrainConfig, params: Any) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":  # the U-Net paper: SGD with momentum 0.99
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":  # milesial/Pytorch-UNet's choice
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    raise UnetkitError(f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")


def model_arguments(cfg: TrainConfig, in_channels: int, out_channels: int) -> dict[str, Any]:
    if cfg.model == "dumbnet":
        return {"in_channels": in_channels, "num_classes": out_channels, "width": cfg.base_channels}
    return {
        "in_channels": in_channels,
        "num_classes": out_channels,
        "base_channels": cfg.base_channels,
        "depth": cfg.depth,
        "upsampling": cfg.upsampling,
    }


def _resumed_config(cfg: TrainConfig, state: dict[str, Any], overrides: Collection[str] | None) -> TrainConfig:
    """The checkpoint's config, with the RESUMABLE_OVERRIDES the user set: those named in
    `overrides` (the command line knows what was typed), or else those that differ from the
    defaults (a Python caller's TrainConfig)."""
    saved = TrainConfig(**state["config"])
    defaults = TrainConfig()
    for name in RESUMABLE_OVERRIDES:
        given = name in overrides if overrides is not None else getattr(cfg, name) != getattr(defaults, name)
        if given:
            setattr(saved, name, getattr(cfg, name))
    saved.resume = cfg.resume
    saved.out = str(Path(cfg.resume).parent) if cfg.out is None else cfg.out
    return saved


def _prepare_run_folder(cfg: TrainConfig) -> Path:
    out = Path(cfg.out) if cfg.out else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    for option in ("images", "masks", "val_images", "val_masks"):
        folder = getattr(cfg, option)
        if folder and Path(folder).resolve() == out.resolve():
            raise UnetkitError(
                f"{out}: --out is the --{option.replace('_', '-')} folder; the run's checkpoints, plots and logs "
                "would mix with your data; choose another --out"
            )
    resuming_here = cfg.resume is not None and out.resolve() == Path(cfg.resume).resolve().parent
    if not resuming_here:
        _refuse_finished_run(out, cfg.resume)
    return out


def _refuse_finished_run(out: Path, resume: str | None) -> None:
    """A folder that holds another run's checkpoint is never written into."""
    finished = [name for name in ("best.pt", "last.pt") if (out / name).exists()]
    if not finished:
        return
    if resume is not None:
        raise UnetkitError(
            f"{out / finished[0]}: --out holds another run's checkpoint, and resuming {resume} there would "
            f"replace it; resume into the run's own folder ({Path(resume).parent}) or an empty --out"
        )
    raise UnetkitError(
        f"{out / finished[0]}: the run folder already holds a checkpoint; "
        f"continue it with --resume {out / 'last.pt'} or choose another --out"
    )


def _pairs_from_folders(cfg: TrainConfig, val_pairs: Sequence[Pair] | None) -> tuple[list[Pair], list[Pair]]:
    if not cfg.images or not cfg.masks:
        raise UnetkitError("train needs --images DIR and --masks DIR")
    train_pairs = find_pairs(cfg.images, cfg.masks, cfg.mask_suffix)
    if val_pairs is None and cfg.val_images:
        if not cfg.val_masks:
            raise UnetkitError("--val-images needs --val-masks too")
        val_pairs = find_pairs(cfg.val_images, cfg.val_masks, cfg.mask_suffix)
    elif val_pairs is None:
        train_pairs, val_pairs = split_pairs(train_pairs, cfg.val_fraction, cfg.seed)
    return list(train_pairs), list(val_pairs or [])


def _keep_split(split: dict[str, list[str]], pairs: Sequence[Pair], log: Callable[[str], None]) -> tuple[list, list]:
    """On resume, the run's own random train/validation split (stored as image file names, so the
    folder may move), whatever was added to or removed from it since: a redrawn split would
    validate on images trained on."""
    by_name = {p.image.name: p for p in pairs}
    kept = {side: [by_name[name] for name in split[side] if name in by_name] for side in ("train", "val")}
    removed = [name for side in ("train", "val") for name in split[side] if name not in by_name]
    known = set(split["train"]) | set(split["val"])
    added = [name for name in by_name if name not in known]
    if removed:
        log(f"note: {len(removed)} image(s) of this run are gone and are left out: {describe_names(removed)}")
    if added:
        log(
            f"note: {len(added)} image(s) added since the run started are not used, so the validation split "
            f"stays as it was: {describe_names(added)}; start a new run to train on them"
        )
    if not kept["train"]:
        raise UnetkitError("none of this run's training images are left; check --images or start a new run")
    return kept["train"], kept["val"]


class Trainer:
    """Holds the pieces of one run; `fit()` runs the epochs."""

    def __init__(
        self,
        cfg: TrainConfig,
        train_pairs: Sequence[Pair] | None = None,
        val_pairs: Sequence[Pair] | None = None,
        log: Callable[[str], None] = print,
        resume_overrides: Collection[str] | None = None,
    ) -> None:
        self.log = log
        self.elapsed_before = 0.0  # training seconds spent before this process (on resume)
        self.started: float | None = None
        resume_state = load_checkpoint(cfg.resume) if cfg.resume else None
        if resume_state is not None:
            if "config" not in resume_state or "optimizer" not in resume_state:
                raise UnetkitError(f"{cfg.resume}: a weights-only export cannot be resumed; pass the run's last.pt")
            cfg = _resumed_config(cfg, resume_state, resume_overrides)
        cfg.validate()
        self.cfg = cfg
        self.dist = setup_distributed(resolve_device(cfg.device))  # single-process unless torchrun
        self.log = log if self.dist.is_main else quiet
        self.out = self.dist.broadcast_object(_prepare_run_folder(cfg))  # one timestamped folder
        self.device = self.dist.device

        # --- data: pairs, classes, preprocessing; every file is decoded and checked here ---
        if train_pairs is None:
            train_pairs, val_pairs = _pairs_from_folders(cfg, val_pairs)
            if resume_state is not None and "split" in resume_state and not cfg.val_images:
                train_pairs, val_pairs = _keep_split(resume_state["split"], train_pairs + val_pairs, self.log)
        self.train_pairs, self.val_pairs = list(train_pairs), list(val_pairs or [])
        if cfg.patience is not None and not self.val_pairs:
            raise UnetkitError(
                f"--patience {cfg.patience} needs validation images to watch; "
                "give --val-images/--val-masks or a --val-fraction above 0"
            )
        if resume_state is not None:  # a resumed config is already resolved
            self.mask_values = MaskValues.from_dict(resume_state["mask_values"])
            self.preprocess = Preprocess(**resume_state["preprocess"])
            self.sampled_classes = list(resume_state.get("sampled_classes", []))
        else:
            started = time.perf_counter()
            data = fingerprint_pairs(self.train_pairs, cfg.ignore_value, cfg.mask_values)
            cfg, plan = apply_recipe(cfg, data, self.device)
            cfg.validate()
            self.cfg = cfg
            self.log(f"{plan} ({time.perf_counter() - started:.1f}s to read and measure the training set)")
            self.mask_values = data.mask_values
            self.preprocess = Preprocess(data.channels, data.mean, data.std, cfg.scale)
            self.sampled_classes = data.rarer_classes(self.mask_values)
        self.binary = self.mask_values.num_classes == 2 if cfg.binary is None else cfg.binary
        if self.binary and self.mask_values.num_classes != 2:
            raise UnetkitError(f"--binary needs masks with two values, found {self.mask_values.values}")
        if cfg.class_weights is not None and len(cfg.class_weights) != self.mask_values.num_classes:
            raise UnetkitError(
                f"--class-weights has {len(cfg.class_weights)} weight(s) but the masks have "
                f"{self.mask_values.num_classes} classes {self.mask_values.values}; give one weight per class"
            )
        augment = None
        if cfg.augment:
            turns = cfg.orientation != "upright"  # upright scenes are only mirrored left-right
            no_elastic = {} if cfg.elastic else {"elastic_sigma_px": 0.0}
            augment = AugmentConfig(vertical_flips=turns, rotate90=turns, **no_elastic)
        cache_bytes = cfg.cache_gb * 2**30 if cfg.cache_gb is not None else None
        self.train_set = SegmentationDataset(
            self.train_pairs,
            self.mask_values,
            self.preprocess,
            patch_size=cfg.patch_size or None,
            augment=augment,
            patches_per_image=cfg.patches_per_image,
            cache_bytes=cache_bytes,
            sampled_classes=self.sampled_classes,
        )
        self.val_set = SegmentationDataset(
            self.val_pairs,
            self.mask_values,
            self.preprocess,
            cache_bytes=cache_bytes,
        )
        self.train_set.check_all()
        self.val_set.check_all()
        if not cfg.patch_size:
            self._check_image_sizes()

        # --- model, loss, optimisation ---
        torch.manual_seed(cfg.seed)  # the same initial weights for the same seed
        out_channels = 1 if self.binary else self.mask_values.num_classes
        self.model_args = model_arguments(cfg, self.preprocess.in_channels, out_channels)
        self.model: nn.Module = create_model(cfg.model, **self.model_args).to(self.device)
        self.amp: AmpPolicy = resolve_amp(cfg.amp, self.device)
        chosen = self.dist.broadcast_object(self.amp.name)  # `auto` times a conv: ranks could disagree
        if chosen != self.amp.name:
            self.amp = resolve_amp(chosen, self.device)
        if cfg.channels_last == "auto":
            self.channels_last = channels_last_is_faster(
                self.device,
                self.amp.dtype,
                channels=max(16, min(64, self.model_args.get("base_channels") or self.model_args.get("width") or 32)),
                size=min(256, cfg.patch_size or 256),
                backward=True,
            )
        else:
            self.channels_last = cfg.channels_last == "on"
        self.channels_last = self.dist.broadcast_object(self.channels_last)  # DDP needs one layout
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.model = self.dist.wrap(self.model, cfg.sync_bn)  # DDP under torchrun
        self.criterion = SegmentationLoss(cfg.loss, cfg.class_weights).to(self.device)
        self.optimizer = build_optimizer(cfg, self.model.parameters())
        workers = cfg.workers if cfg.workers is not None else (0 if (torch.get_num_threads() <= 4) else 4)
        self.train_sampler = self.dist.sampler(self.train_set, cfg.seed)
        per_rank = len(self.train_sampler) if self.train_sampler is not None else len(self.train_set)
        self.train_loader = DataLoader(
            self.train_set,
            batch_size=cfg.batch_size,
            shuffle=self.train_sampler is None,
            sampler=self.train_sampler,
            drop_last=per_rank > cfg.batch_size,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            collate_fn=None if cfg.patch_size else pad_collate,  # whole images of mixed sizes
        )
        self.schedule = Schedule(
            cfg.scheduler,
            self.optimizer,
            len(self.train_loader),
            cfg.epochs or 1,
            cfg.warmup_epochs,
            cfg.step_size,
            cfg.gamma,
            time_progress=self.timed_progress if cfg.time else None,
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp.use_scaler)

        self.start_epoch = 1
        self.history: list[dict[str, float]] = []
        self.best_dice = -math.inf
        self.epochs_since_best = 0
        if resume_state is not None:
            self._restore(resume_state)
        self.saved_epoch = self.start_epoch - 1  # the epoch last.pt holds; 0: none yet
        self.interrupt = InterruptFlag()

    def _check_image_sizes(self) -> None:
        """Whole-image training needs every image at least the network's minimum size."""
        minimum = self.cfg.min_input_size()
        for index, pair in enumerate(self.train_pairs):
            height, width = self.train_set.load(index)[0].shape[-2:]
            if min(height, width) < minimum:
                raise UnetkitError(
                    f"{pair.image}: image is {width}x{height} pixels at --scale {self.cfg.scale:g}, smaller than "
                    f"the {minimum}x{minimum} minimum of a {self.cfg.model} of --depth {self.cfg.depth}; "
                    "use larger images, a larger --scale or a smaller --depth, or remove it"
                )

    def epoch_label(self, epoch: int) -> str:
        return f"{epoch}/{self.cfg.epochs}" if self.cfg.epochs else str(epoch)

    def timed_progress(self, step: int) -> float:
        """Fraction of a timed run done: of the --time budget, or, when --min-epochs would not fit in
        it (a slow or busy machine), of those epochs, whichever is behind. So the LR reaches ~0
        when both the time and the minimum epochs are spent."""
        steps_per_epoch = len(self.train_loader)
        progress = self.elapsed() / self.cfg.time
        if self.cfg.min_epochs:
            progress = min(progress, step / (self.cfg.min_epochs * steps_per_epoch))
        if self.cfg.epochs:  # the epochs may run out before the time does: anneal by then too
            progress = max(progress, step / (self.cfg.epochs * steps_per_epoch))
        return progress

    def elapsed(self) -> float:
        """Seconds of training so far, across resumes: what a --time budget counts."""
        running = time.perf_counter() - self.started if self.started is not None else 0.0
        return self.elapsed_before + running

    # --- checkpoints ---
    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            "model_name": self.cfg.model,
            "model_args": self.model_args,
            "model": {k: v.detach().cpu().contiguous() for k, v in unwrap(self.model).state_dict().items()},
            "mask_values": self.mask_values.to_dict(),
            "preprocess": self.preprocess.to_dict(),
            "binary": self.binary,
            "sampled_classes": self.sampled_classes,
            "split": {"train": [p.image.name for p in self.train_pairs], "val": [p.image.name for p in self.val_pairs]},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "best_dice": self.best_dice,
            "epochs_since_best": self.epochs_since_best,
            "elapsed_seconds": self.elapsed(),
            "history": self.history,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            "config": self.cfg.to_dict(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = state["epoch"] + 1
        self.best_dice = state["best_dice"]
        self.epochs_since_best = state["epochs_since_best"]
        self.elapsed_before = state.get("elapsed_seconds", 0.0)
        self.history = list(state["history"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    def _save_epoch(self, epoch: int, improved: bool) -> None:
        state = self._state(epoch)
        # best.pt first: a crash between the two saves then only repeats this epoch on
        # resume (from the older last.pt), instead of leaving a last.pt whose best is missing.
        if improved:
            save_checkpoint(self.out / "best.pt", state)
        save_checkpoint(self.out / "last.pt", state)
        write_metrics_csv(self.out / "metrics.csv", self.history)
        plot_curves(self.out / "curves.png", self.history)

    # --- one epoch of each kind ---
    def train_one_epoch(self, epoch: int) -> float:
        self.model.train()
        if self.train_sampler is not None:
            self.train_sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
        total_loss = torch.zeros((), device=self.device)
        batches = 0
        bar = tqdm(
            total=len(self.train_loader.dataset),
            desc=f"epoch {self.epoch_label(epoch)}",
            unit="img",
            disable=not (self.cfg.progress and self.dist.is_main),
            leave=False,
            dynamic_ncols=True,
        )
        for images, masks in self.train_loader:
            images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
            masks = masks.to(self.device, non_blocking=True)
            with self.amp.autocast(self.device):
                logits = self.model(images)
            loss = self.criterion(logits, masks)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.cfg.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.schedule.step_batch()
            total_loss += loss.detach()
            batches += 1
            self.interrupt.check()
            bar.update(images.shape[0])
            if bar.n == images.shape[0] or batches % 5 == 0:  # .item() syncs: not every step
                bar.set_postfix(loss=f"{float(total_loss) / batches:.4f}")
        bar.close()
        return float(total_loss) / max(1, batches)

    @torch.no_grad()
    def validate(self) -> tuple[float, SegmentationMetrics]:
        # The bare model: DDP's forward would broadcast buffers, a collective that hangs when the
        # ranks hold different numbers of validation images.
        model = unwrap(self.model)
        model.eval()
        self.dist.sync_buffers(model)
        metrics = SegmentationMetrics(self.mask_values.num_classes, self.binary)
        total_loss = 0.0
        for index in self.dist.shard(len(self.val_set)):
            image, mask = self.val_set[index]
            image = image[None].to(self.device, memory_format=self.memory_format)
            mask = mask[None].to(self.device)
            with self.amp.autocast(self.device):
                logits = model(image)
            total_loss += float(self.criterion(logits, mask))
            metrics.update(predicted_classes(logits), mask)
            self.interrupt.check()
        if self.dist.enabled:  # every rank gets the whole set's scores
            self.dist.all_reduce_sum(metrics.matrix)
            total_loss = float(self.dist.all_reduce_sum(torch.tensor(total_loss, dtype=torch.float64)))
        return total_loss / max(1, len(self.val_set)), metrics

    # --- the whole run ---
    def _write_run_config(self) -> None:
        cfg = self.cfg
        ensure_folder(self.out)
        write_json(
            self.out / "config.json",
            {
                **cfg.to_dict(),
                "resolved": {
                    "device": str(self.device),
                    "amp": self.amp.name,
                    "amp_reason": self.amp.reason,
                    "channels_last": self.channels_last,
                    "world_size": self.dist.world_size,
                    "cpu": cpu_description(),
                    "mask_values": self.mask_values.values,
                    "binary": self.binary,
                    "model_args": self.model_args,
                    "preprocess": self.preprocess.to_dict(),
                    "train_images": [p.image.name for p in self.train_pairs],
                    "val_images": [p.image.name for p in self.val_pairs],
                },
            },
        )
        write_config_toml(self.out / "config.toml", cfg)  # `--config` this file to run it again

    def _open_tensorboard(self) -> TensorBoardLog | None:
        if not (self.cfg.tensorboard and self.dist.is_main):
            return None
        from unetkit.train.tensorboard import TensorBoardLog  # tensorboard is an optional extra

        return TensorBoardLog(self.out / "tensorboard", self.mask_values.values)

    def fit(self, on_epoch_end: Callable[[dict[str, float]], None] | None = None) -> RunResult:
        lock = RunLock(self.out, self.log) if self.dist.is_main else None
        refused = None
        if lock is not None:  # only rank 0 writes files, so only it needs the folder to itself
            try:
                lock.acquire()
                if self.cfg.resume is None:  # another run may have finished here since this one was set up
                    _refuse_finished_run(self.out, None)
            except UnetkitError as err:
                lock.release()
                refused = str(err)
        refused = self.dist.broadcast_object(refused)  # under torchrun every rank stops, none waits
        if refused:
            raise UnetkitError(refused)
        try:
            return self._fit_locked(on_epoch_end)
        finally:
            if lock is not None:
                lock.release()

    def _fit_locked(self, on_epoch_end: Callable[[dict[str, float]], None] | None) -> RunResult:
        cfg = self.cfg
        if self.dist.is_main:
            stale = remove_stale_temporaries(self.out)
            if stale:
                self.log(f"note: removed {len(stale)} temporary file(s) that a killed run left in {self.out}")
            self._write_run_config()
        params = sum(p.numel() for p in self.model.parameters())
        self.log(
            f"model {cfg.model} ({params / 1e6:.2f}M parameters) on {self.device}; "
            f"{len(self.train_pairs)} training / {len(self.val_pairs)} validation images; "
            f"classes {self.mask_values.values} ({'binary, sigmoid' if self.binary else 'softmax'})"
        )
        self.log(f"AMP: {self.amp.reason}; channels_last: {'on' if self.channels_last else 'off'}")
        if self.start_epoch > 1:
            self.log(f"resuming {cfg.resume} at epoch {self.start_epoch}")
        try:
            with self.interrupt:
                self._run_epochs(on_epoch_end)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(self._interrupted_message()) from None
        return RunResult(self.out, self.out / "best.pt", self.out / "last.pt", self.history, self.best_dice)

    def _interrupted_message(self) -> str:
        last = self.out / "last.pt"
        if not self.saved_epoch:
            return "stopped before the first epoch finished, no checkpoint was saved; start the run again"
        return (
            f"{last} holds epoch {self.saved_epoch} (the epoch in progress is lost); "
            f"continue with: unetkit train --resume {last}"
        )

    def _check_finite(self, epoch: int, train_loss: float, val_loss: float) -> None:
        """Stop on a NaN/inf loss before its weights reach a checkpoint. The epoch losses are
        already on the host here, so this costs no extra device sync."""
        losses = {"training": train_loss, **({"validation": val_loss} if self.val_pairs else {})}
        bad = [(name, value) for name, value in losses.items() if not math.isfinite(value)]
        if not self.dist.any_rank(bool(bad)):  # under torchrun every rank must stop together
            return
        bad = bad or [("another rank's training", math.nan)]
        last = self.out / "last.pt"
        kept = f"{last} keeps epoch {self.saved_epoch} untouched" if self.saved_epoch else "no checkpoint was saved"
        raise UnetkitError(
            f"{bad[0][0]} loss became {bad[0][1]} in epoch {epoch}, so training stopped and {kept}; "
            "train again with a lower --lr, or with --amp off"
        )

    def _run_epochs(self, on_epoch_end: Callable[[dict[str, float]], None] | None) -> None:
        tensorboard = self._open_tensorboard()
        try:
            self._epoch_loop(on_epoch_end, tensorboard)
        finally:
            if tensorboard is not None:
                tensorboard.close()

    def _epoch_loop(
        self, on_epoch_end: Callable[[dict[str, float]], None] | None, tensorboard: TensorBoardLog | None
    ) -> None:
        cfg = self.cfg
        self.started = time.perf_counter()
        epochs = itertools.count(self.start_epoch) if cfg.epochs is None else range(self.start_epoch, cfg.epochs + 1)
        for epoch in epochs:
            # Same batches & augmentations on resume; each rank its own augmentations.
            torch.manual_seed(cfg.seed * 100_003 + epoch + 1_000_003 * self.dist.rank)
            epoch_start = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train_loss = self.train_one_epoch(epoch)
            if self.val_pairs:
                val_loss, metrics = self.validate()
                val_dice, val_iou = metrics.mean_dice, metrics.mean_iou
            else:
                val_loss, val_dice, val_iou = math.nan, math.nan, math.nan
            self._check_finite(epoch, train_loss, val_loss)
            self.schedule.step_epoch(val_dice)
            row = {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_dice": val_dice,
                "val_iou": val_iou,
                "lr": lr,
                "seconds": time.perf_counter() - epoch_start,
            }
            self.history.append(row)
            # The first epoch always writes best.pt, so it exists even if Dice is undefined (NaN).
            first = self.best_dice == -math.inf and epoch == self.start_epoch
            improved = not self.val_pairs or val_dice > self.best_dice or first
            if improved:
                if self.val_pairs and not math.isnan(val_dice):
                    self.best_dice = val_dice
                self.epochs_since_best = 0
            else:
                self.epochs_since_best += 1
            if self.dist.is_main:  # only rank 0 writes files
                self._save_epoch(epoch, improved)
            self.saved_epoch = epoch
            self.log(
                f"epoch {self.epoch_label(epoch):>3}  train loss {train_loss:.4f}  val loss {val_loss:.4f}  "
                f"val Dice {val_dice:.4f}  val IoU {val_iou:.4f}  lr {lr:.2e}  {row['seconds']:.1f}s"
                + (f" ({self.elapsed():.0f}/{cfg.time:g}s)" if cfg.time else "")
                + ("  *best" if improved and self.val_pairs else "")
            )
            if tensorboard is not None:
                tensorboard.log_epoch(row, metrics if self.val_pairs else None)
                tensorboard.log_images(epoch, unwrap(self.model), self.val_set, self)
            if on_epoch_end is not None:
                on_epoch_end(row)
            if cfg.patience is not None and self.epochs_since_best >= cfg.patience:
                self.log(f"early stop: no better val Dice for {cfg.patience} epochs")
                break
            epoch_period = time.perf_counter() - epoch_start  # training, validation and saving
            over_budget = (
                cfg.time is not None and self.elapsed() + epoch_period > cfg.time and epoch >= (cfg.min_epochs or 0)
            )
            if self.dist.any_rank(over_budget):  # the ranks' clocks differ; all stop together
                done = f" and the {cfg.min_epochs} minimum epochs are done" if cfg.min_epochs else ""
                self.log(f"stopping: another epoch would pass the {cfg.time:g}-second budget{done}")
                break


def train(
    cfg: TrainConfig,
    train_pairs: Sequence[Pair] | None = None,
    val_pairs: Sequence[Pair] | None = None,
    log: Callable[[str], None] = print,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
    resume_overrides: Collection[str] | None = None,
) -> RunResult:
    """Train a model as `cfg` says; returns where the checkpoints and logs are. On resume,
    `resume_overrides` names the options to take from `cfg` rather than from the checkpoint
    (default: those that differ from TrainConfig's defaults)."""
    trainer = Trainer(cfg, train_pairs, val_pairs, log, resume_overrides)
    result = trainer.fit(on_epoch_end)
    # Not in a `finally`: after an error the other ranks may never reach close()'s barrier;
    # torchrun stops them instead.
    trainer.dist.close()
    return result
