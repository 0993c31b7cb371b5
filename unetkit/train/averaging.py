"""An exponential moving average (EMA) of the weights: after every optimizer step,
average <- decay * average + (1 - decay) * weights, BatchNorm's running statistics included.
The average is what is validated, saved as the checkpoint's model and predicted with; the weights
the optimizer moves are kept beside it (for --resume).

Why: the last steps of a run jump between nearby minima and their average sits between them. On
camvid-dev (5 minutes, decay 0.99) it raised the training streets' validation Dice 0.626 -> 0.641
but not the unseen street's mIoU (0.350 against 0.349-0.362), so it is an option, off by default
(benchmarks/NOTES.md, issue 23). The decay warms up as (1 + n) / (10 + n) after n steps (as timm's
ModelEmaV3 does), so an average of a few steps does not hold on to the random initial weights.
The averaging itself is torch's (torch.optim.swa_utils.AveragedModel).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


class WeightAverage:
    """The EMA of `model`'s parameters and buffers, with `decay` per optimizer step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0  # optimizer steps averaged so far, counted here so the rate needs no sync

        def blend(averaged: list[torch.Tensor], current: list[torch.Tensor], _: torch.Tensor) -> None:
            if averaged[0].is_floating_point():
                torch._foreach_lerp_(averaged, current, 1 - self.rate())
            else:  # BatchNorm's step counter is counted, not averaged
                torch._foreach_copy_(averaged, current)

        self.averaged = AveragedModel(model, multi_avg_fn=blend, use_buffers=True)

    def rate(self) -> float:
        """This step's decay: warmed up over the first steps (module docstring)."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @property
    def model(self) -> nn.Module:
        """The averaged network, to validate and save."""
        return self.averaged.module

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend `model`'s weights in (the first call copies them)."""
        self.averaged.update_parameters(model)
        self.updates += 1

    def restore(self, weights: dict[str, Any], updates: int) -> None:
        """Load a saved average (the checkpoint's model) after `updates` steps."""
        self.model.load_state_dict(weights)
        self.averaged.n_averaged.fill_(updates)
        self.updates = updates
