"""What the training step does for speed gives the same arithmetic: clipping that skips a multiply
by 1.0, and the fused AdamW kernel."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from unetkit.models.unet import UNet
from unetkit.train.epoch import clip_gradients
from unetkit.train.setup import build_optimizer, fused_kernel_exists


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])  # within the limit, about it, far over it
def test_clipping_gives_clip_grad_norms_gradients_bit_for_bit(scale):
    torch.manual_seed(0)
    model, x = UNet(1, 2, base_channels=4, depth=2), torch.randn(2, 1, 16, 16)
    theirs = copy.deepcopy(model)
    for net in (model, theirs):
        net(x).square().mean().mul(scale).backward()
    clip_gradients(list(model.parameters()), 1.0)
    nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(model.parameters(), theirs.parameters(), strict=True))


def test_adamw_is_the_fused_kernel_on_a_cpu_and_resumes_a_loop_adamws_state(tmp_path):
    """The default optimizer runs PyTorch's fused AdamW where it exists; a checkpoint written by
    the per-tensor AdamW (earlier versions) still resumes, and the next steps agree with it."""
    from types import SimpleNamespace

    cfg = SimpleNamespace(optimizer="adamw", lr=1e-3, weight_decay=1e-4)
    torch.manual_seed(0)
    model = UNet(1, 2, base_channels=4, depth=2)
    generator_params = (p for p in model.parameters())
    fused = build_optimizer(cfg, generator_params)
    assert fused.defaults["fused"] and len(fused.param_groups[0]["params"]) == len(list(model.parameters()))
    assert fused_kernel_exists([{"params": list(model.parameters())}])
    assert not fused_kernel_exists([torch.zeros(2, dtype=torch.int64)]) and not fused_kernel_exists([])

    older = copy.deepcopy(model)
    loop = torch.optim.AdamW(older.parameters(), lr=1e-3, weight_decay=1e-4)
    for net, opt in ((model, fused), (older, loop)):
        for _ in range(3):
            opt.zero_grad()
            net(torch.ones(1, 1, 16, 16)).square().mean().backward()
            opt.step()
    for a, b in zip(model.parameters(), older.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=3e-4)  # 3 steps of lr 1e-3: within a tenth of one
    resumed = build_optimizer(cfg, model.parameters())
    resumed.load_state_dict(loop.state_dict())  # the older checkpoint's optimizer
    assert resumed.param_groups[0]["fused"]  # resumed on the fused kernel, not the saved loop
    model.load_state_dict(older.state_dict())
    model(torch.ones(1, 1, 16, 16)).square().mean().backward()
    resumed.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_the_fused_adamw_hands_channels_last_weights_densely_with_the_same_arithmetic():
    """FusedAdamW gives torch's fused AdamW's weights and moments bit for bit, on channels_last
    weights (seen as the dense blocks they are in memory), default-layout ones and a gradient in
    the other layout than its weight; its state keeps each weight's layout."""
    from unetkit.train.fused_adamw import FusedAdamW

    torch.manual_seed(0)
    shapes = [(6, 5, 3, 3), (4, 3, 2, 2), (7,), (3, 3)]
    weights = [torch.randn(s).contiguous(memory_format=torch.channels_last) if len(s) == 4 else torch.randn(s)
               for s in shapes]  # fmt: skip
    weights.append(torch.randn(5, 4, 3, 3))  # a default-layout 4-d weight
    ours = [nn.Parameter(w.clone()) for w in weights]
    theirs = [nn.Parameter(w.clone()) for w in weights]
    a = FusedAdamW(ours, lr=1e-2, weight_decay=0.1)
    b = torch.optim.AdamW(theirs, lr=1e-2, weight_decay=0.1, fused=True)
    for step in range(3):
        for p, q in zip(ours, theirs, strict=True):
            grad = torch.randn(p.shape)
            if step == 1 and p.dim() == 4:  # a gradient laid out unlike its weight
                grad = grad.contiguous(memory_format=torch.contiguous_format)
            p.grad, q.grad = grad.clone(), grad.clone()
        a.step()
        b.step()
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q) and p.stride() == q.stride()
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(a.state[p][key], b.state[q][key]) and a.state[p][key].stride() == p.stride()
