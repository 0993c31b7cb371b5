"""Training: the epochs (train, validate, checkpoint, stop rules). The run is planned first
(run_plan.py: options, pairs from split.py, the data plan from data_plan.py, folder); the Trainer
is built from that plan, holds the pieces of the run (setup.py builds each, and the Trainer keeps
them whole: `built`, `opt`) and runs its epochs (epoch.py) in a folder the caller holds
(run_claim.py). The steps after it (object rule, report) are the run layer's (unetkit/runs)."""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unetkit.data.pairing import file_names
from unetkit.errors import OutputClosed
from unetkit.models.checkpoint import cpu_weights, load_checkpoint, save_checkpoint
from unetkit.models.conv3x3 import winograd_line
from unetkit.runtime.progress import Progress, progress_to
from unetkit.scoring.metrics import SegmentationMetrics
from unetkit.train.budget import TimeBudget
from unetkit.train.distributed import restore_rng, rng_state, unwrap
from unetkit.train.epoch import training_pass, validation_pass
from unetkit.train.interrupt import InterruptFlag, interrupted_message
from unetkit.train.run_files import EpochFiles, EpochRow, epoch_line, run_summary
from unetkit.train.run_plan import RunPlan
from unetkit.train.setup import (
    build_datasets,
    build_model,
    build_optimisation,
    check_training_fits,
    model_spec,
    speed_choices,
)
from unetkit.train.stopping import StopRules

EpochCallback = Callable[[EpochRow], None]


START_FILE = "start.pt"  # a run from a model: that model as it started (_validate_start)


@dataclass
class RunResult:
    out: Path
    best_checkpoint: Path
    last_checkpoint: Path
    history: list[EpochRow]
    best_dice: float
    best_is: str = ""  # what best.pt holds where the steps after training replaced its best epoch


# Under torchrun a timed pass checks the budget every this many batches: the ranks must agree,
# and agreeing is a collective each check (a batch of the demo's: ~0.2 s; the cut lands within ~2 s).
AGREE_EVERY = 8


class Trainer:
    """Holds the pieces of one run, built from its plan (run_plan.plan_run); `fit()` runs the epochs."""

    def __init__(self, run: RunPlan) -> None:
        self.run = run
        self.cfg, self.dist, self.out, self.log = run.cfg, run.dist, run.out, run.log
        self.train_set, self.val_set = build_datasets(run.cfg, run.data, run.train_pairs, run.val_pairs)
        self.spec = model_spec(run.cfg, run.data)
        largest = (run.data.fingerprint or {}).get("largest_side", 0)
        check_training_fits(run.cfg, self.spec, run.dist.device, largest, len(self.train_set))
        self.built = build_model(run.cfg, self.spec, run.dist, run.init_state, run.resume_state)
        for line in self.built.notes:
            self.log(line)
        # The LR schedule of a --time run reads the clock from its first step on.
        self.budget = TimeBudget(run.cfg.time, run.cfg.min_epochs, run.cfg.epochs)
        self.opt = build_optimisation(run.cfg, self.built, self.train_set, run.dist, self.budget)
        self.stop_rules = StopRules(run.cfg, run.dist, run.out)
        self.start_epoch, self.history, self.best_dice, self.epochs_since_best = 1, [], -math.inf, 0
        self.epochs_trained = 0.0  # in epochs, a cut one counted by its share of batches (the schedule's step)
        if run.resume_state is not None:
            self._restore(run.resume_state)
        self.saved_epoch = self.start_epoch - 1  # the epoch last.pt holds; 0: none yet
        self.interrupt = InterruptFlag(take_sigterm=run.dist.world_size == 1)
        # A run from a model: the model as it started (epoch 0), scored against at the end; kept as
        # start.pt, so a resumed run (whose --init-from is not read again) still compares with it.
        self.start_state: dict[str, Any] | None = None
        if run.resume_state is not None and self.dist.is_main and (self.out / START_FILE).is_file():
            self.start_state = load_checkpoint(self.out / START_FILE)
        self.progress: Progress | None = None  # who hears each pass's images (fit's on_progress, or the bar)
        self.cut_short: tuple[int, int] | None = None  # (batches done, of) where the budget ended the last pass
        self.training_seconds = 0.0  # the last pass's
        self.in_epoch = False  # an epoch under way, not yet in last.pt
        # A resumed run whose epochs were all done but not the steps after them (run_claim sets it).
        self.only_last_steps = False

    # --- the whole run ---
    def fit(self, on_epoch_end: EpochCallback | None = None, on_progress: Progress | None = None) -> RunResult:
        """Run the epochs, in a run folder the caller holds (run_claim.claimed_run). `on_epoch_end`
        hears each epoch's row, `on_progress` each training pass's images (default: the terminal's
        bar, unless --no-progress)."""
        self.progress = progress_to(on_progress, self.cfg.progress, self.sample_unit()) if self.dist.is_main else None
        for line in run_summary(self.run, self.built, self.start_epoch):
            self.log(line)
        files = EpochFiles(self.out, self.dist.is_main, self.cfg.tensorboard, self.run.data.mask_values.values)
        try:
            with files, self.interrupt:
                self._epoch_loop(files, on_epoch_end)
            files.finish(self.history)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(
                interrupted_message(self.out / "last.pt", self.saved_epoch, self.in_epoch)
            ) from None
        except BrokenPipeError:  # the log's reader went away: stop as Ctrl-C does, and say so
            raise OutputClosed(interrupted_message(self.out / "last.pt", self.saved_epoch, self.in_epoch)) from None
        return self.result()

    def sample_unit(self) -> str:
        """What one training sample is, for the progress bar: a patch, a view of a whole image (the
        recipe's several augmented views of small images), or a whole image."""
        if self.cfg.patch_size:
            return "patch"
        return "view" if (self.cfg.patches_per_image or 1) > 1 else "img"

    def result(self) -> RunResult:
        return RunResult(self.out, self.out / "best.pt", self.out / "last.pt", self.history, self.best_dice)

    def finish_epochs_done(self) -> RunResult:
        """A resumed run killed after its last epoch, before the steps after it: no epoch to train,
        the curves drawn again (their file may be a killed write's), the caller doing the rest."""
        reason, _option = self.finished_reason() or ("its epochs are done", "")
        self.log(
            f"resuming {self.cfg.resume}: {reason}, but the steps after them (object "
            "rule, report) were not; doing them now"
        )
        EpochFiles(self.out, self.dist.is_main, False, self.run.data.mask_values.values).finish(self.history)
        return self.result()

    def finished_reason(self) -> tuple[str, str] | None:
        """Why a resumed run has nothing left to train and the option that gives it more, or None;
        a fresh run has all of it left."""
        if self.run.resume_state is None:
            return None
        return self.stop_rules.finished(self.start_epoch - 1, self.history, self.epochs_since_best, self.budget)

    def _epoch_loop(self, files: EpochFiles, on_epoch_end: EpochCallback | None) -> None:
        cfg = self.cfg
        self.budget.start()
        if self.run.resume_state is not None:
            self.opt.schedule.resume(self.epochs_trained)  # the rate this run's plan gives where it resumes
        self._validate_start()
        epochs = itertools.count(self.start_epoch) if cfg.epochs is None else range(self.start_epoch, cfg.epochs + 1)
        for epoch in epochs:
            # Same batches & augmentations on resume; each rank its own augmentations.
            torch.manual_seed(cfg.seed * 100_003 + epoch + 1_000_003 * self.dist.rank)
            self.in_epoch = True
            epoch_start = time.perf_counter()
            row, metrics = self._train_and_validate(epoch)
            improved = self._note_best(epoch, row.val_dice)
            if self.dist.is_main:  # only rank 0 writes files
                self._save_epoch(epoch, improved)
            files.epoch(self.history)
            if files.tensorboard is not None:
                files.tensorboard.log_epoch(row, metrics)
                files.tensorboard.log_images(epoch, self.evaluated_model(), self.built, self.val_set, self.dist.device)
            self.saved_epoch, self.in_epoch = epoch, False
            best = improved and bool(self.run.val_pairs)
            self.log(epoch_line(row, self.epoch_label(epoch), self.budget.shown(), best))
            if epoch == self.start_epoch and (line := winograd_line()):  # the first steps timed each shape
                self.log(line)
            if on_epoch_end is not None:
                on_epoch_end(row)
            # the next epoch's end is kept out of its training time: validation, saving, files
            self.budget.note_end(time.perf_counter() - epoch_start - self.training_seconds)
            reason = self.stop_rules.reason_to_stop(epoch, self.epochs_since_best, self.budget, self.training_seconds)
            if self.cut_short is not None:
                done, of = self.cut_short
                limit = f"{self.budget.limit:g}-second budget"
                reason = f"stopping: the {limit} ran out {done} of {of} batches into epoch {epoch}"
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
            # a copy (on the CPU the state shares the live weights): the run layer holds best.pt against it
            self.start_state = copy.deepcopy(self._state(0))
            save_checkpoint(self.out / "best.pt", self.start_state)
            rule = self.run.init_state.get("object_rule")  # the start's own, which it is judged by
            save_checkpoint(self.out / START_FILE, {**self.start_state, **({"object_rule": rule} if rule else {})})

    def _train_and_validate(self, epoch: int) -> tuple[EpochRow, SegmentationMetrics | None]:
        """One epoch of training and one validation pass: the epoch's row of metrics.csv."""
        epoch_start = time.perf_counter()
        lr = self.opt.optimizer.param_groups[0]["lr"]
        train_loss = self.train_one_epoch(epoch)
        metrics, val_loss, val_dice, val_iou = None, math.nan, math.nan, math.nan
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

    # --- one epoch of each kind (epoch.py) ---
    def train_one_epoch(self, epoch: int) -> float:
        if self.opt.sampler is not None:
            self.opt.sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
        label = self.epoch_label(epoch)
        out_of_time = None if self.budget.limit is None else partial(self._out_of_time, epoch)
        start = time.perf_counter()
        loss, batches = training_pass(
            self.cfg, self.built, self.opt, self.dist, self.interrupt, label, self.progress, out_of_time
        )
        self.training_seconds = time.perf_counter() - start
        self.cut_short = (batches, len(self.opt.loader)) if batches < len(self.opt.loader) else None
        self.epochs_trained += batches / max(1, len(self.opt.loader))
        return loss

    def _out_of_time(self, epoch: int, batches: int) -> bool:
        """Whether a timed pass ends after `batches`: at once in one process; under torchrun the
        ranks agree every AGREE_EVERY batches (or DDP's next step hangs), as agreeing is a
        collective and a host sync, which a step should not wait on each time."""
        if not self.dist.enabled:
            return self.budget.spent(epoch)
        return batches % AGREE_EVERY == 0 and self.dist.any_rank(self.budget.spent(epoch))

    def validate(self) -> tuple[float, SegmentationMetrics]:
        metrics = SegmentationMetrics(self.run.data.mask_values.num_classes, bool(self.cfg.binary))
        model = self.evaluated_model()
        return validation_pass(model, self.val_set, self.built, self.opt, self.dist, metrics, self.interrupt)

    def evaluated_model(self) -> nn.Module:
        """The network validated, saved as the checkpoint's model and predicted with: the weights'
        average under --ema, else the bare model (DDP's forward would broadcast buffers, a
        collective that hangs when the ranks hold different numbers of validation images)."""
        return self.opt.average.model if self.opt.average is not None else unwrap(self.built.model)

    def epoch_label(self, epoch: int) -> str:
        return f"{epoch}/{self.cfg.epochs}" if self.cfg.epochs else str(epoch)

    # --- checkpoints ---
    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            **self.spec.to_state(),
            "model": cpu_weights(self.evaluated_model()),
            **self.opt.state_dict(unwrap(self.built.model)),
            "sampled_classes": self.run.data.sampled_classes,
            "split": {"train": file_names(self.run.train_pairs), "val": file_names(self.run.val_pairs)},
            "epoch": epoch,
            "best_dice": self.best_dice,
            "epochs_since_best": self.epochs_since_best,
            "elapsed_seconds": self.budget.elapsed(),
            "epochs_trained": self.epochs_trained,
            "history": [asdict(row) for row in self.history],
            "rng": rng_state(),
            "speed_choices": speed_choices(self.built, self.dist.device),
            "world_size": self.dist.world_size,
            "config": self.cfg.to_dict(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state, unwrap(self.built.model))
        self.start_epoch = state["epoch"] + 1
        self.best_dice, self.epochs_since_best = state["best_dice"], state["epochs_since_best"]
        self.budget.before = state.get("elapsed_seconds", 0.0)
        self.epochs_trained = float(state.get("epochs_trained", state["epoch"]))  # older checkpoints: whole epochs
        self.history = [EpochRow.from_dict(row) for row in state["history"]]
        restore_rng(state["rng"])

    def _save_epoch(self, epoch: int, improved: bool) -> None:
        state = self._state(epoch)
        # best.pt first: a crash between the two saves then only repeats this epoch on
        # resume (from the older last.pt), instead of leaving a last.pt whose best is missing.
        if improved:
            save_checkpoint(self.out / "best.pt", state)
        save_checkpoint(self.out / "last.pt", state)
