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
    negative_zero = EVERY_PATTERN == -(2**15)  # -0.0: torch.relu keeps its sign, the bits' threshold writes +0
    assert torch.relu(values)[negative_zero].signbit().all() and not out[negative_zero].signbit().any()


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
    on_bits = []
    for module in ours.modules():
        if isinstance(module, ReLU):
            module.register_forward_hook(lambda _m, _i, out: on_bits.append(type(out.grad_fn).__name__))
    for net in (ours, theirs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = net(x)
        nn.functional.cross_entropy(logits.float(), target).backward()
    pairs = list(zip(ours.parameters(), theirs.parameters(), strict=True))
    assert all(torch.equal(a.grad, b.grad) for a, b in pairs) and any(a.grad.count_nonzero() for a, _ in pairs)
    assert all(torch.equal(a, b) for a, b in zip(ours.buffers(), theirs.buffers(), strict=True))
    assert on_bits == ["SignBitReLUFunctionBackward"] * 14  # every ReLU of ours ran on the bits


def test_a_second_derivative_and_forward_mode_take_torchs_relu():
    """The bits carry no graph and no tangent: create_graph differentiates torch's own
    threshold_backward, and a forward-mode tangent sends the call to torch's ReLU, so both give
    nn.ReLU's numbers (a gradient penalty, torch.func.jvp)."""
    import torch.autograd.forward_ad as forward_ad

    torch.manual_seed(0)
    start = [torch.randn(64).to(torch.bfloat16) for _ in range(3)]

    def second_derivatives(relu: nn.Module) -> tuple[torch.Tensor, ...]:
        x, w1, w2 = (t.clone().requires_grad_() for t in start)
        (gx,) = torch.autograd.grad(relu(w2 * relu(w1 * x)).sum(), x, create_graph=True)
        return torch.autograd.grad(gx.float().square().sum(), [w1, w2])

    ours, theirs = second_derivatives(ReLU()), second_derivatives(nn.ReLU(inplace=True))
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True)) and ours[1].count_nonzero() > 0

    values = torch.tensor([-1.0, 2.0, -3.0, 4.0], dtype=torch.bfloat16)
    with forward_ad.dual_level():
        for grad_mode in (torch.enable_grad, torch.no_grad):
            with grad_mode():
                dual = forward_ad.make_dual(values.clone(), torch.ones(4, dtype=torch.bfloat16))
                tangent = forward_ad.unpack_dual(ReLU()(dual * 1)).tangent
            assert tangent.tolist() == [0.0, 1.0, 0.0, 1.0]
