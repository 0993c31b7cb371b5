"""Training: the epochs (train, validate, checkpoint, stop rules). The run is planned first
(run_plan.py: options, pairs from split.py, the data plan from data_plan.py, folder); the Trainer
is built from that plan, holds the pieces of the run (setup.py builds each, and the Trainer keeps
them whole: `built`, `opt`) and runs its epochs in a folder the caller holds (run_claim.py). The
steps after it (object rule, report) are the run layer's (unetkit/runs)."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from unetkit.data import Pair
from unetkit.data.pairing import file_names
from unetkit.models.checkpoint import save_checkpoint
from unetkit.models.heads import predicted_classes
from unetkit.scoring.metrics import SegmentationMetrics
from unetkit.train.budget import TimeBudget
from unetkit.train.config import TrainConfig
from unetkit.train.distributed import unwrap
from unetkit.train.interrupt import InterruptFlag
from unetkit.train.run_files import EpochRow, plot_curves, write_metrics_csv
from unetkit.train.run_plan import RunPlan, plan_run
from unetkit.train.setup import (
    build_datasets,
    build_model,
    build_optimisation,
    model_spec,
)
from unetkit.train.stopping import StopRules

if TYPE_CHECKING:
    from unetkit.train.tensorboard import TensorBoardLog

EpochCallback = Callable[[EpochRow], None]
CURVES_SECONDS = 30.0


@dataclass
class RunResult:
    out: Path
    best_checkpoint: Path
    last_checkpoint: Path
    history: list[EpochRow]
    best_dice: float


class Trainer:
    """Holds the pieces of one run, built from its plan (run_plan.py); `fit()` runs the epochs."""

    def __init__(self, run: RunPlan) -> None:
        self.run = run
        self.cfg, self.dist, self.out, self.log = run.cfg, run.dist, run.out, run.log
        self.train_set, self.val_set = build_datasets(run.cfg, run.data, run.train_pairs, run.val_pairs)
        self.spec = model_spec(run.cfg, run.data)
        self.built = build_model(run.cfg, self.spec, run.dist, run.init_state)
        for line in self.built.notes:
            self.log(line)
        # The LR schedule of a --time run reads the clock from its first step on.
        self.budget = TimeBudget(run.cfg.time, run.cfg.min_epochs, run.cfg.epochs)
        self.opt = build_optimisation(run.cfg, self.built, self.train_set, run.dist, self.budget.progress)
        self.stop_rules = StopRules(run.cfg, run.dist, run.out)
        self.start_epoch, self.history, self.best_dice, self.epochs_since_best = 1, [], -math.inf, 0
        if run.resume_state is not None:
            self._restore(run.resume_state)
        self.saved_epoch = self.start_epoch - 1  # the epoch last.pt holds; 0: none yet
        self.interrupt = InterruptFlag()
        self.curves_drawn, self.curves_epochs = -math.inf, 0  # when curves.png was last drawn, and how many epochs

    @classmethod
    def from_config(
        cls,
        cfg: TrainConfig,
        train_pairs: Sequence[Pair] | None = None,
        val_pairs: Sequence[Pair] | None = None,
        log: Callable[[str], None] = print,
        resume_overrides: Collection[str] | None = None,
    ) -> Trainer:
        """Plan the run (run_plan.plan_run, which says the arguments), then build it."""
        return cls(plan_run(cfg, train_pairs, val_pairs, log, resume_overrides))

    # --- the whole run ---
    def fit(self, on_epoch_end: EpochCallback | None = None) -> RunResult:
        """Run the epochs, in a run folder the caller holds (run_claim.claimed_run)."""
        params = sum(p.numel() for p in self.built.model.parameters())
        self.log(
            f"model {self.cfg.model} ({params / 1e6:.2f}M parameters) on {self.dist.device}; "
            f"{len(self.run.train_pairs)} training / {len(self.run.val_pairs)} validation images; "
            f"classes {self.run.data.mask_values.values} ({'binary, sigmoid' if bool(self.cfg.binary) else 'softmax'})"
        )
        self.log(f"AMP: {self.built.amp.reason}; channels_last: {'on' if self.built.channels_last else 'off'}")
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
        return RunResult(self.out, self.out / "best.pt", self.out / "last.pt", self.history, self.best_dice)

    def finished_reason(self) -> str | None:
        """Why a resumed run has nothing left to train (its epochs done, or the same stop rule
        holds), or None; a fresh run has all of it left."""
        if self.run.resume_state is None:
            return None
        epoch, cfg = self.start_epoch - 1, self.cfg
        if cfg.epochs is not None and epoch >= cfg.epochs:
            return f"its {cfg.epochs} epochs are done"
        seconds = self.history[-1].seconds if self.history else 0.0
        # the checkpoint's numbers, the same on every rank (the budget has not started)
        return self.stop_rules.reason_to_stop(epoch, self.epochs_since_best, self.budget, seconds, agree=False)

    def _epoch_loop(self, on_epoch_end: EpochCallback | None, tensorboard: TensorBoardLog | None) -> None:
        cfg = self.cfg
        self.budget.start()
        self._validate_start()
        epochs = itertools.count(self.start_epoch) if cfg.epochs is None else range(self.start_epoch, cfg.epochs + 1)
        for epoch in epochs:
            # Same batches & augmentations on resume; each rank its own augmentations.
            torch.manual_seed(cfg.seed * 100_003 + epoch + 1_000_003 * self.dist.rank)
            epoch_start = time.perf_counter()
            row, metrics = self._train_and_validate(epoch)
            improved = self._note_best(epoch, row.val_dice)
            if self.dist.is_main:  # only rank 0 writes files
                self._save_epoch(epoch, improved)
            self.saved_epoch = epoch
            self._report(epoch, row, improved)
            if tensorboard is not None:
                tensorboard.log_epoch(row, metrics)
                tensorboard.log_images(epoch, self.evaluated_model(), self.built, self.val_set, self.dist.device)
            if on_epoch_end is not None:
                on_epoch_end(row)
            epoch_seconds = time.perf_counter() - epoch_start  # training, validation and saving
            reason = self.stop_rules.reason_to_stop(epoch, self.epochs_since_best, self.budget, epoch_seconds)
            if reason:
                self.log(reason)
                break

    def _validate_start(self) -> None:
        """A run from a model (--init-from) first scores the model as it starts, and an epoch must
        beat that to replace best.pt: fine-tuning on a few images can end below the model it
        started from (2 dsb2018-dev images, 60 s: AP@0.5 0.782 against the untouched model's 0.861),
        and then best.pt is the start itself."""
        if self.run.init_state is None or self.start_epoch != 1 or not self.run.val_pairs:
            return
        _loss, metrics = self.validate()
        if math.isnan(metrics.mean_dice):
            return
        self.best_dice = metrics.mean_dice
        self.log(f"epoch   0  the --init-from model as it starts: val Dice {self.best_dice:.4f} (best.pt until beaten)")
        if self.dist.is_main:
            save_checkpoint(self.out / "best.pt", self._state(0))

    def _train_and_validate(self, epoch: int) -> tuple[dict[str, float], SegmentationMetrics | None]:
        """One epoch of training and one validation pass: the epoch's row of metrics.csv."""
        epoch_start = time.perf_counter()
        lr = self.opt.optimizer.param_groups[0]["lr"]
        train_loss = self.train_one_epoch(epoch)
        metrics = None
        val_loss, val_dice, val_iou = math.nan, math.nan, math.nan
        if self.run.val_pairs:
            val_loss, metrics = self.validate()
            val_dice, val_iou = metrics.mean_dice, metrics.mean_iou
        losses = {"training": train_loss, **({"validation": val_loss} if self.run.val_pairs else {})}
        self.stop_rules.check_finite(epoch, losses, self.saved_epoch)
        self.opt.schedule.step_epoch(val_dice)
        row = EpochRow(epoch, train_loss, val_loss, val_dice, val_iou, lr, time.perf_counter() - epoch_start)
        self.history.append(row)
        return row, metrics

    def _note_best(self, epoch: int, val_dice: float) -> bool:
        """Whether this epoch is the best so far (always, without validation)."""
        # The first epoch always writes best.pt, so it exists even if Dice is undefined (NaN).
        first = self.best_dice == -math.inf and epoch == self.start_epoch
        improved = not self.run.val_pairs or val_dice > self.best_dice or first
        if improved:
            if self.run.val_pairs and not math.isnan(val_dice):
                self.best_dice = val_dice
            self.epochs_since_best = 0
        else:
            self.epochs_since_best += 1
        return improved

    def _report(self, epoch: int, row: dict[str, float], improved: bool) -> None:
        budget = self.budget.shown()
        self.log(
            f"epoch {self.epoch_label(epoch):>3}  train loss {row.train_loss:.4f}  val loss {row.val_loss:.4f}  "
            f"val Dice {row.val_dice:.4f}  val IoU {row.val_iou:.4f}  lr {row.lr:.2e}  {row.seconds:.1f}s"
            + budget
            + ("  *best" if improved and self.run.val_pairs else "")
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
        self.built.model.train()
        if self.opt.sampler is not None:
            self.opt.sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
        total_loss = torch.zeros((), device=self.dist.device)
        batches = 0
        bar = tqdm(
            total=len(self.opt.loader.dataset),
            desc=f"epoch {self.epoch_label(epoch)}",
            unit="img",
            disable=not (self.cfg.progress and self.dist.is_main),
            leave=False,
            dynamic_ncols=True,
        )
        for images, masks, *pixel_weights in self.opt.loader:  # border weights when the run uses them
            images = images.to(self.dist.device, non_blocking=True, memory_format=self.built.memory_format)
            masks = masks.to(self.dist.device, non_blocking=True)
            weights = pixel_weights[0].to(self.dist.device, non_blocking=True) if pixel_weights else None
            with self.built.amp.autocast(self.dist.device):
                logits = self.built.model(images)
            loss = self.opt.criterion(logits, masks, weights)
            self.opt.optimizer.zero_grad(set_to_none=True)
            self.opt.scaler.scale(loss).backward()
            if self.cfg.grad_clip:
                self.opt.scaler.unscale_(self.opt.optimizer)
                nn.utils.clip_grad_norm_(self.built.model.parameters(), self.cfg.grad_clip)
            self.opt.scaler.step(self.opt.optimizer)
            self.opt.scaler.update()
            if self.opt.average is not None:
                self.opt.average.update(unwrap(self.built.model))
            self.opt.schedule.step_batch()
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
        model = self.evaluated_model()
        model.eval()
        self.dist.sync_buffers(model)
        metrics = SegmentationMetrics(self.run.data.mask_values.num_classes, bool(self.cfg.binary))
        total_loss = 0.0
        for index in self.dist.shard(len(self.val_set)):
            image, mask = self.val_set[index]
            image = image[None].to(self.dist.device, memory_format=self.built.memory_format)
            mask = mask[None].to(self.dist.device)
            with self.built.amp.autocast(self.dist.device):
                logits = model(image)
            total_loss += float(self.opt.criterion(logits, mask))
            metrics.update(predicted_classes(logits), mask)
            self.interrupt.check()
        if self.dist.enabled:  # every rank gets the whole set's scores
            self.dist.all_reduce_sum(metrics.matrix)
            total_loss = float(self.dist.all_reduce_sum(torch.tensor(total_loss, dtype=torch.float64)))
        return total_loss / max(1, len(self.val_set)), metrics

    def evaluated_model(self) -> nn.Module:
        """The network validated, saved as the checkpoint's model and predicted with: the weights'
        average under --ema, else the bare model (DDP's forward would broadcast buffers, a
        collective that hangs when the ranks hold different numbers of validation images)."""
        return self.opt.average.model if self.opt.average is not None else unwrap(self.built.model)

    # --- time ---
    def epoch_label(self, epoch: int) -> str:
        return f"{epoch}/{self.cfg.epochs}" if self.cfg.epochs else str(epoch)

    # --- checkpoints ---
    def _state(self, epoch: int) -> dict[str, Any]:
        # Under --ema also the optimizer's own weights and the average's age, to resume both.
        average = self.opt.average
        raw = {"training_model": weights(unwrap(self.built.model)), "ema_updates": average.updates} if average else {}
        return {
            **self.spec.to_state(),
            "model": weights(self.evaluated_model()),
            **raw,
            "sampled_classes": self.run.data.sampled_classes,
            "split": {"train": file_names(self.run.train_pairs), "val": file_names(self.run.val_pairs)},
            "optimizer": self.opt.optimizer.state_dict(),
            "scheduler": self.opt.schedule.state_dict(),
            "scaler": self.opt.scaler.state_dict(),
            "epoch": epoch,
            "best_dice": self.best_dice,
            "epochs_since_best": self.epochs_since_best,
            "elapsed_seconds": self.budget.elapsed(),
            "history": [asdict(row) for row in self.history],
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            "config": self.cfg.to_dict(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        unwrap(self.built.model).load_state_dict(state.get("training_model", state["model"]))
        if self.opt.average is not None:
            self.opt.average.restore(state["model"], state.get("ema_updates", 0))
        self.opt.optimizer.load_state_dict(state["optimizer"])
        self.opt.schedule.load_state_dict(state["scheduler"])
        self.opt.scaler.load_state_dict(state["scaler"])
        self.start_epoch = state["epoch"] + 1
        self.best_dice = state["best_dice"]
        self.epochs_since_best = state["epochs_since_best"]
        self.budget.before = state.get("elapsed_seconds", 0.0)
        self.history = [EpochRow.from_dict(row) for row in state["history"]]
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
    def _open_tensorboard(self) -> TensorBoardLog | None:
        if not (self.cfg.tensorboard and self.dist.is_main):
            return None
        from unetkit.train.tensorboard import TensorBoardLog  # tensorboard is an optional extra

        return TensorBoardLog(self.out / "tensorboard", self.run.data.mask_values.values)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A model's state on the CPU, as a checkpoint holds it."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
