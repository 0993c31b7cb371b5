"""When training stops before its last epoch, in one place: a loss that is not finite (an error,
raised before those weights reach a checkpoint), no better validation Dice for --patience
epochs, or a --time budget with too little left for another epoch. Under torchrun every rank decides
together, so none is left waiting in a collective."""

from __future__ import annotations

import math
from pathlib import Path

from unetkit.errors import UnetkitError
from unetkit.train.budget import TimeBudget
from unetkit.train.config import TrainConfig
from unetkit.train.distributed import Distributed
from unetkit.train.run_files import EpochRow


class StopRules:
    def __init__(self, cfg: TrainConfig, dist: Distributed, out: Path) -> None:
        self.cfg, self.dist, self.out = cfg, dist, out

    def check_finite(self, epoch: int, losses: dict[str, float], saved_epoch: int) -> None:
        """Stop on a NaN/inf loss. The epoch losses are already on the host here, so this costs
        no extra device sync."""
        bad = [(name, value) for name, value in losses.items() if not math.isfinite(value)]
        if not self.dist.any_rank(bool(bad)):
            return
        bad = bad or [("another rank's training", math.nan)]
        last = self.out / "last.pt"
        kept = f"{last} keeps epoch {saved_epoch} untouched" if saved_epoch else "no checkpoint was saved"
        raise UnetkitError(
            f"{bad[0][0]} loss became {bad[0][1]} in epoch {epoch}, so training stopped and {kept}; "
            "train again with a lower --lr, or with --amp off"
        )

    def reason_to_stop(
        self, epoch: int, epochs_since_best: int, budget: TimeBudget, training_seconds: float, agree: bool = True
    ) -> str | None:
        """Why no further epoch should start, or None. `training_seconds`: the last epoch's
        training, the best guess of the next one's. `agree`: the ranks' clocks differ, so all stop
        if one would; False where every rank holds the same numbers (a checkpoint's)."""
        cfg = self.cfg
        if cfg.patience is not None and epochs_since_best >= cfg.patience:
            return f"early stop: no better val Dice for {cfg.patience} epochs"
        no_room = budget.no_room(epoch, training_seconds)
        if self.dist.any_rank(no_room) if agree else no_room:
            done = f" and the {cfg.min_epochs} minimum epochs are done" if cfg.min_epochs else ""
            left = budget.left()
            spent = "is spent" if left <= 0 else f"has {left:.1f} s left, under a quarter of an epoch"
            return f"stopping: the {budget.limit:g}-second budget {spent}{done}"
        return None

    def finished(
        self, epoch: int, history: list[EpochRow], epochs_since_best: int, budget: TimeBudget
    ) -> tuple[str, str] | None:
        """Why a run resumed after `epoch` has nothing left to train (its epochs done, or the same
        stop rule holds), and the option that would give it more; or None. (A run of --time alone
        was told "a larger --epochs or --time", and --epochs was refused again: red-team finding.)"""
        if self.cfg.epochs is not None and epoch >= self.cfg.epochs:
            return f"its {self.cfg.epochs} epochs are done", "--epochs"
        seconds = max((row.seconds for row in history), default=0.0)  # a whole epoch's, not a cut one's
        # the checkpoint's numbers, the same on every rank (the budget has not started)
        reason = self.reason_to_stop(epoch, epochs_since_best, budget, seconds, agree=False)
        if reason is None:
            return None
        return reason, "--patience" if reason.startswith("early stop") else "--time"
