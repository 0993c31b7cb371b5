"""A layer's output and gradients, for tests that hold a custom layer against PyTorch's own."""

from __future__ import annotations

import torch
from torch import nn


def output_and_gradients(module: nn.Module, x: torch.Tensor, grad: torch.Tensor, amp: bool) -> list[torch.Tensor]:
    """`module`'s output (as fp32) on `x` under bf16 autocast or not, then, after a backward of
    `grad`, the gradients of `x`, of the weight and of the bias (where it has one)."""
    leaf = x.clone().requires_grad_()
    with torch.autocast("cpu", torch.bfloat16, enabled=amp):
        y = module(leaf)
    y.backward(grad)
    bias = [module.bias.grad] if module.bias is not None else []
    return [y.float(), leaf.grad, module.weight.grad, *bias]
