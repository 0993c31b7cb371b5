"""The named parts of a U-Net, as drawn in the paper's figure.

DoubleConv is one "level" (two 3x3 conv + BN + ReLU). Down halves the size with a 2x2 max-pool.
Up doubles it, either with a learned transposed convolution or with fixed bilinear interpolation
followed by a conv; that choice is the one place the two upsampling styles differ.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.conv3x3 import Conv3x3
from unetkit.models.relu import KEEPS_ABOVE, ReLU
from unetkit.models.transposed import TransposedUp, laid_out_like

Upsampling = Literal["transposed", "bilinear"]


class ConvBNReLU(nn.Sequential):
    """3x3 convolution, batch norm, ReLU. The bias is dropped because BatchNorm adds its own."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        conv = (
            Conv3x3(in_channels, out_channels)  # its weight gradient as the CPU computes it fastest
            if stride == 1
            else nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        )
        super().__init__(
            conv,
            nn.BatchNorm2d(out_channels),
            ReLU(),  # in place, and on a CPU's 16-bit maps an integer threshold (models/relu.py)
        )


class DoubleConv(nn.Sequential):
    """(3x3 conv -> BN -> ReLU) twice: the two convolutions of every U-Net level."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None) -> None:
        mid = mid_channels or out_channels
        super().__init__(ConvBNReLU(in_channels, mid), ConvBNReLU(mid, out_channels))


class Down(nn.Sequential):
    """2x2 max-pool (halves height and width), then a DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))


class Up(nn.Module):
    """Upsample x2, concatenate the skip connection from the encoder, then a DoubleConv.

    transposed: ConvTranspose2d(k=2, s=2) learns the upsampling and halves the channels itself.
    bilinear:   fixed bilinear interpolation (no parameters); the channel reduction then happens in
                the DoubleConv, which is why the bilinear U-Net halves its bottleneck (as milesial does).
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, upsampling: Upsampling) -> None:
        super().__init__()
        self.upsampling, self.skip_channels = upsampling, skip_channels
        if upsampling == "transposed":
            self.up: nn.Module = TransposedUp(in_channels, in_channels // 2)  # its backward as GEMMs
            self.conv = DoubleConv(in_channels // 2 + skip_channels, out_channels)
        elif upsampling == "bilinear":
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            merged = in_channels + skip_channels
            self.conv = DoubleConv(merged, out_channels, mid_channels=merged // 2)
        else:
            raise ValueError(f"upsampling must be 'transposed' or 'bilinear', not {upsampling!r}")

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if isinstance(self.conv[0], UpsampleSplitConvReLU):  # inference: the upsampling is in the convolution
            return self.conv[1](self.conv[0](skip, x))
        x = to_size_of(self.up(x), skip)
        if isinstance(self.conv[0], SplitConvReLU):  # inference: the concatenation is never written
            return self.conv[1](self.conv[0](skip, x))
        return self.conv(concatenate_channels(skip, x))


def concatenate_channels(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """torch.cat([first, second], dim=1), whose backward hands each input a dense gradient."""
    return ChannelConcat.apply(first, second) if torch.is_grad_enabled() else torch.cat([first, second], dim=1)


class ChannelConcat(torch.autograd.Function):
    """torch.cat along channels; its backward gives each input its share of the gradient laid out
    densely, where cat's own hands on channel slices of a channels_last gradient, strided views
    that sent the next backward to a slow path: upsample_bilinear2d's took 16.3 against 2.3 ms
    (16 channels, 256^2, batch 4, bf16), 29 against 4 ms in a step of the recipe's U-Net
    (benchmarks/NOTES.md). In the default layout a channel slice is dense already: no copy."""

    @staticmethod
    def forward(ctx, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        ctx.split, ctx.dtypes = first.shape[1], (first.dtype, second.dtype)  # autocast may promote one
        return torch.cat([first, second], dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shares = grad[:, : ctx.split], grad[:, ctx.split :]
        return tuple(laid_out_like(share, grad).to(dtype) for share, dtype in zip(shares, ctx.dtypes, strict=True))


def to_size_of(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """The upsampled `x` resized (bilinear) to `skip`'s size: only when the caller did not pad
    to a multiple of 2**depth."""
    if x.shape[-2:] == skip.shape[-2:]:
        return x
    return F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)


class OutConv(nn.Conv2d):
    """1x1 convolution from features to one logit per class."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(in_channels, num_classes, kernel_size=1)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad height and width up to a multiple, so any input size survives the pooling."""
    height, width = x.shape[-2:]
    pad_h = (-height) % multiple
    pad_w = (-width) % multiple
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x, (height, width)


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold each eval-mode BatchNorm into the convolution before it (inference only): BN is then a
    per-channel scale and shift, which the conv's weights and bias can absorb, saving one pass
    over every activation map."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if model.training:
        raise ValueError("fuse_conv_bn is for inference: call model.eval() first")
    for block in model.modules():
        if isinstance(block, ConvBNReLU) and isinstance(block[1], nn.BatchNorm2d):
            block[0] = fuse_conv_bn_eval(block[0], block[1])
            block[1] = nn.Identity()
    return model


class ConvReLU(nn.Module):
    """A folded ConvBNReLU as one oneDNN call on a CPU: the convolution with its ReLU as a post-op,
    so the ReLU does not read and write every activation map again (inference only). ReLU alone
    took 23% of a slide's time on an AMX CPU, as long as a pass over memory; fused, the recipe
    U-Net's 4 x 512^2 tiles ran in 0.167 s instead of 0.228, the logits bit-identical in bf16
    (benchmarks/NOTES.md, issue 36). `conv` stays: it is the plain convolution (conv_ceiling)."""

    def __init__(self, conv: nn.Conv2d, dtype: torch.dtype) -> None:
        super().__init__()
        self.conv = conv
        self.weight = conv.weight.detach().to(dtype)  # the dtype autocast would give the conv
        self.bias = None if conv.bias is None else conv.bias.detach().to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_convolution(x, self.weight, self.bias, self.conv, "relu")


class SplitConvReLU(nn.Module):
    """The first folded ConvBNReLU of an Up block, reading the skip connection and the upsampled
    map as two inputs (inference only): a convolution over the concatenation is the sum of one
    over each part with its slice of the weights, so oneDNN convolves the skip, then the
    upsampled map with the sum (in place, into the skip's result) and the ReLU as post-ops, and
    the concatenation is never written (the decoder's `cat` was 12% of a slide band on an AMX
    CPU; benchmarks/NOTES.md, issue 36).
    The sum rounds once more in bf16, so the logits differ in the last bits."""

    def __init__(self, conv: nn.Conv2d, skip_channels: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.conv = conv
        weight = conv.weight.detach().to(dtype)
        self.skip_weight, self.up_weight = (
            laid_out_like(part, weight) for part in weight.split([skip_channels, weight.shape[1] - skip_channels], 1)
        )
        self.bias = None if conv.bias is None else conv.bias.detach().to(dtype)

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        partial = fused_convolution(skip, self.skip_weight, None, self.conv, "none")
        return fused_convolution(up, self.up_weight, self.bias, self.conv, "relu", into=partial)


class UpsampleSplitConvReLU(SplitConvReLU):
    """SplitConvReLU of a bilinear Up block, with the 2x bilinear upsampling folded into the
    convolution of the upsampled part (inference only). Both are linear, so a 3x3 convolution of
    the upsampled map is one stride-2 transposed convolution of the coarse map (padded by
    replication, which is bilinear's clamping at the edges) with the composed 6x6 kernel; the
    upsampled map, 4x the coarse one, is never written. That is exact except on the outermost
    pixel ring, where the convolution reads its zero padding and the composition reads the ring
    the replication implies: ring_correction takes those terms out. The recipe's U-Net on 4 x
    512^2 tiles (AMX CPU, 2 threads): bf16 0.140-0.143 -> 0.124-0.128 s, fp32 on the AVX2
    stand-in 0.542 -> 0.502, native fp32 within noise; a 20,000^2 slide 53.3 -> 48.2 s
    (benchmarks/NOTES.md, issue 36)."""

    def __init__(self, conv: nn.Conv2d, skip_channels: int, dtype: torch.dtype) -> None:
        super().__init__(conv, skip_channels, dtype)
        up = conv.weight.detach()[:, skip_channels:].float()  # (out, in, 3, 3)
        spread = torch.tensor([0.25, 0.75, 0.75, 0.25])  # where a coarse pixel goes on the 2x grid
        spread = torch.outer(spread, spread)
        composed = torch.zeros(up.shape[0], up.shape[1], 6, 6)
        for dy in range(3):
            for dx in range(3):
                composed[:, :, 2 - dy : 6 - dy, 2 - dx : 6 - dx] += up[:, :, dy, dx, None, None] * spread
        # a transposed convolution's (in, out, kh, kw)
        self.composed = laid_out_like(composed.transpose(0, 1).to(dtype), self.up_weight)
        self.edges = composed_edges(up).to(dtype)
        self.corners = up[..., ::2, ::2].to(dtype)  # the kernel's corner taps, (out, in, 2, 2)

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if skip.shape[-2:] != (2 * x.shape[-2], 2 * x.shape[-1]) or min(x.shape[-2:]) < 2:  # as Up does it
            up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            return super().forward(skip, to_size_of(up, skip))
        # In the weights' dtype, outside autocast: it would run the padding in fp32 (2.2 -> 27 ms, 4 x 256^2 x 32).
        with torch.autocast(x.device.type, enabled=False):
            padded = F.pad(x.to(self.composed.dtype), (1, 1, 1, 1), mode="replicate")
            out = F.conv_transpose2d(padded, self.composed, stride=2, padding=4)
            ring_correction(out, padded, self.edges, self.corners)
        return fused_convolution(skip, self.skip_weight, self.bias, self.conv, "relu", into=out)


def composed_edges(weight: torch.Tensor) -> torch.Tensor:
    """(2, 2, 3 * in, 2 * out): for the rows (top, bottom) and the columns (left, right) of a 3x3
    kernel (out, in, 3, 3), its outer row or column composed with 2x linear upsampling: a coarse
    edge line's 3-pixel windows (in, taps) times it give the outer row's terms at the even and
    the odd positions of the upsampled line (align_corners=False: U[2i] = x[i-1] / 4 + 3 x[i] / 4,
    U[2i+1] = 3 x[i] / 4 + x[i+1] / 4)."""
    sides = []
    for lines in ((weight[:, :, 0], weight[:, :, 2]), (weight[..., 0], weight[..., 2])):
        matrices = []
        for w0, w1, w2 in (line.unbind(-1) for line in lines):  # (out, in) each
            even = torch.stack([0.75 * w0 + 0.25 * w1, 0.25 * w0 + 0.75 * (w1 + w2), 0.25 * w2], -1)
            odd = torch.stack([0.25 * w0, 0.75 * (w0 + w1) + 0.25 * w2, 0.25 * w1 + 0.75 * w2], -1)
            taps = torch.stack([even, odd])  # (2, out, in, 3) -> rows (in, tap), columns (phase, out)
            matrices.append(taps.permute(2, 3, 0, 1).reshape(3 * w0.shape[1], 2 * w0.shape[0]))
        sides.append(torch.stack(matrices))
    return torch.stack(sides)


def ring_correction(out: torch.Tensor, padded: torch.Tensor, edges: torch.Tensor, corners: torch.Tensor) -> None:
    """Take out of `out` (the composed convolution of the 2x upsampled map x, `padded` by one
    replicated pixel) what it read beyond the upsampled map's edges, where the 3x3 convolution
    reads zeros and the composition the edge rows and columns replicated: on each side, the
    kernel's outer row (or column) over the upsampled edge line, as one product per pair of sides
    (`edges`, composed_edges) on x's edge lines' windows. The columns' lines replicate their end
    pixels too, where the convolution reads a corner the rows already took: `corners` gives those
    terms back. Only the outermost ring of `out` changes. A 1-D upsampling, padding, oneDNN
    convolution and subtraction for each side, 16 small calls, took 0.65-0.8 ms a call on an AMX
    CPU, and this 0.4-0.5 ms (benchmarks/NOTES.md, issue 36, twelfth slice)."""
    n, c, h, w = padded.shape[0], padded.shape[1], padded.shape[2] - 2, padded.shape[3] - 2
    o = edges.shape[-1] // 2
    rows = padded[..., 1 : h + 1 : h - 1, :].unfold(-1, 3, 1)  # (n, c, 2 sides, w, 3 taps)
    terms = torch.bmm(rows.permute(2, 0, 3, 1, 4).reshape(2, n * w, 3 * c), edges[0])  # (2 sides, n * w, 2 * o)
    out[..., :: 2 * h - 1, :].unflatten(-1, (w, 2)).sub_(terms.view(2, n, w, 2, o).permute(1, 4, 0, 2, 3))
    columns = padded[..., :, 1 : w + 1 : w - 1].unfold(-2, 3, 1)  # (n, c, h, 2 sides, 3 taps)
    terms = torch.bmm(columns.permute(3, 0, 2, 1, 4).reshape(2, n * h, 3 * c), edges[1])
    out[..., :, :: 2 * w - 1].unflatten(-2, (h, 2)).sub_(terms.view(2, n, h, 2, o).permute(1, 4, 2, 3, 0))
    corner_pixels = padded[..., 1 : h + 1 : h - 1, 1 : w + 1 : w - 1]  # (n, c, 2, 2)
    out[..., :: 2 * h - 1, :: 2 * w - 1].add_((corners.unsqueeze(0) * corner_pixels.unsqueeze(1)).sum(2))


def fused_convolution(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    conv: nn.Conv2d,
    unary: str,
    into: torch.Tensor | None = None,
) -> torch.Tensor:
    """oneDNN's convolution of `x` with `conv`'s geometry, `weight` and `bias`, then the `unary`
    post-op (relu or none), all in one call: the call PyTorch's compiler emits. With `into`, the
    convolution is added to it and the result written over it (in place): no new activation map,
    the same values (4 x 512^2 bf16 tiles, 16 channels: 37.5 -> 26.5 ms; benchmarks/NOTES.md)."""
    x = x.to(weight.dtype)
    geometry = (conv.padding, conv.stride, conv.dilation, conv.groups)
    if into is None:
        return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, *geometry, unary, [], "")
    return torch.ops.mkldnn._convolution_pointwise_.binary(into, x, weight, bias, *geometry, "add", 1.0, unary, [], "")


class MaxPool2x2(nn.Module):
    """nn.MaxPool2d(2) as the maximum of rows then of columns (inference only): the same values,
    without the int64 index of each maximum that PyTorch's CPU max-pool writes even when no
    gradient needs it: 9.3 -> 3.8 ms of the 4 pools of 4 x 512^2 bf16 tiles on an AMX CPU, 5% of
    a tile (benchmarks/NOTES.md, issue 36).

    of_relu_maps: the input is a ConvReLU's output, whose ReLU (oneDNN's post-op) writes no number
    with its sign bit set (relu_post_op_clears_signs); a 16-bit float's bits read as an int16 are
    then ordered as its value, and the maximum is taken on them without converting each number
    to float32 and back: 3.8 -> 2.4 ms of the pools of a 768 px bf16 tile of em-membranes (AMX;
    benchmarks/NOTES.md, "Issue 36, ninth slice")."""

    def __init__(self, of_relu_maps: bool = False) -> None:
        super().__init__()
        self.of_relu_maps = of_relu_maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2]  # an odd last row or column is dropped, as there
        on_bits = self.of_relu_maps and x.dtype in KEEPS_ABOVE  # the 16-bit floats, as the ReLU's
        values = x.view(torch.int16) if on_bits else x
        rows = torch.maximum(values[..., 0::2, :], values[..., 1::2, :])
        pooled = torch.maximum(rows[..., 0::2], rows[..., 1::2])
        return pooled.view(x.dtype) if on_bits else pooled


@functools.cache
def relu_post_op_clears_signs(dtype: torch.dtype) -> bool:
    """Whether oneDNN's ReLU post-op, in `dtype`, writes +0 for negative numbers, -0.0 and NaN of
    either sign (it does in PyTorch 2.13's oneDNN on an AMX CPU): asked once a process of a
    convolution whose outputs are all of these. No where the fused call cannot run (bf16 on an
    AVX2-only CPU), as the Predictor then keeps the model unfused."""
    conv = nn.Conv2d(1, 4, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([-1.0, 1.0, -1.0, -1.0]).view(4, 1, 1, 1))
        conv.bias.zero_()
    x = torch.tensor([1.0, float("nan"), -float("nan"), -0.0]).view(1, 1, 2, 2).to(dtype)
    try:
        out = ConvReLU(conv, dtype)(x.contiguous(memory_format=torch.channels_last))
    except (RuntimeError, AttributeError, NotImplementedError):  # no such oneDNN call on this CPU or build
        return False
    return bool((out.view(torch.int16) >= 0).all()) and not bool(out.isnan().any())


def fused_for_cpu(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """`model` with BatchNorm folded (fuse_conv_bn) rebuilt in place for a CPU, computing in `dtype`:
    each ConvBNReLU as a ConvReLU, the first of each Up block as a SplitConvReLU, each Down's
    max-pool as MaxPool2x2; for a model whose layout and device are final. The caller checks that
    it runs and agrees (Predictor): the fused calls are oneDNN's, as PyTorch's compiler uses them."""
    every_relu_fused = all(folded(m) for m in model.modules() if isinstance(m, ConvBNReLU))  # so Downs read ConvReLUs
    pools_on_bits = every_relu_fused and dtype == torch.bfloat16 and relu_post_op_clears_signs(dtype)
    for block in model.modules():
        if isinstance(block, Up) and folded(block.conv[0]):
            split = UpsampleSplitConvReLU if block.upsampling == "bilinear" else SplitConvReLU
            block.conv[0] = split(block.conv[0][0], block.skip_channels, dtype)
        if isinstance(block, Down) and isinstance(block[0], nn.MaxPool2d) and block[0].kernel_size in (2, (2, 2)):
            block[0] = MaxPool2x2(of_relu_maps=pools_on_bits)  # a Down reads a DoubleConv's last ReLU
    for parent in model.modules():
        for name, child in parent.named_children():
            if folded(child):
                setattr(parent, name, ConvReLU(child[0], dtype))
    return model


def folded(module: nn.Module) -> bool:
    """Whether `module` is a ConvBNReLU whose BatchNorm is folded into its convolution (fuse_conv_bn)."""
    return isinstance(module, ConvBNReLU) and isinstance(module[1], nn.Identity)
