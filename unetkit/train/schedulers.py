"""Learning-rate schedules. All but reduce-on-plateau step once per batch, so a warmup or a decay
is smooth even when an epoch is a handful of batches.

Every decaying schedule is a function of *progress*, the fraction of the run done: steps taken
over steps planned, or, with a wall-clock budget (`--time`), seconds spent over seconds allowed.
So a timed run anneals to ~0 exactly when its time is up, however fast the machine is.

  cosine:   linear warmup, then half a cosine from the base LR down to ~0 (the default); the
            same warmup multiplies poly and step (onecycle has its own rise; plateau none)
  onecycle: cosine rise from LR/25 to the LR over the first 30%, then cosine down to ~0 (Smith)
  plateau:  divide the LR by 10 on the 4th epoch in a row without a better validation Dice
            (ReduceLROnPlateau's patience 3)
  poly:     (1 - progress)^0.9, the DeepLab schedule
  step:     multiply by `gamma` every `step_size` epochs
  none:     constant
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

SCHEDULERS = ("cosine", "onecycle", "plateau", "poly", "step", "none")
ONECYCLE_RISE = 0.3


def lr_factor(
    name: str, progress: float, step: int, warmup_steps: int, steps_per_step_drop: int, gamma: float
) -> float:
    """The multiplier of the base LR for a schedule at a point of the run."""
    progress = min(1.0, max(0.0, progress))
    warmup = min(1.0, (step + 1) / (warmup_steps + 1)) if warmup_steps else 1.0
    if name == "cosine":
        return warmup * 0.5 * (1 + math.cos(math.pi * progress))
    if name == "poly":
        return warmup * (1 - progress) ** 0.9
    if name == "onecycle":
        low = 1 / 25
        if progress < ONECYCLE_RISE:
            return low + (1 - low) * 0.5 * (1 - math.cos(math.pi * progress / ONECYCLE_RISE))
        return 0.5 * (1 + math.cos(math.pi * (progress - ONECYCLE_RISE) / (1 - ONECYCLE_RISE)))
    if name == "step":
        return warmup * gamma ** (step // max(1, steps_per_step_drop))
    return warmup if name != "none" else 1.0


class Schedule:
    """One object whose step_batch() runs after every optimizer step and step_epoch() after
    every validation, whichever kind of schedule is inside.

    `time_progress`, when given, maps the step to the fraction of a timed run done; otherwise
    progress is steps taken / (steps_per_epoch * epochs)."""

    def __init__(
        self,
        name: str,
        optimizer: torch.optim.Optimizer,
        steps_per_epoch: int,
        epochs: int,
        warmup_epochs: float = 1.0,
        step_size: int = 30,
        gamma: float = 0.1,
        time_progress: Callable[[int], float] | None = None,
    ) -> None:
        if name not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, not {name!r}")
        self.name = name
        self.steps_per_epoch = steps_per_epoch
        self.per_batch = name != "plateau"
        total = max(1, steps_per_epoch * epochs)
        warmup = 0 if name in ("onecycle", "none") else int(warmup_epochs * steps_per_epoch)
        if time_progress is None:  # an epoch-counted run: warmup takes at most half of it
            warmup = min(warmup, total // 2)

        def progress(step: int) -> float:
            return time_progress(step) if time_progress is not None else step / total

        def factor(step: int) -> float:
            return lr_factor(name, progress(step), step, warmup, step_size * steps_per_epoch, gamma)

        if name == "plateau":
            self.scheduler: object = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=0.1, patience=3
            )
        else:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def step_batch(self) -> None:
        if self.per_batch:
            self.scheduler.step()

    def step_epoch(self, val_dice: float) -> None:
        if not self.per_batch and not math.isnan(val_dice):  # no validation: nothing to plateau on
            self.scheduler.step(val_dice)

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)

    def resume(self, epochs_done: float) -> None:
        """Set the optimizer's rate to this run's plan after `epochs_done` epochs, once the budget's
        clock runs. The checkpoint's optimizer holds the rate of the run that saved it, which a
        resumed run given more epochs or time has re-planned: a 2-epoch cosine run resumed with
        --epochs 4 ran its first batch at 0, the saved end of the old plan, and logged lr 0. The
        step is counted in this run's batches an epoch, not the saved run's: torchrun's processes
        share an epoch's batches, and a 2-process run resumed in one read its 13 steps an epoch
        as 25s, warmed up again and never finished its cosine (a red-team finding)."""
        if isinstance(self.scheduler, torch.optim.lr_scheduler.LambdaLR):
            # a cut epoch counts by its share of batches: a resume after 43 of 600 was put past the warmup
            self.scheduler.last_epoch = round(epochs_done * self.steps_per_epoch) - 1
            self.scheduler.step()  # to the step after those epochs: its rate by this run's plan
