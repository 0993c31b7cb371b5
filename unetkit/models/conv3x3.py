"""The 3x3 convolution of every U-Net level, whose weight gradient a probe may hand to one GEMM.

The weight gradient of a 3x3 convolution is one matrix product: the output gradient's pixels (rows
of Cout) against the input's 3x3 neighbourhoods (rows of 9 Cin, "im2col"). oneDNN computes it
in a loop of its own, which on a CPU is fast where the pixels are many and the weights few, and
slow the other way round: the paper's U-Net's bottleneck (1024 -> 1024 at 16^2, batch 2, bf16 on
an AMX CPU) took 39.6 ms for the weight gradient against 6.9 as one GEMM, and in fp32 on AVX2 the
GEMM was 1.4-2.1x faster on most levels of that network when timed alone, while the shallow
layers in bf16 on AMX are 3-12x faster in oneDNN (benchmarks/NOTES.md, issue 36). Which way wins
is the CPU's and the shape's, so the first backward of each shape times both and the process
keeps the faster (for at most MAX_PROBED_SHAPES shapes: whole-image training meets a new shape
with every batch).
The forward and the input gradient stay oneDNN's; the parameters, checkpoints and outputs are an
nn.Conv2d's, the weight gradient equal to its rounding (fp32 to 1e-5, bf16 to its last bits).
A second probe, at each shape's first training forward, may hand the whole layer, forward and
backward, to Winograd's F(2x2, 3x3) instead (models/winograd.py): fewer multiplications, more
rounding, taken only where it is clearly faster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.transposed import cast_as_autocast_would, onednn_backward, tracing
from unetkit.models.winograd import WinogradConv3x3Function, winograd_fits
from unetkit.runtime.hardware import fastest_call

# The im2col matrix is written whole, so a shape is only tried where it stays this small: the
# layers where the GEMM wins are the deep ones, whose matrices are a few MiB to 75 MiB (fp32).
MAX_IM2COL_BYTES = 96 * 2**20
# A patch-trained U-Net meets ~15 shapes (one a layer, and a smaller last batch); whole images in
# batches padded to their own size meet new ones all run long, which then keep oneDNN untimed.
MAX_PROBED_SHAPES = 64

# Winograd's tiles are 4x its input and its products 4x its output: a shape whose larger would pass
# this is not tried (the levels where it wins are deep ones, a few MiB).
MAX_WINOGRAD_TILE_BYTES = 256 * 2**20

# Below 128 channels in or out Winograd lost at every level measured, 1.4-3x (64 channels at 256^2:
# 21 against 70 ms forward in bf16 on an AMD EPYC; the recipe's 16-64 channel layers likewise), so
# such a layer is not timed: whole-image training meets up to MAX_PROBED_SHAPES shapes, each a probe.
MIN_WINOGRAD_CHANNELS = 128
# Winograd rounds more than a direct convolution (models/winograd.py), so it is taken only where it
# is clearly faster: by more than the probe's spread between runs, 2-5% on a busy 2-core machine.
WINOGRAD_MARGIN = 0.95

_gemm_is_faster: dict[tuple, bool] = {}  # the probe's answer for each shape, for the process
_winograd_is_faster: dict[tuple, bool] = {}
PROBES = {"gemm_weight_gradient": "_gemm_is_faster", "winograd": "_winograd_is_faster"}  # by name: tests swap them
_probes_aside = [False]  # set by without_probes()


@contextmanager
def without_probes() -> Iterator[None]:
    """A forward that times nothing and records no choice: one that only counts what training
    keeps (train/setup.py's kept_maps), at a size training never runs."""
    _probes_aside[0] = True
    try:
        yield
    finally:
        _probes_aside[0] = False


class Conv3x3(nn.Conv2d):
    """nn.Conv2d(k=3, padding=1), the same parameters and outputs; with gradients on a CPU, its
    backward is Conv3x3Function's."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not (torch.is_grad_enabled() and x.device.type == "cpu" and self.weight.requires_grad):
            return super().forward(x)
        x, weight, bias = cast_as_autocast_would(x, self.weight, self.bias)
        if winograd_fits(x) and not tracing() and not _probes_aside[0] and winograd_is_faster(x, weight):
            return WinogradConv3x3Function.apply(x, weight, bias)
        return Conv3x3Function.apply(x, weight, bias)


class Conv3x3Function(torch.autograd.Function):
    """F.conv2d(x, weight, bias, padding=1), its weight gradient by oneDNN or one GEMM, as the
    probe found faster for the shape."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.with_bias = bias is not None
        with torch.autocast("cpu", enabled=False):
            return F.conv2d(x, weight, bias, padding=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        wants_x, wants_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        wants_bias = ctx.with_bias and ctx.needs_input_grad[2]
        grad_bias = grad.sum((0, 2, 3), dtype=torch.float32).to(grad.dtype) if wants_bias else None
        if wants_weight and gemm_is_faster(x, weight, grad, wants_x):
            grad_x = onednn_backward(x, weight, grad, True, False)[0] if wants_x else None
            return grad_x, weight_gradient_gemm(x, grad), grad_bias
        grad_x, grad_weight = onednn_backward(x, weight, grad, wants_x, wants_weight)
        return grad_x, grad_weight, grad_bias


def weight_gradient_gemm(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The 3x3 convolution's weight gradient as one GEMM: the output gradient's pixels (n, i, j)
    as rows of Cout, against the zero-padded input's 3x3 neighbourhood of each pixel as rows of
    (ky, kx, Cin); laid out (Cout, ky, kx, Cin), which is the channels_last layout of the
    (Cout, Cin, 3, 3) weights."""
    n, cin, height, width = x.shape
    grad = grad.contiguous(memory_format=torch.channels_last)  # its pixels as rows
    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # (n, h + 2, w + 2, cin)
    windows = [padded[:, ky : ky + height, kx : kx + width] for ky in range(3) for kx in range(3)]
    columns = torch.stack(windows, dim=3).view(n * height * width, 9 * cin)
    rows = grad.permute(0, 2, 3, 1).reshape(n * height * width, grad.shape[1])
    return (rows.t() @ columns).view(-1, 3, 3, cin).permute(0, 3, 1, 2)


def dense_in_channels_last(tensor: torch.Tensor) -> bool:
    """Whether `tensor` is 4-d and dense in channels_last but not in the default layout."""
    return tensor.dim() == 4 and not tensor.is_contiguous() and tensor.is_contiguous(memory_format=torch.channels_last)


def gemm_is_faster(x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor, wants_x: bool) -> bool:
    """Whether one GEMM gives this shape's weight gradient sooner than oneDNN, with the input
    gradient beside it as the backward needs it: timed at the shape's first backward (the
    fastest of two tries each, after one that picks the kernels), then kept for the process."""
    layouts = tuple(dense_in_channels_last(t) for t in (x, weight, grad))  # oneDNN's choice and the copies
    key = (tuple(x.shape), tuple(weight.shape), x.dtype, layouts, wants_x, torch.get_num_threads())
    if key not in _gemm_is_faster:
        n, cin, height, width = x.shape
        too_large = n * height * width * 9 * cin * x.element_size() > MAX_IM2COL_BYTES
        if too_large or len(_gemm_is_faster) >= MAX_PROBED_SHAPES:
            _gemm_is_faster[key] = False
        else:
            onednn = fastest_call(lambda: onednn_backward(x, weight, grad, wants_x, True), repeats=2)
            gemm = fastest_call(  # a GEMM already 3x slower at its first call is not timed further
                lambda: (
                    onednn_backward(x, weight, grad, True, False) if wants_x else None,
                    weight_gradient_gemm(x, grad),
                ),
                repeats=2,
                give_up_after=3 * onednn,
            )
            _gemm_is_faster[key] = gemm < onednn
    return _gemm_is_faster[key]


def winograd_is_faster(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether Winograd's F(2x2, 3x3) (models/winograd.py) runs this shape's forward and backward
    sooner than Conv3x3Function: timed at the shape's first training forward (the fastest of two
    tries each, after one that picks the kernels), then kept for the process."""
    wants_x = x.requires_grad
    key = (tuple(x.shape), tuple(weight.shape), x.dtype, dense_in_channels_last(x), wants_x, torch.get_num_threads())
    if key not in _winograd_is_faster:
        too_narrow = min(x.shape[1], weight.shape[0]) < MIN_WINOGRAD_CHANNELS
        widest = max(x.shape[1], weight.shape[0])  # the input's tiles, or the output's products
        too_large = 4 * x.numel() // x.shape[1] * widest * x.element_size() > MAX_WINOGRAD_TILE_BYTES
        if too_narrow or too_large or len(_winograd_is_faster) >= MAX_PROBED_SHAPES:
            _winograd_is_faster[key] = False
        else:
            direct = fastest_call(forward_backward(Conv3x3Function, x, weight, wants_x), repeats=2)
            winograd = fastest_call(
                forward_backward(WinogradConv3x3Function, x, weight, wants_x), repeats=2, give_up_after=3 * direct
            )
            _winograd_is_faster[key] = winograd < WINOGRAD_MARGIN * direct
    return _winograd_is_faster[key]


def forward_backward(
    function: type[torch.autograd.Function], x: torch.Tensor, weight: torch.Tensor, wants_x: bool
) -> Callable[[], None]:
    """A call that runs `function`'s forward and backward on copies of x and weight, as training would."""
    x, weight = x.detach().requires_grad_(wants_x), weight.detach().requires_grad_()
    noise = torch.Generator().manual_seed(0)  # not the global generator: a probe must not change a seeded run
    grad = torch.randn(x.shape[0], weight.shape[0], *x.shape[2:], dtype=x.dtype, generator=noise)
    grad = grad.contiguous(memory_format=torch.channels_last) if dense_in_channels_last(x) else grad
    inputs = (x, weight) if wants_x else (weight,)

    def call() -> None:
        # The probe runs inside the model's forward: hooks on saved tensors (non-reentrant
        # activation checkpointing counts them) must not see its tensors, only the layer's own.
        with torch.enable_grad(), torch.autocast("cpu", enabled=False), saved_as_they_are():
            torch.autograd.grad(function.apply(x, weight, None), inputs, grad)

    return call


def saved_as_they_are() -> torch.autograd.graph.saved_tensors_hooks:
    """Saved-tensor hooks that keep each tensor as it is, over any a caller has set."""
    return torch.autograd.graph.saved_tensors_hooks(lambda tensor: tensor, lambda tensor: tensor)


def probe_choices() -> dict[str, list]:
    """Both probes' answers so far, as a checkpoint keeps them (lists of plain values: a shape's
    key with its dtype by name, then the answer)."""

    def plain(key: tuple) -> list:
        return [str(part) if isinstance(part, torch.dtype) else part for part in key]

    return {name: [[*plain(key), faster] for key, faster in globals()[cache].items()] for name, cache in PROBES.items()}


def restore_probe_choices(saved: dict[str, list]) -> None:
    """Take a checkpoint's answers (probe_choices) as this process's, so a resumed run computes
    each shape it met as the run it continues did; a shape met first after it is timed as usual.
    Timed afresh, marginal layers went either way between processes (benchmarks/NOTES.md)."""

    def key(plain: list) -> tuple:
        return tuple(
            getattr(torch, part.removeprefix("torch.")) if isinstance(part, str) else tuple(part)
            if isinstance(part, list) else part
            for part in plain
        )  # fmt: skip

    for name, rows in saved.items():
        if name in PROBES:  # a probe this version no longer has is left out
            globals()[PROBES[name]].update((key(row[:-1]), bool(row[-1])) for row in rows)


def winograd_line() -> str | None:
    """The run log's line naming the convolutions this process runs as Winograd, or None."""
    chosen = sorted({(key[0][1], key[1][0], *key[0][2:]) for key, faster in _winograd_is_faster.items() if faster})
    if not chosen:
        return None
    layers = ", ".join(f"{cin}->{cout} at {h}x{w} px" for cin, cout, h, w in chosen)
    return f"3x3 convolutions as Winograd F(2x2, 3x3), timed faster on this CPU (docs/winograd.md): {layers}"
