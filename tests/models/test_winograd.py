"""Winograd's F(2x2, 3x3) against PyTorch's convolution: exact in fp64 (the transforms are exact
there), within a few times a direct convolution's rounding in bf16, and chosen only where it fits
and the probe found it faster."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unetkit.models import conv3x3
from unetkit.models.conv3x3 import Conv3x3, winograd_is_faster
from unetkit.models.winograd import WinogradConv3x3Function, winograd_fits


def both(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, grad: torch.Tensor, wants_x: bool = True):
    """Outputs and gradients of Winograd's and of F.conv2d, from the same inputs."""
    results = []
    for conv in (lambda *a: WinogradConv3x3Function.apply(*a), lambda x, w, b: F.conv2d(x, w, b, padding=1)):
        xs, ws = x.detach().requires_grad_(wants_x), w.detach().requires_grad_()
        bs = None if b is None else b.detach().requires_grad_()
        out = conv(xs, ws, bs)
        inputs = [t for t in (xs, ws, bs) if t is not None and t.requires_grad]
        results.append((out, torch.autograd.grad(out, inputs, grad)))
    return results


@pytest.mark.parametrize(
    ("shape", "cout", "bias", "layout"),
    [
        ((2, 3, 8, 6), 5, False, torch.channels_last),
        ((1, 4, 2, 2), 2, True, torch.contiguous_format),  # a single tile
        ((3, 2, 10, 4), 7, True, torch.channels_last),
        ((2, 6, 4, 12), 3, False, torch.contiguous_format),
    ],
)
def test_winograd_equals_the_convolution_and_its_gradients_in_fp64(shape, cout, bias, layout):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=layout)
    w = torch.randn(cout, shape[1], 3, 3, dtype=torch.float64).contiguous(memory_format=layout)
    b = torch.randn(cout, dtype=torch.float64) if bias else None
    grad = torch.randn(shape[0], cout, *shape[2:], dtype=torch.float64)
    (ours, our_grads), (theirs, their_grads) = both(x, w, b, grad)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    assert ours.is_contiguous(memory_format=layout)  # the input's layout
    for a, c in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(a, c, rtol=0, atol=1e-12)
    assert our_grads[0].is_contiguous(memory_format=layout)


def test_winograd_without_the_input_gradient_and_with_a_second_derivative():
    """The first layer wants no input gradient; create_graph takes torch's backward, which has a derivative."""
    torch.manual_seed(0)
    x, w = torch.randn(2, 3, 6, 6, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)
    grad = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    (_, ours), (_, theirs) = both(x, w, None, grad, wants_x=False)
    assert len(ours) == 1
    torch.testing.assert_close(ours[0], theirs[0], rtol=0, atol=1e-12)
    xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
    assert torch.autograd.gradgradcheck(lambda a, b: WinogradConv3x3Function.apply(a, b, None), (xs, ws))


def test_winograd_in_bf16_is_within_a_few_times_a_direct_convolutions_rounding():
    """bf16 tiles round where a direct convolution accumulates in fp32: measured 0.0067 against
    0.0017 in norm for oneDNN's bf16 convolution (AMD EPYC); the bound is 1% or 3x direct's."""
    torch.manual_seed(0)
    x = torch.randn(2, 64, 16, 16).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    w = (torch.randn(64, 64, 3, 3) / 24).to(torch.bfloat16)
    grad = torch.randn(2, 64, 16, 16).to(torch.bfloat16)
    exact, exact_grads = both(x.double(), w.double(), None, grad.double())[1]
    (ours, our_grads), (direct, direct_grads) = both(x, w, None, grad)

    def error(a: torch.Tensor, b: torch.Tensor) -> float:
        return ((a.double() - b).norm() / b.norm()).item()

    assert error(ours, exact) < max(3 * error(direct, exact), 0.01)
    for a, d, e in zip(our_grads, direct_grads, exact_grads, strict=True):
        assert error(a, e) < max(3 * error(d, e), 0.01)
        assert a.dtype == torch.bfloat16


def test_conv3x3_trains_through_winograd_where_the_probe_says_so_and_fits(monkeypatch):
    torch.manual_seed(0)
    conv = Conv3x3(3, 4).double()
    monkeypatch.setattr(conv3x3, "winograd_is_faster", lambda x, w: True)
    even, odd = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.randn(2, 3, 7, 8, dtype=torch.float64)
    assert type(conv(even.requires_grad_()).grad_fn).__name__ == "WinogradConv3x3FunctionBackward"
    assert type(conv(odd.requires_grad_()).grad_fn).__name__ == "Conv3x3FunctionBackward"  # does not tile
    with torch.no_grad():
        assert conv(even).grad_fn is None  # inference: nn.Conv2d's own
    assert not winograd_fits(torch.randn(3, 8, 8)) and winograd_fits(torch.randn(1, 1, 2, 2))
    traced = torch.jit.trace(conv, even.detach(), check_trace=False)  # a tracer records the plain path
    torch.testing.assert_close(traced(even.detach()), F.conv2d(even.detach(), conv.weight, padding=1))


def test_the_probe_times_each_shape_once_and_skips_tiles_too_large(monkeypatch):
    monkeypatch.setattr(conv3x3, "_winograd_is_faster", {})
    timed: list[int] = []
    real = conv3x3.forward_backward
    monkeypatch.setattr(conv3x3, "forward_backward", lambda *args: timed.append(1) or real(*args))
    monkeypatch.setattr(conv3x3, "MIN_WINOGRAD_CHANNELS", 8)
    x, w = torch.randn(2, 8, 8, 8), torch.randn(8, 8, 3, 3)
    assert winograd_is_faster(torch.randn(2, 4, 8, 8), torch.randn(8, 4, 3, 3)) is False and not timed  # too narrow
    answer = winograd_is_faster(x, w)
    assert isinstance(answer, bool) and len(timed) == 2
    assert winograd_is_faster(x, w) is answer and len(timed) == 2  # kept for the process
    monkeypatch.setattr(conv3x3, "MAX_WINOGRAD_TILE_BYTES", 4 * x.numel() * 4 - 1)
    assert winograd_is_faster(torch.randn(2, 8, 8, 10), w) is False and len(timed) == 2
    narrow_in = torch.randn(2, 4, 6, 8)  # its tiles fit; its 8-channel products would not
    monkeypatch.setattr(conv3x3, "MIN_WINOGRAD_CHANNELS", 4)
    monkeypatch.setattr(conv3x3, "MAX_WINOGRAD_TILE_BYTES", 4 * narrow_in.numel() * 4)
    assert winograd_is_faster(narrow_in, torch.randn(8, 4, 3, 3)) is False and len(timed) == 2


def test_a_unets_gradients_through_winograd_agree_with_the_direct_convolutions(monkeypatch):
    """One training step of a small U-Net in fp32, every 3x3 convolution by Winograd or by PyTorch."""
    from unetkit.models.unet import UNet

    torch.manual_seed(0)
    model, x = UNet(2, 3, base_channels=8, depth=2), torch.randn(2, 2, 32, 32)
    grads = []
    for faster in (True, False):
        monkeypatch.setattr(conv3x3, "winograd_is_faster", lambda x, w, faster=faster: faster)
        model.zero_grad()
        model(x).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_the_probe_leaves_the_global_random_stream_alone(monkeypatch):
    """A run seeded twice gives the same numbers whether or not a probe ran in between."""
    monkeypatch.setattr(conv3x3, "_winograd_is_faster", {})
    monkeypatch.setattr(conv3x3, "MIN_WINOGRAD_CHANNELS", 8)
    torch.manual_seed(0)
    winograd_is_faster(torch.randn(2, 8, 8, 8), torch.randn(8, 8, 3, 3))
    after_probe = torch.rand(3)
    torch.manual_seed(0)
    torch.randn(2, 8, 8, 8), torch.randn(8, 8, 3, 3)
    torch.testing.assert_close(after_probe, torch.rand(3), rtol=0, atol=0)


def test_the_run_log_names_the_layers_that_run_as_winograd(monkeypatch):
    monkeypatch.setattr(conv3x3, "_winograd_is_faster", {})
    assert conv3x3.winograd_line() is None
    conv3x3._winograd_is_faster[((2, 256, 64, 64), (256, 256, 3, 3), torch.bfloat16, True, True, 2)] = True
    conv3x3._winograd_is_faster[((2, 64, 256, 256), (64, 64, 3, 3), torch.bfloat16, True, True, 2)] = False
    assert conv3x3.winograd_line().endswith("(docs/winograd.md): 256->256 at 64x64 px")


def test_the_output_takes_in_place_ops_and_the_probe_passes_activation_checkpointing(monkeypatch):
    """The output is no view (a custom function's view refuses `+=`), and the probe's own saved
    tensors stay out of torch.utils.checkpoint's count (a mismatch failed its first step)."""
    from torch.utils.checkpoint import checkpoint

    monkeypatch.setattr(conv3x3, "_winograd_is_faster", {})
    monkeypatch.setattr(conv3x3, "MIN_WINOGRAD_CHANNELS", 4)
    torch.manual_seed(0)
    conv = Conv3x3(4, 5)
    x = torch.randn(2, 4, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    monkeypatch.setattr(conv3x3, "winograd_is_faster", lambda x, w: True)
    out = conv(x)
    out += 1  # in place on the Winograd output
    out.sum().backward()
    monkeypatch.undo()
    monkeypatch.setattr(conv3x3, "_winograd_is_faster", {})
    monkeypatch.setattr(conv3x3, "MIN_WINOGRAD_CHANNELS", 4)
    y = torch.randn(2, 4, 8, 8, requires_grad=True)
    checkpoint(conv, y, use_reentrant=False).sum().backward()  # the first step probes inside it
    assert y.grad is not None and len(conv3x3._winograd_is_faster) == 1
