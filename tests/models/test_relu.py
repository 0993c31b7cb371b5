"""The ReLU on 16-bit floats' bits gives torch.relu's numbers: every bit pattern forward, its
gradient, and a whole U-Net's gradients under bf16 autocast, bit for bit."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from unetkit.models.relu import ReLU, SignBitReLUFunction
from unetkit.models.unet import UNet

EVERY_PATTERN = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)


def same_numbers(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, NaN where the other is NaN (a zero's sign is not a value)."""
    return bool(((a == b) | (a.isnan() & b.isnan())).all())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("with_grad", [False, True])
def test_every_bit_pattern_gives_torch_relus_value(dtype, with_grad):
    values = EVERY_PATTERN.view(dtype)
    x = values.clone().requires_grad_(with_grad)
    out = ReLU()(x * 1 if with_grad else x)  # in place needs a non-leaf when it records the graph
    assert out.dtype == dtype and same_numbers(out.detach(), torch.relu(values))
    assert with_grad == (out.grad_fn is not None and "SignBitReLU" in type(out.grad_fn).__name__)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gradient_is_torch_relus_where_the_output_is_a_number(dtype):
    values = EVERY_PATTERN.view(dtype)
    values = values[~values.isnan()]  # a NaN output is the one place they may differ (see models/relu.py)
    grad = torch.randn(values.shape).to(dtype)
    ours, theirs = (values.clone().requires_grad_() for _ in range(2))
    ReLU()(ours * 1).backward(grad)
    torch.relu(theirs * 1).backward(grad)
    assert torch.equal(ours.grad, theirs.grad) and ours.grad.count_nonzero() > 0.4 * len(values)


def test_runs_in_place_and_leaves_other_dtypes_to_torch():
    x = torch.randn(4, 8, 5, 5, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    before = x.clone()
    out = ReLU()(x)
    assert out.data_ptr() == x.data_ptr() and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, torch.relu(before))
    wide = torch.randn(3, 4, dtype=torch.float32, requires_grad=True) * 1
    assert type(ReLU()(wide).grad_fn).__name__ == "ReluBackward0"  # fp32: torch's own ReLU
    with pytest.raises(RuntimeError):  # a leaf that needs its gradient is refused in place, as by nn.ReLU
        SignBitReLUFunction.apply(torch.ones(3, dtype=torch.bfloat16, requires_grad=True))


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_a_unets_bf16_training_gradients_equal_nn_relus_bit_for_bit(layout):
    torch.manual_seed(0)
    ours = UNet(1, 3, base_channels=8, depth=3).to(memory_format=layout)
    theirs = copy.deepcopy(ours)
    for parent in theirs.modules():
        for name, child in parent.named_children():
            if isinstance(child, ReLU):
                setattr(parent, name, nn.ReLU(inplace=True))
    assert sum(isinstance(m, ReLU) for m in ours.modules()) == 2 * 2 * 3 + 2  # two a level, the bottom too
    x = torch.randn(4, 1, 48, 48).to(memory_format=layout)
    target = torch.randint(0, 3, (4, 48, 48))
    for net in (ours, theirs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = net(x)
        nn.functional.cross_entropy(logits.float(), target).backward()
    pairs = list(zip(ours.parameters(), theirs.parameters(), strict=True))
    assert all(torch.equal(a.grad, b.grad) for a, b in pairs) and any(a.grad.count_nonzero() for a, _ in pairs)
    assert all(torch.equal(a, b) for a, b in zip(ours.buffers(), theirs.buffers(), strict=True))
