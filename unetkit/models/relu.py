"""ReLU on a CPU's 16-bit floats as an integer operation on their bits.

A bfloat16 or float16 number is a sign bit followed by its magnitude, so read as an int16 every
negative number is negative and every positive one positive, in the same order. ReLU is then an
integer threshold, which the CPU runs without converting each element to float32 and back:
1.44 -> 0.34 ms forward and 2.71 -> 1.27 ms backward for a 2 x 64 x 256^2 bf16 map alone, and
589 -> 564 ms a training step of the paper's U-Net (256 px, batch 2, AMX CPU; benchmarks/NOTES.md,
"Issue 36, ninth slice").

The outputs equal torch.relu's for all 65,536 bit patterns of either dtype (a test checks each),
NaN included: a NaN with its sign bit set reads as an int16 just below zero (bfloat16: -127..-1,
float16: -1023..-1), above every negative number's (-inf is -128 and -1024), so the threshold
sits there and keeps it. (-0.0 comes out +0.0: the same number.) The gradient is torch's
threshold_backward on the same bits, which passes the output gradient where the output is above
zero: equal to torch's everywhere but at a NaN output with its sign bit set, where it gives 0 and
torch the gradient. A second derivative (create_graph) takes torch's own threshold_backward, and
forward-mode AD and tracers take torch's ReLU: the bits carry no tangent and no graph.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as forward_ad
from torch import nn

from unetkit.models.transposed import tracing

# An int16 above this is a number ReLU keeps: zero or positive, or a NaN with its sign bit set.
KEEPS_ABOVE = {torch.bfloat16: -128, torch.float16: -1024}


class ReLU(nn.ReLU):
    """nn.ReLU(inplace=True); on a CPU's bfloat16 or float16 maps, an integer threshold."""

    def __init__(self) -> None:
        super().__init__(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not on_bits(x):
            return super().forward(x)
        if torch.is_grad_enabled() and x.requires_grad:
            return SignBitReLUFunction.apply(x)
        return relu_on_bits_(x)


def on_bits(x: torch.Tensor) -> bool:
    """Whether ReLU may run on `x`'s bits: a CPU 16-bit float map, no tracer, no forward-mode tangent."""
    if tracing():
        return False  # first: a tracer's proxy has no dtype to ask
    return x.device.type == "cpu" and x.dtype in KEEPS_ABOVE and forward_ad.unpack_dual(x).tangent is None


def relu_on_bits_(x: torch.Tensor) -> torch.Tensor:
    """torch.relu_(x) for a bfloat16 or float16 `x`, as an int16 threshold of its bits."""
    torch.threshold_(x.view(torch.int16), KEEPS_ABOVE[x.dtype], 0)
    return x


class SignBitReLUFunction(torch.autograd.Function):
    """relu_on_bits_ in place, with its gradient on the same bits."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        relu_on_bits_(x)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: torch's own, which has a derivative
            return torch.ops.aten.threshold_backward(grad, out, 0)
        bits = torch.ops.aten.threshold_backward(grad.view(torch.int16), out.view(torch.int16), 0)
        return bits.view(grad.dtype)
