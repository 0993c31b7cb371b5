"""AdamW as one fused kernel over all the weights, each weight seen as the dense block it is in memory.

PyTorch's fused AdamW (one kernel for every weight, where its default on a CPU is a loop of
elementwise ops per tensor) copies a weight that is not contiguous in the default layout to a
dense one and back, and a channels_last convolution weight (Cout, Cin, kh, kw) is not: the paper
U-Net's 1024 x 1024 x 3 x 3 weight took 19.9 ms a step instead of 6.2 (AMX CPU). Its memory is the
dense (Cout, kh, kw, Cin) tensor, and AdamW is elementwise, so the kernel is handed that view of
the weight, of its gradient and of its two moments, which index the same elements in the same
order: the same arithmetic, the same state dict (benchmarks/NOTES.md, issue 36).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.optimizer import ParamsT

from unetkit.models.conv3x3 import dense_in_channels_last


class FusedAdamW(torch.optim.AdamW):
    """torch.optim.AdamW(fused=True), each channels_last weight handed to the kernel densely."""

    def __init__(self, params: ParamsT, **options: Any) -> None:
        super().__init__(params, fused=True, **options)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A checkpoint's optimizer, its moments and steps; fused whatever the checkpoint's groups
        say (a run saved by the per-tensor AdamW of earlier versions resumes on the fused kernel).
        The groups say so before loading: PyTorch places each step count by them (on the weight's
        device for the fused kernel, on the CPU for the loop)."""
        groups = [{**group, "fused": True, "foreach": None} for group in state_dict["param_groups"]]
        super().load_state_dict({**state_dict, "param_groups": groups})

    def _init_group(self, group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps):  # noqa: ANN001, ANN202
        has_complex = super()._init_group(group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps)
        for index, weight in enumerate(params):
            self._lay_out_like(weight, index, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs)
            if dense_in_channels_last(weight):
                for tensors in (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs):
                    if index < len(tensors):  # the maxima only under amsgrad
                        tensors[index] = tensors[index].permute(0, 2, 3, 1)
        return has_complex

    def _lay_out_like(self, weight: torch.Tensor, index: int, grads: list, *moments: list) -> None:
        """The gradient and the moments of `weight` (the `index`-th of the lists) laid out as the
        weight is. PyTorch's fused CPU kernel pairs elements by their place in memory, not by their
        index, so a weight whose layout differs from its moments' took another element's moments,
        silently: a channels_last run resumed in the default layout (`--channels-last auto` timing
        the other way) drifted from the per-tensor AdamW's result by 0.15 in one step. The moments
        are laid out anew in the optimizer's state, which the kernel updates in place."""
        if grads[index].stride() != weight.stride():
            grads[index] = torch.empty_like(weight).copy_(grads[index])
        state = self.state[weight]
        for key, tensors in zip(("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), moments, strict=True):
            if index < len(tensors) and tensors[index].stride() != weight.stride():
                state[key] = tensors[index] = torch.empty_like(weight).copy_(tensors[index])
