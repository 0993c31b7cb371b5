"""Training, start to finish: options -> setup (setup.py: data, model, optimisation) -> epochs
(train, validate, checkpoint, stop rules) -> run folder. The Trainer holds the pieces of one
run and runs its epochs; everything that builds them lives in setup.py."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from unetkit.core.atomic import ensure_folder, remove_stale_temporaries, write_json
from unetkit.core.checkpoint import load_checkpoint, save_checkpoint
from unetkit.core.hardware import cpu_description, resolve_device
from unetkit.data import Pair
from unetkit.data.pairing import file_names
from unetkit.errors import UnetkitError
from unetkit.metrics import SegmentationMetrics, predicted_classes
from unetkit.train.config import PATH_OPTIONS, TrainConfig, absolute_paths
from unetkit.train.config_file import write_config_toml
from unetkit.train.distributed import quiet, setup_distributed, unwrap
from unetkit.train.init_from import architecture_from, load_init_state
from unetkit.train.interrupt import InterruptFlag
from unetkit.train.object_rule import choose_object_rule
from unetkit.train.options import resolve
from unetkit.train.run_files import plot_curves, write_metrics_csv
from unetkit.train.run_folder import RUN_FILES, carry_best, check_run_folder, mark_run_folder, prepare_run_folder
from unetkit.train.run_lock import RunLock
from unetkit.train.setup import (
    build_datasets,
    build_model,
    build_optimisation,
    model_spec,
    plan,
    training_pairs,
)
from unetkit.train.stopping import StopRules

if TYPE_CHECKING:
    from unetkit.train.tensorboard import TensorBoardLog

EpochCallback = Callable[[dict[str, float]], None]
CURVES_SECONDS = 30.0


@dataclass
class RunResult:
    out: Path
    best_checkpoint: Path
    last_checkpoint: Path
    history: list[dict[str, float]]
    best_dice: float


def load_resume_state(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    state = load_checkpoint(path)
    if "config" not in state or "optimizer" not in state:
        raise UnetkitError(f"{path}: a weights-only export cannot be resumed; pass the run's last.pt")
    return state


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
        resume_state = load_resume_state(cfg.resume)
        cfg = resolve(cfg, resume_overrides, resume_state["config"] if resume_state else None)
        init_state = load_init_state(cfg.init_from) if resume_state is None else None
        self.dist = setup_distributed(resolve_device(cfg.device))  # single-process unless torchrun
        self.device = self.dist.device
        self.log = log if self.dist.is_main else quiet
        self.out = self.dist.broadcast_object(prepare_run_folder(cfg))  # one timestamped folder
        if train_pairs is None:
            split = resume_state.get("split") if resume_state else None
            train_pairs, val_pairs = training_pairs(cfg, split, self.log)
        self.train_pairs, self.val_pairs = list(train_pairs), list(val_pairs or [])
        if cfg.patience is not None and not self.val_pairs:
            raise UnetkitError(
                f"--patience {cfg.patience} needs validation images to watch; "
                "give --val-images/--val-masks or a --val-fraction above 0"
            )
        if init_state is not None:
            cfg = architecture_from(cfg, init_state, cfg.init_from)
        self.cfg, self.plan = plan(cfg, self.train_pairs, resume_state, self.device, self.log, init_state)
        self.mask_values, self.binary = self.plan.mask_values, bool(self.cfg.binary)
        self.train_set, self.val_set = build_datasets(self.cfg, self.plan, self.train_pairs, self.val_pairs)
        self.spec = model_spec(self.cfg, self.plan)
        built = build_model(self.cfg, self.spec, self.dist, init_state)
        for line in built.notes:
            self.log(line)
        self.model, self.amp, self.channels_last, self.memory_format = (
            built.model, built.amp, built.channels_last, built.memory_format
        )  # fmt: skip
        # The LR schedule of a --time run reads the clock from its first step on.
        self.elapsed_before, self.started = 0.0, None  # training seconds before this process (resume), and now
        opt = build_optimisation(self.cfg, built, self.train_set, self.dist, self.timed_progress)
        self.criterion, self.optimizer, self.schedule, self.scaler = (
            opt.criterion,
            opt.optimizer,
            opt.schedule,
            opt.scaler,
        )
        self.train_loader, self.train_sampler = opt.loader, opt.sampler
        self.stop_rules = StopRules(self.cfg, self.dist, self.out)
        self.start_epoch, self.history, self.best_dice, self.epochs_since_best = 1, [], -math.inf, 0
        if resume_state is not None:
            self._restore(resume_state)
        self.saved_epoch = self.start_epoch - 1  # the epoch last.pt holds; 0: none yet
        self.interrupt = InterruptFlag()
        self.curves_drawn, self.curves_epochs = -math.inf, 0  # when curves.png was last drawn, and how many epochs

    # --- the whole run ---
    def fit(self, on_epoch_end: EpochCallback | None = None) -> RunResult:
        lock = RunLock(self.out, self.log) if self.dist.is_main else None
        refused = None
        if lock is not None:  # only rank 0 writes files, so only it needs the folder to itself
            try:
                lock.acquire()
                # Another run may have finished here, or files appeared, since this one was set up.
                check_run_folder(self.out, self.cfg.resume)
                mark_run_folder(self.out)
                carry_best(self.out, self.cfg.resume)
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

    def _fit_locked(self, on_epoch_end: EpochCallback | None) -> RunResult:
        if self.dist.is_main:
            stale = remove_stale_temporaries(self.out, RUN_FILES)
            if stale:
                self.log(f"note: removed {len(stale)} temporary file(s) that a killed run left in {self.out}")
            self._write_run_config()
        params = sum(p.numel() for p in self.model.parameters())
        self.log(
            f"model {self.cfg.model} ({params / 1e6:.2f}M parameters) on {self.device}; "
            f"{len(self.train_pairs)} training / {len(self.val_pairs)} validation images; "
            f"classes {self.mask_values.values} ({'binary, sigmoid' if self.binary else 'softmax'})"
        )
        self.log(f"AMP: {self.amp.reason}; channels_last: {'on' if self.channels_last else 'off'}")
        if self.start_epoch > 1:
            self.log(f"resuming {self.cfg.resume} at epoch {self.start_epoch}")
        tensorboard = self._open_tensorboard()
        try:
            with self.interrupt:
                self._epoch_loop(on_epoch_end, tensorboard)
            if self.dist.is_main and len(self.history) != self.curves_epochs:  # the last epochs are not drawn yet
                self._draw_curves()
        except KeyboardInterrupt:
            raise KeyboardInterrupt(self._interrupted_message()) from None
        finally:
            if tensorboard is not None:
                tensorboard.close()
        if self.dist.is_main and self.val_pairs and (self.out / "best.pt").is_file():  # (a resume may not write one)
            choose_object_rule(self.out / "best.pt", self.val_pairs, self.log)
            if self.cfg.report:
                from unetkit.report import write_report  # the report reads the run; training does not need it

                write_report(self.out, log=self.log, pairs=self.val_pairs, source="the run's validation images")
        return RunResult(self.out, self.out / "best.pt", self.out / "last.pt", self.history, self.best_dice)

    def _epoch_loop(self, on_epoch_end: EpochCallback | None, tensorboard: TensorBoardLog | None) -> None:
        cfg = self.cfg
        self.started = time.perf_counter()
        epochs = itertools.count(self.start_epoch) if cfg.epochs is None else range(self.start_epoch, cfg.epochs + 1)
        for epoch in epochs:
            # Same batches & augmentations on resume; each rank its own augmentations.
            torch.manual_seed(cfg.seed * 100_003 + epoch + 1_000_003 * self.dist.rank)
            epoch_start = time.perf_counter()
            row, metrics = self._train_and_validate(epoch)
            improved = self._note_best(epoch, row["val_dice"])
            if self.dist.is_main:  # only rank 0 writes files
                self._save_epoch(epoch, improved)
            self.saved_epoch = epoch
            self._report(epoch, row, improved)
            if tensorboard is not None:
                tensorboard.log_epoch(row, metrics)
                tensorboard.log_images(epoch, unwrap(self.model), self.val_set, self)
            if on_epoch_end is not None:
                on_epoch_end(row)
            epoch_seconds = time.perf_counter() - epoch_start  # training, validation and saving
            reason = self.stop_rules.reason_to_stop(epoch, self.epochs_since_best, self.elapsed(), epoch_seconds)
            if reason:
                self.log(reason)
                break

    def _train_and_validate(self, epoch: int) -> tuple[dict[str, float], SegmentationMetrics | None]:
        """One epoch of training and one validation pass: the epoch's row of metrics.csv."""
        epoch_start = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        train_loss = self.train_one_epoch(epoch)
        metrics = None
        val_loss, val_dice, val_iou = math.nan, math.nan, math.nan
        if self.val_pairs:
            val_loss, metrics = self.validate()
            val_dice, val_iou = metrics.mean_dice, metrics.mean_iou
        losses = {"training": train_loss, **({"validation": val_loss} if self.val_pairs else {})}
        self.stop_rules.check_finite(epoch, losses, self.saved_epoch)
        self.schedule.step_epoch(val_dice)
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_dice": val_dice}
        row.update(val_iou=val_iou, lr=lr, seconds=time.perf_counter() - epoch_start)
        self.history.append(row)
        return row, metrics

    def _note_best(self, epoch: int, val_dice: float) -> bool:
        """Whether this epoch is the best so far (always, without validation)."""
        # The first epoch always writes best.pt, so it exists even if Dice is undefined (NaN).
        first = self.best_dice == -math.inf and epoch == self.start_epoch
        improved = not self.val_pairs or val_dice > self.best_dice or first
        if improved:
            if self.val_pairs and not math.isnan(val_dice):
                self.best_dice = val_dice
            self.epochs_since_best = 0
        else:
            self.epochs_since_best += 1
        return improved

    def _report(self, epoch: int, row: dict[str, float], improved: bool) -> None:
        budget = f" ({self.elapsed():.0f}/{self.cfg.time:g}s)" if self.cfg.time else ""
        self.log(
            f"epoch {self.epoch_label(epoch):>3}  train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
            f"val Dice {row['val_dice']:.4f}  val IoU {row['val_iou']:.4f}  lr {row['lr']:.2e}  {row['seconds']:.1f}s"
            + budget
            + ("  *best" if improved and self.val_pairs else "")
        )

    def _interrupted_message(self) -> str:
        last = self.out / "last.pt"
        if not self.saved_epoch:
            return "stopped before the first epoch finished, no checkpoint was saved; start the run again"
        return (
            f"{last} holds epoch {self.saved_epoch} (the epoch in progress is lost); "
            f"continue with: unetkit train --resume {last}"
        )

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
        for images, masks, *pixel_weights in self.train_loader:  # border weights when the run uses them
            images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
            masks = masks.to(self.device, non_blocking=True)
            weights = pixel_weights[0].to(self.device, non_blocking=True) if pixel_weights else None
            with self.amp.autocast(self.device):
                logits = self.model(images)
            loss = self.criterion(logits, masks, weights)
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

    # --- time ---
    def epoch_label(self, epoch: int) -> str:
        return f"{epoch}/{self.cfg.epochs}" if self.cfg.epochs else str(epoch)

    def timed_progress(self, step: int, steps_per_epoch: int) -> float:
        """Fraction of a timed run done: of the --time budget, or, when --min-epochs would not fit in
        it (a slow or busy machine), of those epochs, whichever is behind. So the LR reaches ~0
        when both the time and the minimum epochs are spent."""
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
            **self.spec.to_state(),
            "model": {k: v.detach().cpu().contiguous() for k, v in unwrap(self.model).state_dict().items()},
            "sampled_classes": self.plan.sampled_classes,
            "split": {"train": file_names(self.train_pairs), "val": file_names(self.val_pairs)},
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
        # Drawing curves.png takes ~0.5-1 s (matplotlib), 5-10% of a demo epoch: redrawn at most
        # every CURVES_SECONDS while training, and always after the last epoch.
        if time.perf_counter() - self.curves_drawn >= CURVES_SECONDS:
            self._draw_curves()

    def _draw_curves(self) -> None:
        plot_curves(self.out / "curves.png", self.history)
        self.curves_drawn, self.curves_epochs = time.perf_counter(), len(self.history)

    # --- the run folder ---
    def _write_run_config(self) -> None:
        # Every path absolute, the run folder included: the run's config names them from any folder.
        cfg = absolute_paths(replace(self.cfg, out=str(self.out)), Path.cwd(), PATH_OPTIONS)
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
                    "model_args": self.spec.args,
                    "preprocess": self.plan.preprocess.to_dict(),
                    "train_images": file_names(self.train_pairs),
                    "val_images": file_names(self.val_pairs),
                },
            },
        )
        write_config_toml(self.out / "config.toml", cfg)  # `--config` this file to run it again

    def _open_tensorboard(self) -> TensorBoardLog | None:
        if not (self.cfg.tensorboard and self.dist.is_main):
            return None
        from unetkit.train.tensorboard import TensorBoardLog  # tensorboard is an optional extra

        return TensorBoardLog(self.out / "tensorboard", self.mask_values.values)


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
