"""Learning-rate schedules. All but reduce-on-plateau step once per batch, so a warmup or a
cosine decay is smooth even when an epoch is a handful of batches.

  cosine:   linear warmup, then half a cosine from the base LR down to ~0 (the default)
  onecycle: rise to the max LR over the first 30%, then anneal (Smith's one-cycle policy)
  plateau:  divide the LR by 10 when validation Dice stops improving for a few epochs
  poly:     (1 - t)^0.9, the DeepLab schedule
  step:     multiply by `gamma` every `step_size` epochs
  none:     constant
"""

from __future__ import annotations

import math

import torch

SCHEDULERS = ("cosine", "onecycle", "plateau", "poly", "step", "none")


class Schedule:
    """One object whose step_batch() runs after every optimizer step and step_epoch() after
    every validation, whichever kind of scheduler is inside."""

    def __init__(
        self,
        name: str,
        optimizer: torch.optim.Optimizer,
        steps_per_epoch: int,
        epochs: int,
        warmup_epochs: float = 1.0,
        step_size: int = 30,
        gamma: float = 0.1,
    ) -> None:
        if name not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, not {name!r}")
        self.name = name
        total = max(1, steps_per_epoch * epochs)
        warmup = min(int(warmup_epochs * steps_per_epoch), total // 2)
        self.per_batch = name != "plateau"
        if name == "cosine":

            def factor(step: int) -> float:
                if step < warmup:
                    return (step + 1) / (warmup + 1)
                progress = (step - warmup) / max(1, total - warmup)
                return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        elif name == "poly":

            def factor(step: int) -> float:
                return max(0.0, 1 - step / total) ** 0.9
        elif name == "step":

            def factor(step: int) -> float:
                return gamma ** (step // max(1, step_size * steps_per_epoch))
        else:

            def factor(step: int) -> float:
                return 1.0

        if name == "onecycle":
            max_lrs = [group["lr"] for group in optimizer.param_groups]
            self.scheduler: object = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=max_lrs, total_steps=total + 1
            )
        elif name == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.1, patience=3)
        else:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def step_batch(self) -> None:
        if self.per_batch:
            self.scheduler.step()

    def step_epoch(self, val_dice: float) -> None:
        if not self.per_batch:
            self.scheduler.step(val_dice)

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)
