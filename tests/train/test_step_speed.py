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
    model.load_state_dict(older.state_dict())
    model(torch.ones(1, 1, 16, 16)).square().mean().backward()
    resumed.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
