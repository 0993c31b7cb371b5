"""The learned upsampling of a transposed U-Net's Up: a 2x2 transposed convolution of stride 2,
whose backward runs as two matrix products.

Each input pixel writes its own 2x2 block of the output and no two blocks overlap, so the layer is
one product of the pixels (rows of Cin) with the weights (Cin x 4 Cout), and so are its gradients:
the input's is the output gradient's rows times the weights, the weights' is the pixels times
those rows. With oneDNN's own backward the layer's forward and backward took 1.5-3.7x as long as
with the two products: the paper's U-Net's four Ups, batch 2 at 256 px, 84 -> 34 ms a step in bf16
on an AMX CPU, 422 -> 153 ms in fp32 on AVX2 (benchmarks/NOTES.md). The forward stays PyTorch's:
the product and the copy into 2x2 blocks were no faster.

It also holds what the models' custom autograd functions share (Conv3x3's, Winograd's, the
concatenation's): the tracer check, the autocast casts, the layout match, the direct convolution's
backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TransposedUp(nn.ConvTranspose2d):
    """ConvTranspose2d(k=2, s=2), the same parameters and outputs; on a CPU with gradients on, its
    backward is TransposedUpFunction's."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not (torch.is_grad_enabled() and x.device.type == "cpu"):
            return super().forward(x)
        return TransposedUpFunction.apply(*cast_as_autocast_would(x, self.weight, self.bias))


def tracing() -> bool:
    """Whether a tracer (jit.trace, FX, torch.compile) records this call: its proxies carry no
    values, so the custom functions and the probes that time them stand aside."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.fx._symbolic_trace.is_fx_symbolic_tracing()


def laid_out_like(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`tensor` contiguous in `like`'s memory format (channels_last or the default)."""
    layout = torch.channels_last if like.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    return tensor.contiguous(memory_format=layout)


def onednn_backward(
    x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor, wants_x: bool, wants_weight: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """PyTorch's own backward of the 3x3 convolution (oneDNN on a CPU), the gradients asked for."""
    grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad, x, weight, None, (1, 1), (1, 1), (1, 1), False, (0, 0), 1, (wants_x, wants_weight, False)
    )
    return grad_x, grad_weight


def cast_as_autocast_would(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A convolution's inputs cast as CPU autocast would cast them, for a custom autograd function
    (autocast does not look inside one): one dtype throughout, and the casts' own backward hands
    fp32 gradients to fp32 weights. Outside autocast they stay as given, as nn.Conv2d takes them."""
    if not torch.is_autocast_enabled("cpu"):
        return x, weight, bias
    dtype = torch.get_autocast_dtype("cpu")
    return x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)


class TransposedUpFunction(torch.autograd.Function):
    """F.conv_transpose2d(x, weight, bias, stride=2) for a 2x2 kernel, backward as two GEMMs."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.with_bias = bias is not None
        return F.conv_transpose2d(x, weight, bias, stride=2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        n, cin, h, w = x.shape
        cout = weight.shape[1]
        # The output gradient as rows (n, i, j) of its 2x2 blocks, (dy, dx, cout) a row: one copy,
        # whose contiguous runs in a channels_last gradient are whole (dx, cout) pairs.
        blocks = grad.permute(0, 2, 3, 1).unflatten(1, (h, 2)).unflatten(3, (w, 2)).permute(0, 1, 3, 2, 4, 5)
        rows = blocks.reshape(n * h * w, 4 * cout)
        weights = weight.permute(0, 2, 3, 1).reshape(cin, 4 * cout)  # (cin, (dy, dx, cout))
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = (rows @ weights.t()).view(n, h, w, cin).permute(0, 3, 1, 2)  # channels_last
        if ctx.needs_input_grad[1]:
            pixels = x.permute(0, 2, 3, 1).reshape(n * h * w, cin)
            grad_weight = (pixels.t() @ rows).view(cin, 2, 2, cout).permute(0, 3, 1, 2)
        if ctx.with_bias and ctx.needs_input_grad[2]:
            # a GEMM with a row of ones: 0.8 ms where the column sum took 10.0 (32768 x 256, bf16),
            # the same values to the gradient's own rounding
            ones = torch.ones(1, rows.shape[0], dtype=rows.dtype)
            grad_bias = (ones @ rows).view(4, cout).sum(0, dtype=torch.float32).to(grad.dtype)
        return grad_x, grad_weight, grad_bias
