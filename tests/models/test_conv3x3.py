"""The 3x3 convolution whose weight gradient a probe may hand to one GEMM (models/conv3x3.py)."""

from __future__ import annotations

import pytest
import torch
from layer_gradients import output_and_gradients

from unetkit.models import conv3x3
from unetkit.models.conv3x3 import Conv3x3, Conv3x3Function, gemm_is_faster, weight_gradient_gemm


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_gemm_weight_gradient_is_pytorchs_reference(layout, dtype):
    """Against torch.nn.grad.conv2d_weight, an odd size, both layouts, fp32 and bf16 (to its rounding)."""
    torch.manual_seed(0)
    x = torch.randn(3, 5, 9, 7).contiguous(memory_format=layout)
    grad = torch.randn(3, 6, 9, 7).contiguous(memory_format=layout)
    expected = torch.nn.grad.conv2d_weight(x, (6, 5, 3, 3), grad, padding=1)
    got = weight_gradient_gemm(x.to(dtype), grad.to(dtype))
    assert got.shape == (6, 5, 3, 3) and got.dtype == dtype
    tolerance = {"atol": 0.1, "rtol": 0.02} if dtype == torch.bfloat16 else {"atol": 1e-4, "rtol": 1e-5}
    torch.testing.assert_close(got.float(), expected, **tolerance)


@pytest.mark.parametrize("gemm", [False, True])
@pytest.mark.parametrize("amp", [False, True])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_conv3x3_gives_the_convolutions_output_and_gradients(gemm, amp, layout, monkeypatch):
    """Conv3x3 against nn.Conv2d with the same weights, the weight gradient by either way, fp32 and
    bf16 autocast (fp32 weights get fp32 gradients), with and without a bias."""
    monkeypatch.setattr(conv3x3, "gemm_is_faster", lambda *args: gemm)
    torch.manual_seed(0)
    for bias in (False, True):
        reference = torch.nn.Conv2d(4, 6, 3, padding=1, bias=bias).to(memory_format=layout)
        ours = Conv3x3(4, 6, bias=bias).to(memory_format=layout)
        ours.load_state_dict(reference.state_dict())
        x = torch.randn(2, 4, 11, 8).contiguous(memory_format=layout)
        grad = torch.randn(2, 6, 11, 8).contiguous(memory_format=layout)
        results = [output_and_gradients(module, x, grad, amp) for module in (reference, ours)]
        tolerance = {"atol": 0.06, "rtol": 0.02} if amp else {"atol": 1e-5, "rtol": 1e-5}
        for expected, got in zip(*results, strict=True):
            assert got.dtype == expected.dtype and got.shape == expected.shape
            torch.testing.assert_close(got, expected, **tolerance)
    assert type(ours(x.requires_grad_()).grad_fn).__name__ == f"{Conv3x3Function.__name__}Backward"
    with torch.no_grad():  # inference is PyTorch's own layer
        assert ours(x).grad_fn is None and torch.equal(ours(x), reference(x))


def test_an_input_without_gradient_gets_only_the_weights(monkeypatch):
    """The first layer (the image needs no gradient) computes the weight gradient alone."""
    monkeypatch.setattr(conv3x3, "gemm_is_faster", lambda *args: True)
    ours, x = Conv3x3(3, 4), torch.randn(2, 3, 6, 6)
    ours(x).sum().backward()
    expected = torch.nn.grad.conv2d_weight(x, ours.weight.shape, torch.ones(2, 4, 6, 6), padding=1)
    torch.testing.assert_close(ours.weight.grad, expected, atol=1e-4, rtol=1e-5)


def test_the_probe_times_each_shape_once_and_skips_large_ones(monkeypatch):
    """Each shape is timed at its first backward and the answer kept; a shape whose im2col
    matrix would pass the cap is never tried."""
    monkeypatch.setattr(conv3x3, "_gemm_is_faster", {})
    timed = []
    monkeypatch.setattr(conv3x3, "fastest_call", lambda run, **_: timed.append(run) or (len(timed) % 2) * 1.0)
    x, weight, grad = torch.randn(2, 8, 5, 5), torch.randn(4, 8, 3, 3), torch.randn(2, 4, 5, 5)
    first = gemm_is_faster(x, weight, grad, True)
    assert gemm_is_faster(x, weight, grad, True) == first and len(timed) == 2  # timed once, both ways
    assert first is True  # oneDNN (timed first here, 1.0 s) lost to the GEMM (0.0 s)
    monkeypatch.setattr(conv3x3, "MAX_IM2COL_BYTES", 2 * 5 * 5 * 9 * 8 * 4 - 1)
    assert gemm_is_faster(x, weight, grad, False) is False and len(timed) == 2  # over the cap: not tried
    monkeypatch.setattr(conv3x3, "MAX_IM2COL_BYTES", 2**30)
    monkeypatch.setattr(conv3x3, "MAX_PROBED_SHAPES", len(conv3x3._gemm_is_faster))
    x = torch.randn(2, 8, 6, 6)  # a new shape once as many as the cap have been timed: oneDNN, untimed
    assert gemm_is_faster(x, weight, torch.randn(2, 4, 6, 6), True) is False and len(timed) == 2


def test_outside_autocast_the_dtypes_are_the_callers_as_in_nn_conv2d():
    """No cast outside autocast: a float64 weight with a float32 input is refused in training as
    nn.Conv2d refuses it (and as the no-gradient path does), not computed in float32."""
    ours = Conv3x3(2, 3).double()
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    for grad_enabled in (True, False):
        with torch.set_grad_enabled(grad_enabled), pytest.raises(RuntimeError):
            ours(x)
    y = Conv3x3(2, 3).double()(x.double())  # matching dtypes: float64 throughout
    assert y.dtype == torch.float64
