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


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3, float("nan")])  # within the limit, about it, far over it, NaN
def test_clipping_gives_clip_grad_norms_gradients_bit_for_bit(scale):
    torch.manual_seed(0)
    model, x = UNet(1, 2, base_channels=4, depth=2), torch.randn(2, 1, 16, 16)
    theirs = copy.deepcopy(model)
    for net in (model, theirs):
        net(x).square().mean().mul(scale if scale == scale else 1.0).backward()
        if scale != scale:  # one NaN gradient element: clip_grad_norm_ turns every gradient to NaN
            next(net.parameters()).grad.view(-1)[0] = float("nan")
    clip_gradients(list(model.parameters()), 1.0)
    nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
    pairs = zip(model.parameters(), theirs.parameters(), strict=True)
    assert all(torch.equal(a.grad, b.grad) or (a.grad.isnan().all() and b.grad.isnan().all()) for a, b in pairs)
    assert scale == scale or all(p.grad.isnan().all() for p in model.parameters())


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
    # The same gradients go to both: gradients recomputed from weights that differ by rounding can
    # flip an Adam step of a near-zero gradient by a whole lr (0.0008 after 3 steps, seen on an
    # AMD EPYC with AVX-512 BF16), which says nothing about the kernel.
    grads = [[torch.randn_like(p) for p in model.parameters()] for _ in range(3)]
    for net, opt in ((model, fused), (older, loop)):
        for step_grads in grads:
            for p, g in zip(net.parameters(), step_grads, strict=True):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(model.parameters(), older.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    resumed = build_optimizer(cfg, model.parameters())
    resumed.load_state_dict(copy.deepcopy(loop.state_dict()))  # the older checkpoint's optimizer (its own tensors)
    assert resumed.param_groups[0]["fused"]  # resumed on the fused kernel, not the saved loop
    model.load_state_dict(older.state_dict())
    for net, opt in ((model, resumed), (older, loop)):  # the next step, from the same point, agrees
        opt.zero_grad()
        net(torch.ones(1, 1, 16, 16)).square().mean().backward()
        opt.step()
    for a, b in zip(model.parameters(), older.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_fused_adamw_hands_channels_last_weights_densely_with_the_same_arithmetic(monkeypatch):
    """FusedAdamW hands the kernel every weight, gradient and moment dense (torch's copies a
    channels_last one to a dense one and back), and gives torch's fused AdamW's weights and
    moments bit for bit, on channels_last and default-layout weights; its state keeps each
    weight's layout."""
    from unetkit.train.fused_adamw import FusedAdamW

    kernel, handed = torch._fused_adamw_, []

    def watched(params, grads, exp_avgs, exp_avg_sqs, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if any(p.dim() == 4 and not p.is_contiguous() for p in params):  # torch's own AdamW's call
            return kernel(params, grads, exp_avgs, exp_avg_sqs, *args, **kwargs)
        handed.extend(t.is_contiguous() for t in (*params, *grads, *exp_avgs, *exp_avg_sqs))
        return kernel(params, grads, exp_avgs, exp_avg_sqs, *args, **kwargs)

    monkeypatch.setattr(torch, "_fused_adamw_", watched)
    torch.manual_seed(0)
    shapes = [(6, 5, 3, 3), (4, 3, 2, 2), (7,), (3, 3)]
    weights = [torch.randn(s).contiguous(memory_format=torch.channels_last) if len(s) == 4 else torch.randn(s)
               for s in shapes]  # fmt: skip
    weights.append(torch.randn(5, 4, 3, 3))  # a default-layout 4-d weight
    ours = [nn.Parameter(w.clone()) for w in weights]
    theirs = [nn.Parameter(w.clone()) for w in weights]
    a = FusedAdamW(ours, lr=1e-2, weight_decay=0.1)
    b = torch.optim.AdamW(theirs, lr=1e-2, weight_decay=0.1, fused=True)
    for _ in range(3):
        for p, q in zip(ours, theirs, strict=True):
            grad = torch.randn(p.shape)
            p.grad, q.grad = torch.empty_like(p).copy_(grad), torch.empty_like(q).copy_(grad)
        a.step()
        b.step()
    assert handed and all(handed)  # every tensor reached the kernel dense: nothing for it to copy
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q) and p.stride() == q.stride()
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(a.state[p][key], b.state[q][key]) and a.state[p][key].stride() == p.stride()


@pytest.mark.parametrize("weight_layout", [torch.contiguous_format, torch.channels_last])
def test_the_fused_adamw_pairs_each_weight_with_its_own_moments_whatever_their_layouts(weight_layout):
    """A run resumed in the other layout (`--channels-last auto` may time the other way) loads
    moments laid out unlike its weights, and a gradient may come laid out unlike its weight: the
    step still equals the per-tensor AdamW's, element by element (PyTorch's fused kernel pairs them
    by place in memory: 0.15 off in one step), and the moments are kept in the weight's layout."""
    from unetkit.train.fused_adamw import FusedAdamW

    torch.manual_seed(0)
    other = torch.contiguous_format if weight_layout == torch.channels_last else torch.channels_last
    start, first, second = torch.randn(8, 5, 3, 3), torch.randn(8, 5, 3, 3), torch.randn(8, 5, 3, 3)
    saved = torch.optim.AdamW([nn.Parameter(start.clone())], lr=0.1)
    saved.param_groups[0]["params"][0].grad = first
    saved.step()
    state = saved.state_dict()
    for key in ("exp_avg", "exp_avg_sq"):
        state["state"][0][key] = state["state"][0][key].contiguous(memory_format=other)
    ours = nn.Parameter(start.clone().contiguous(memory_format=weight_layout))
    reference = nn.Parameter(start.clone())
    fused, loop = FusedAdamW([ours], lr=0.1), torch.optim.AdamW([reference], lr=0.1)
    fused.load_state_dict(copy.deepcopy(state))
    loop.load_state_dict(copy.deepcopy(state))
    ours.grad, reference.grad = second.clone().contiguous(memory_format=other), second.clone()
    fused.step()
    loop.step()
    torch.testing.assert_close(ours.detach(), reference.detach(), rtol=1e-6, atol=1e-6)
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(fused.state[ours][key], loop.state[reference][key], rtol=1e-6, atol=1e-7)
        assert fused.state[ours][key].stride() == ours.stride()
